import { describe, expect, it } from "vitest";
import { OrderedSender } from "./ordered";

/** A send function whose calls finish only when the test says so, in any order it likes. */
function controlled() {
  const calls: { data: string; finish: (ok: boolean) => void }[] = [];
  const send = (data: string) =>
    new Promise<void>((resolve, reject) => calls.push({ data, finish: (ok) => (ok ? resolve() : reject(new Error("gone"))) }));
  return { calls, send };
}

const tick = () => new Promise((r) => setTimeout(r, 0));

describe("OrderedSender", () => {
  it("keeps one call in flight and sends what queued behind it in order, joined", async () => {
    const { calls, send } = controlled();
    const q = new OrderedSender(send, () => {});
    for (const c of "terminal") q.push(c);
    expect(calls.map((c) => c.data)).toEqual(["t"]);
    calls[0].finish(true);
    await tick();
    expect(calls.map((c) => c.data)).toEqual(["t", "erminal"]);
    q.push("\r");
    calls[1].finish(true);
    await tick();
    expect(calls.map((c) => c.data)).toEqual(["t", "erminal", "\r"]);
    calls[2].finish(true);
    await tick();
    q.push("x");
    expect(calls.map((c) => c.data).join("")).toBe("terminal\rx");
  });

  it("reports a failed call and drops what was queued behind it", async () => {
    const { calls, send } = controlled();
    const errors: unknown[] = [];
    const q = new OrderedSender(send, (e) => errors.push(e));
    q.push("a");
    q.push("b");
    calls[0].finish(false);
    await tick();
    expect(errors).toHaveLength(1);
    expect(calls.map((c) => c.data)).toEqual(["a"]);
    q.push("c");
    expect(calls.map((c) => c.data)).toEqual(["a", "c"]);
  });
});
