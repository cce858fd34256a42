/**
 * Sends chunks through an async function strictly in order, one call in flight at a time.
 *
 * Why: each Tauri `invoke` of an async command runs as its own task in the backend, so two
 * keystrokes sent as two concurrent invokes can reach the exec stream swapped ("terminal" arrived
 * as "terminla" on a loaded machine). Chunks that arrive while a call is in flight are joined and
 * sent together by the next call, which also keeps fast typing and pastes to few round trips.
 */
export class OrderedSender {
  private pending = "";
  private busy = false;

  constructor(
    private readonly send: (data: string) => Promise<unknown>,
    private readonly onError: (e: unknown) => void,
  ) {}

  push(data: string): void {
    if (!data) return;
    this.pending += data;
    if (!this.busy) void this.drain();
  }

  private async drain(): Promise<void> {
    this.busy = true;
    try {
      while (this.pending) {
        const chunk = this.pending;
        this.pending = "";
        try {
          await this.send(chunk);
        } catch (e) {
          // The session is gone or broken: what was queued behind this chunk cannot go anywhere.
          this.pending = "";
          this.onError(e);
        }
      }
    } finally {
      this.busy = false;
    }
  }
}
