// The containers list's search box and state filter (unit-tested).

export interface ContainerSummary {
  Id: string;
  Names?: string[];
  Image?: string;
  ImageID?: string;
  Command?: string;
  Created?: number;
  State?: string;
  Status?: string;
  Ports?: import("./format").PortEntry[];
  Labels?: Record<string, string>;
  /** Added by the app from inspect: when the running container started (RFC 3339). */
  StartedAt?: string;
}

export type StateFilter = "all" | "running" | "stopped" | "paused";

export function matchesState(c: ContainerSummary, f: StateFilter): boolean {
  switch (f) {
    case "all":
      return true;
    case "running":
      return c.State === "running" || c.State === "restarting";
    case "paused":
      return c.State === "paused";
    case "stopped":
      return c.State === "exited" || c.State === "created" || c.State === "dead";
  }
}

/** Search across name, image, id prefix and published port numbers. */
export function matchesSearch(c: ContainerSummary, q: string): boolean {
  const s = q.trim().toLowerCase();
  if (!s) return true;
  const names = (c.Names ?? []).map((n) => n.replace(/^\//, "").toLowerCase());
  if (names.some((n) => n.includes(s))) return true;
  if ((c.Image ?? "").toLowerCase().includes(s)) return true;
  if (c.Id.startsWith(s)) return true;
  return (c.Ports ?? []).some((p) => String(p.PublicPort ?? "") === s || String(p.PrivatePort) === s);
}

/** Filtered and sorted (running first, then by name) for display. */
export function visibleContainers(list: ContainerSummary[], q: string, f: StateFilter): ContainerSummary[] {
  const rank = (c: ContainerSummary) => (c.State === "running" ? 0 : c.State === "paused" ? 1 : 2);
  const name = (c: ContainerSummary) => (c.Names?.[0] ?? c.Id).replace(/^\//, "");
  return list
    .filter((c) => matchesState(c, f) && matchesSearch(c, q))
    .sort((a, b) => rank(a) - rank(b) || name(a).localeCompare(name(b)));
}
