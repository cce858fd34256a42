// `POST /images/create` progress messages -> per-layer progress state (unit-tested).

export interface PullMessage {
  id?: string;
  status?: string;
  progress?: string;
  progressDetail?: { current?: number; total?: number };
  error?: string;
  errorDetail?: { message?: string };
}

export interface LayerProgress {
  id: string;
  status: string;
  current: number;
  total: number;
  done: boolean;
}

export class PullState {
  readonly layers = new Map<string, LayerProgress>();
  /** Lines without a layer id ("Pulling from ...", "Digest: ...", "Status: ..."). */
  readonly messages: string[] = [];
  error: string | null = null;

  apply(m: PullMessage) {
    if (m.error || m.errorDetail?.message) {
      this.error = m.errorDetail?.message ?? m.error ?? "pull failed";
      return;
    }
    const status = m.status ?? "";
    // Layer lines carry a short (12-hex) id; the first line's id is the tag being pulled.
    if (m.id && /^[0-9a-f]{12}$/.test(m.id)) {
      const l = this.layers.get(m.id) ?? { id: m.id, status: "", current: 0, total: 0, done: false };
      l.status = status;
      if (m.progressDetail?.total) {
        l.total = m.progressDetail.total;
        l.current = m.progressDetail.current ?? 0;
      }
      if (/^(Pull complete|Already exists|Download complete)$/.test(status)) {
        if (status !== "Download complete") l.done = true;
        if (l.total) l.current = l.total;
      }
      this.layers.set(m.id, l);
    } else if (status) {
      this.messages.push(m.id ? `${m.id}: ${status}` : status);
    }
  }

  /** 0..1 for a layer (1 when complete even if the size was never reported). */
  static fraction(l: LayerProgress): number {
    if (l.done) return 1;
    if (!l.total) return 0;
    return Math.min(1, l.current / l.total);
  }

  finished(): boolean {
    return this.messages.some((m) => m.startsWith("Status: "));
  }
}
