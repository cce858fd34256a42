import { describe, expect, it } from "vitest";
import { ago, bytes, containerName, duration, mib, portLinks, shortId, splitReference } from "./format";

describe("format", () => {
  it("sizes", () => {
    expect(bytes(0)).toBe("0 B");
    expect(bytes(1536)).toBe("1.54 kB");
    expect(bytes(4_400_000)).toBe("4.40 MB");
    expect(bytes(123_000_000)).toBe("123 MB");
    expect(bytes(undefined)).toBe("–");
    expect(mib(1048576)).toBe("1.00 MiB");
    expect(mib(512)).toBe("512 B");
  });
  it("durations and ages", () => {
    expect(duration(45)).toBe("45s");
    expect(duration(125)).toBe("2m 5s");
    expect(duration(3700)).toBe("1h 1m");
    expect(duration(90000)).toBe("1d 1h");
    expect(duration(-3)).toBe("0s");
    const now = 1_000_000_000_000;
    expect(ago(now / 1000 - 30, now)).toBe("just now");
    expect(ago(now / 1000 - 600, now)).toBe("10 min ago");
    expect(ago(now / 1000 - 7200, now)).toBe("2 h ago");
    expect(ago(now / 1000 - 3 * 86400, now)).toBe("3 d ago");
  });
  it("ids and names", () => {
    expect(shortId("sha256:0123456789abcdef0123")).toBe("0123456789ab");
    expect(containerName(["/web"], "abc")).toBe("web");
    expect(containerName([], "0123456789abcdef")).toBe("0123456789ab");
  });
  it("port links dedupe v4/v6, link tcp only, keep exposed-only ports", () => {
    const links = portLinks([
      { IP: "0.0.0.0", PrivatePort: 80, PublicPort: 8080, Type: "tcp" },
      { IP: "::", PrivatePort: 80, PublicPort: 8080, Type: "tcp" },
      { IP: "127.0.0.1", PrivatePort: 53, PublicPort: 5353, Type: "udp" },
      { PrivatePort: 443, Type: "tcp" },
    ]);
    expect(links).toEqual([
      { label: "5353:53/udp", url: null },
      { label: "8080:80", url: "http://localhost:8080" },
      { label: "443/tcp", url: null },
    ]);
    expect(portLinks([{ IP: "127.0.0.2", PrivatePort: 80, PublicPort: 81, Type: "tcp" }])[0].url).toBe("http://127.0.0.2:81");
  });
  it("references", () => {
    expect(splitReference("127.0.0.1:5000/web:latest")).toEqual({ repo: "127.0.0.1:5000/web", tag: "latest" });
    expect(splitReference("127.0.0.1:5000/web")).toEqual({ repo: "127.0.0.1:5000/web", tag: "latest" });
    expect(splitReference("busybox@sha256:ab")).toEqual({ repo: "busybox", tag: "sha256:ab" });
  });
});
