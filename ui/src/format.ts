// Pure formatting helpers shared by the screens (unit-tested in format.test.ts).

/** Docker's port entry as /containers/json returns it. */
export interface PortEntry {
  IP?: string;
  PrivatePort: number;
  PublicPort?: number;
  Type: string;
}

/** 1536 -> "1.5 kB" (decimal units, as the docker CLI prints sizes). */
export function bytes(n: number | undefined | null): string {
  if (n == null || !isFinite(n) || n < 0) return "–";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  let v = n;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return i === 0 ? `${v} B` : `${v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0)} ${units[i]}`;
}

/** Binary units for memory (what `docker stats` shows): 1048576 -> "1.00 MiB". */
export function mib(n: number | undefined | null): string {
  if (n == null || !isFinite(n) || n < 0) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(2)} ${units[i]}`;
}

/** A duration in seconds as a short uptime: 45 -> "45s", 3700 -> "1h 1m", 90000 -> "1d 1h". */
export function duration(secs: number): string {
  if (!isFinite(secs) || secs < 0) secs = 0;
  secs = Math.floor(secs);
  const d = Math.floor(secs / 86400);
  const h = Math.floor((secs % 86400) / 3600);
  const m = Math.floor((secs % 3600) / 60);
  const s = secs % 60;
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${m}m`;
  if (m > 0) return `${m}m ${s}s`;
  return `${s}s`;
}

/** "3 min ago"-style age of a unix timestamp (seconds) relative to `now` (ms). */
export function ago(unixSecs: number | undefined, now = Date.now()): string {
  if (!unixSecs) return "–";
  const s = Math.max(0, now / 1000 - unixSecs);
  if (s < 60) return "just now";
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

/** First 12 hex digits of an ID, without "sha256:". */
export function shortId(id: string | undefined): string {
  return (id ?? "").replace(/^sha256:/, "").slice(0, 12);
}

/** A container's display name ("/web" -> "web"). */
export function containerName(names: string[] | undefined, id: string): string {
  const n = names?.[0];
  return n ? n.replace(/^\//, "") : shortId(id);
}

/** Browser links for published ports (deduplicated across IPv4/IPv6 bindings), sorted. */
export function portLinks(ports: PortEntry[] | undefined): { label: string; url: string | null }[] {
  const seen = new Set<string>();
  const out: { label: string; url: string | null; key: number }[] = [];
  for (const p of ports ?? []) {
    if (p.PublicPort) {
      const key = `${p.PublicPort}/${p.PrivatePort}/${p.Type}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const host = !p.IP || p.IP === "0.0.0.0" || p.IP === "::" ? "localhost" : p.IP.includes(":") ? `[${p.IP}]` : p.IP;
      out.push({
        label: `${p.PublicPort}:${p.PrivatePort}${p.Type === "tcp" ? "" : "/" + p.Type}`,
        url: p.Type === "tcp" ? `http://${host}:${p.PublicPort}` : null,
        key: p.PublicPort,
      });
    } else {
      const key = `-/${p.PrivatePort}/${p.Type}`;
      if (seen.has(key)) continue;
      seen.add(key);
      out.push({ label: `${p.PrivatePort}/${p.Type}`, url: null, key: 100000 + p.PrivatePort });
    }
  }
  return out.sort((a, b) => a.key - b.key).map(({ label, url }) => ({ label, url }));
}

/** "127.0.0.1:5000/web:latest" -> {repo: "127.0.0.1:5000/web", tag: "latest"}; digests kept whole. */
export function splitReference(ref: string): { repo: string; tag: string } {
  const at = ref.indexOf("@");
  if (at >= 0) return { repo: ref.slice(0, at), tag: ref.slice(at + 1) };
  const slash = ref.lastIndexOf("/");
  const colon = ref.lastIndexOf(":");
  if (colon > slash) return { repo: ref.slice(0, colon), tag: ref.slice(colon + 1) };
  return { repo: ref, tag: "latest" };
}
