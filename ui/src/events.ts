// One subscription to berthd's /events (forwarded by the Rust side); screens register interest
// by event type and get one coalesced callback per burst, so a `docker run` (create, attach,
// start...) re-reads a list once, not five times. No polling anywhere.

import { onEngineEvent, onEngineLink, type EngineEvent } from "./api";

type Handler = (events: EngineEvent[]) => void;

export class EventHub {
  private handlers = new Map<string, Set<Handler>>();
  private pending = new Map<string, EngineEvent[]>();
  private timer: ReturnType<typeof setTimeout> | null = null;
  linkHandlers = new Set<(up: boolean, error?: string) => void>();

  constructor(private delayMs = 80) {}

  async start() {
    await onEngineEvent((e) => this.dispatch(e));
    await onEngineLink((s) => this.linkHandlers.forEach((f) => f(s.up, s.error)));
  }

  /** Subscribe to events of `type` ("container", "image", "volume", "network"); returns an unsubscribe. */
  on(type: string, f: Handler): () => void {
    let set = this.handlers.get(type);
    if (!set) this.handlers.set(type, (set = new Set()));
    set.add(f);
    return () => set!.delete(f);
  }

  dispatch(e: EngineEvent) {
    const t = e.Type ?? "";
    if (!this.handlers.has(t)) return;
    const list = this.pending.get(t) ?? [];
    list.push(e);
    this.pending.set(t, list);
    if (!this.timer) this.timer = setTimeout(() => this.flush(), this.delayMs);
  }

  flush() {
    this.timer = null;
    const batches = [...this.pending.entries()];
    this.pending.clear();
    for (const [t, evs] of batches) this.handlers.get(t)?.forEach((f) => f(evs));
  }
}

export const hub = new EventHub();
