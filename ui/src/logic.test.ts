import { describe, expect, it } from "vitest";
import { visibleContainers, matchesSearch, type ContainerSummary } from "./filter";
import { filterLines, shortTime, splitTimestamp } from "./logs";
import { PullState } from "./pull";
import { cpuPercent, memoryUsage, Series } from "./stats";
import { visibleWindow } from "./virtual";

describe("virtual window", () => {
  it("renders only rows in view plus overscan", () => {
    expect(visibleWindow(0, 440, 44, 500, 6)).toEqual({ start: 0, end: 16, offset: 0, total: 22000 });
    const w = visibleWindow(4400, 440, 44, 500, 6);
    expect(w.start).toBe(94);
    expect(w.end).toBe(116);
    expect(w.offset).toBe(94 * 44);
    expect(visibleWindow(21900, 440, 44, 500, 6).end).toBe(500);
    expect(visibleWindow(0, 440, 44, 0)).toEqual({ start: 0, end: 0, offset: 0, total: 0 });
    expect(visibleWindow(-50, 100, 10, 5, 0)).toEqual({ start: 0, end: 5, offset: 0, total: 50 });
  });
});

describe("container filter", () => {
  const cs: ContainerSummary[] = [
    { Id: "aaa111", Names: ["/zeta"], Image: "web", State: "exited" },
    { Id: "bbb222", Names: ["/alpha"], Image: "busybox", State: "running", Ports: [{ PrivatePort: 80, PublicPort: 8080, Type: "tcp" }] },
    { Id: "ccc333", Names: ["/beta"], Image: "web", State: "paused" },
  ];
  it("sorts running first and filters by state and search", () => {
    expect(visibleContainers(cs, "", "all").map((c) => c.Id)).toEqual(["bbb222", "ccc333", "aaa111"]);
    expect(visibleContainers(cs, "", "stopped").map((c) => c.Id)).toEqual(["aaa111"]);
    expect(visibleContainers(cs, "web", "all").map((c) => c.Id)).toEqual(["ccc333", "aaa111"]);
    expect(visibleContainers(cs, "ALPHA", "running").map((c) => c.Id)).toEqual(["bbb222"]);
    expect(matchesSearch(cs[1], "8080")).toBe(true);
    expect(matchesSearch(cs[0], "ccc")).toBe(false);
    expect(matchesSearch(cs[2], "ccc")).toBe(true);
  });
});

describe("logs", () => {
  it("splits engine timestamps", () => {
    expect(splitTimestamp("2024-05-01T10:00:00.123456789Z hello world")).toEqual({ ts: "2024-05-01T10:00:00.123456789Z", text: "hello world" });
    expect(splitTimestamp("no stamp")).toEqual({ ts: "", text: "no stamp" });
    expect(shortTime("2024-05-01T10:00:00.123456789Z")).toBe("10:00:00.123");
    const lines = [{ stream: "stdout" as const, ts: "", text: "GET /index.html" }, { stream: "stderr" as const, ts: "", text: "boom" }];
    expect(filterLines(lines, "index")).toHaveLength(1);
    expect(filterLines(lines, " ")).toHaveLength(2);
  });
});

describe("pull progress", () => {
  it("tracks layers to completion and keeps status lines", () => {
    const s = new PullState();
    s.apply({ status: "Pulling from web", id: "latest" });
    s.apply({ status: "Pulling fs layer", id: "0123456789ab" });
    s.apply({ status: "Downloading", id: "0123456789ab", progressDetail: { current: 50, total: 200 } });
    expect(PullState.fraction(s.layers.get("0123456789ab")!)).toBe(0.25);
    s.apply({ status: "Already exists", id: "ba9876543210" });
    s.apply({ status: "Pull complete", id: "0123456789ab" });
    s.apply({ status: "Status: Downloaded newer image for web:latest" });
    expect([...s.layers.values()].every((l) => l.done)).toBe(true);
    expect(PullState.fraction(s.layers.get("0123456789ab")!)).toBe(1);
    expect(s.finished()).toBe(true);
    expect(s.messages[0]).toBe("latest: Pulling from web");
    const f = new PullState();
    f.apply({ error: "x", errorDetail: { message: "manifest unknown" } });
    expect(f.error).toBe("manifest unknown");
  });
});

describe("stats", () => {
  it("computes CPU % and memory like the docker CLI", () => {
    const s = {
      cpu_stats: { cpu_usage: { total_usage: 300 }, system_cpu_usage: 2000, online_cpus: 2 },
      precpu_stats: { cpu_usage: { total_usage: 100 }, system_cpu_usage: 1000 },
      memory_stats: { usage: 10_000, limit: 100_000, stats: { total_inactive_file: 2_000 } },
    };
    expect(cpuPercent(s)).toBeCloseTo(40);
    expect(memoryUsage(s)).toEqual({ used: 8_000, limit: 100_000 });
    expect(cpuPercent({})).toBe(0);
    expect(memoryUsage({ memory_stats: { usage: 5, stats: { inactive_file: 9 } } }).used).toBe(5);
    const r = new Series(3);
    [1, 5, 2, 3].forEach((v) => r.push(v));
    expect(r.values).toEqual([5, 2, 3]);
    expect(r.max()).toBe(5);
  });
});
