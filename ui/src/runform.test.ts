import { describe, expect, it } from "vitest";
import { createBody, FormError, parsePort, splitCommand, type RunForm } from "./runform";

const base: RunForm = { image: "127.0.0.1:5000/web:latest", name: "", ports: "", env: "", volumes: "", command: "", restart: "no" };

describe("run form", () => {
  it("minimal form gives the image and Docker's empty defaults", () => {
    const b = createBody(base) as any;
    expect(b.Image).toBe("127.0.0.1:5000/web:latest");
    expect(b.Cmd).toBeUndefined();
    expect(b.Env).toEqual([]);
    expect(b.HostConfig.RestartPolicy).toEqual({ Name: "", MaximumRetryCount: 0 });
  });
  it("ports, env, volumes, command, restart", () => {
    const b = createBody({
      ...base,
      name: "web-1",
      ports: "8080:80\n127.0.0.1:5353:53/udp, 9000",
      env: "A=1\nB=two words\n",
      volumes: "/srv/data:/data:ro\ncache:/cache",
      command: `sh -c 'echo "hi there"; sleep 1' x\\ y`,
      restart: "unless-stopped",
    }) as any;
    expect(b.ExposedPorts).toEqual({ "80/tcp": {}, "53/udp": {}, "9000/tcp": {} });
    expect(b.HostConfig.PortBindings).toEqual({ "80/tcp": [{ HostIp: "", HostPort: "8080" }], "53/udp": [{ HostIp: "127.0.0.1", HostPort: "5353" }] });
    expect(b.Env).toEqual(["A=1", "B=two words"]);
    expect(b.HostConfig.Binds).toEqual(["/srv/data:/data:ro", "cache:/cache"]);
    expect(b.Cmd).toEqual(["sh", "-c", 'echo "hi there"; sleep 1', "x y"]);
    expect(b.HostConfig.RestartPolicy.Name).toBe("unless-stopped");
  });
  it("bad input is refused with a readable message", () => {
    expect(() => createBody({ ...base, image: " " })).toThrow(FormError);
    expect(() => createBody({ ...base, name: "bad name" })).toThrow(/name may contain/);
    expect(() => createBody({ ...base, ports: "99999:80" })).toThrow(/host port must be 1-65535/);
    expect(() => createBody({ ...base, ports: "80/icmp" })).toThrow(/protocol/);
    expect(() => createBody({ ...base, ports: "1:2:3:4" })).toThrow(/use \[ip:\]/);
    expect(() => createBody({ ...base, volumes: "/a" })).toThrow(/source:\/container\/path/);
    expect(() => createBody({ ...base, volumes: "/a:/b:xx" })).toThrow(/mode/);
    expect(() => createBody({ ...base, env: "=x" })).toThrow(/no name/);
    expect(() => createBody({ ...base, command: "echo 'open" })).toThrow(/unterminated/);
  });
  it("parsePort and splitCommand edge cases", () => {
    expect(parsePort("80")).toEqual({ hostIp: "", hostPort: "", containerPort: "80", proto: "tcp" });
    expect(splitCommand("  a   b  ")).toEqual(["a", "b"]);
    expect(splitCommand("a '' b")).toEqual(["a", "", "b"]);
  });
});
