// The Run form's fields -> a Docker `POST /containers/create` body (unit-tested).

export interface RunForm {
  image: string;
  name: string;
  /** One mapping per line or comma: "8080:80", "127.0.0.1:8080:80/tcp", "80" (expose only). */
  ports: string;
  /** "KEY=value" per line. */
  env: string;
  /** "/host/path:/in/container[:ro]" or "volname:/data" per line. */
  volumes: string;
  /** A command line, split like a shell would for simple quoting. */
  command: string;
  restart: "no" | "always" | "unless-stopped" | "on-failure";
}

export class FormError extends Error {}

function items(s: string): string[] {
  return s
    .split(/[\n,]/)
    .map((x) => x.trim())
    .filter((x) => x.length > 0);
}

/** Split a command line on whitespace, honouring '...' and "..." quoting and backslashes. */
export function splitCommand(s: string): string[] {
  const out: string[] = [];
  let cur = "";
  let has = false;
  let quote: string | null = null;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (quote) {
      if (c === quote) quote = null;
      else if (c === "\\" && quote === '"' && i + 1 < s.length) cur += s[++i];
      else cur += c;
    } else if (c === "'" || c === '"') {
      quote = c;
      has = true;
    } else if (c === "\\" && i + 1 < s.length) {
      cur += s[++i];
      has = true;
    } else if (/\s/.test(c)) {
      if (has || cur) out.push(cur);
      cur = "";
      has = false;
    } else {
      cur += c;
    }
  }
  if (quote) throw new FormError(`unterminated ${quote} in command`);
  if (has || cur) out.push(cur);
  return out;
}

export interface PortSpec {
  hostIp: string;
  hostPort: string;
  containerPort: string;
  proto: string;
}

/** "8080:80", "127.0.0.1:8080:80/udp", "80" -> a port spec (Docker's -p syntax). */
export function parsePort(spec: string): PortSpec {
  let proto = "tcp";
  let s = spec;
  const slash = s.lastIndexOf("/");
  if (slash >= 0) {
    proto = s.slice(slash + 1).toLowerCase();
    s = s.slice(0, slash);
    if (!["tcp", "udp", "sctp"].includes(proto)) throw new FormError(`port ${spec}: protocol must be tcp, udp or sctp`);
  }
  const parts = s.split(":");
  let hostIp = "";
  let hostPort = "";
  let containerPort: string;
  if (parts.length === 1) containerPort = parts[0];
  else if (parts.length === 2) [hostPort, containerPort] = parts;
  else if (parts.length === 3) [hostIp, hostPort, containerPort] = parts;
  else throw new FormError(`port ${spec}: use [ip:]hostPort:containerPort[/proto]`);
  const num = (v: string, what: string) => {
    if (!/^\d+$/.test(v) || +v < 1 || +v > 65535) throw new FormError(`port ${spec}: ${what} must be 1-65535`);
  };
  num(containerPort, "container port");
  if (hostPort !== "") num(hostPort, "host port");
  return { hostIp, hostPort, containerPort, proto };
}

/** The create body (Docker API 1.41+ shape) for a form; throws FormError on bad input. */
export function createBody(f: RunForm): Record<string, unknown> {
  const image = f.image.trim();
  if (!image) throw new FormError("image is required");
  const name = f.name.trim();
  if (name && !/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(name)) {
    throw new FormError("name may contain only letters, digits, '_', '.' and '-', and must not start with a symbol");
  }
  const exposed: Record<string, object> = {};
  const bindings: Record<string, { HostIp: string; HostPort: string }[]> = {};
  for (const p of items(f.ports)) {
    const spec = parsePort(p);
    const key = `${spec.containerPort}/${spec.proto}`;
    exposed[key] = {};
    if (spec.hostPort !== "" || spec.hostIp !== "") {
      (bindings[key] ??= []).push({ HostIp: spec.hostIp, HostPort: spec.hostPort });
    }
  }
  const env = f.env
    .split("\n")
    .map((x) => x.trim())
    .filter((x) => x.length > 0);
  for (const e of env) {
    if (e.startsWith("=")) throw new FormError(`environment entry "${e}" has no name`);
  }
  const binds: string[] = [];
  for (const v of items(f.volumes)) {
    const parts = v.split(":");
    if (parts.length < 2 || parts.length > 3 || !parts[0] || !parts[1].startsWith("/")) {
      throw new FormError(`volume ${v}: use source:/container/path[:ro]`);
    }
    if (parts.length === 3 && !/^(ro|rw)(,.*)?$|^(z|Z)$/.test(parts[2])) throw new FormError(`volume ${v}: mode must be ro or rw`);
    binds.push(v);
  }
  const cmd = f.command.trim() ? splitCommand(f.command) : undefined;
  const body: Record<string, unknown> = {
    Image: image,
    Env: env,
    ExposedPorts: exposed,
    HostConfig: {
      PortBindings: bindings,
      Binds: binds,
      RestartPolicy: { Name: f.restart === "no" ? "" : f.restart, MaximumRetryCount: 0 },
    },
  };
  if (cmd && cmd.length) body.Cmd = cmd;
  return body;
}
