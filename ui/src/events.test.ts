import { describe, expect, it, vi } from "vitest";
import { EventHub } from "./events";

describe("event hub", () => {
  it("coalesces a burst into one call per type and ignores unwatched types", () => {
    vi.useFakeTimers();
    const hub = new EventHub(50);
    const seen: number[] = [];
    hub.on("container", (evs) => seen.push(evs.length));
    hub.dispatch({ Type: "container", Action: "create" });
    hub.dispatch({ Type: "container", Action: "start" });
    hub.dispatch({ Type: "image", Action: "pull" });
    expect(seen).toEqual([]);
    vi.advanceTimersByTime(60);
    expect(seen).toEqual([2]);
    hub.dispatch({ Type: "container", Action: "die" });
    vi.advanceTimersByTime(60);
    expect(seen).toEqual([2, 1]);
    vi.useRealTimers();
  });
});
