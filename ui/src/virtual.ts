// Windowing for long lists: only the rows in view (plus an overscan) exist in the DOM, so the
// containers list stays smooth with hundreds of rows.

export interface Window {
  /** First row index rendered. */
  start: number;
  /** One past the last row index rendered. */
  end: number;
  /** Offset in px of the first rendered row. */
  offset: number;
  /** Total scroll height in px. */
  total: number;
}

export function visibleWindow(scrollTop: number, viewport: number, rowHeight: number, count: number, overscan = 6): Window {
  const total = count * rowHeight;
  const first = Math.floor(Math.max(0, scrollTop) / rowHeight);
  const start = Math.max(0, first - overscan);
  const end = Math.min(count, Math.ceil((Math.max(0, scrollTop) + viewport) / rowHeight) + overscan);
  return { start: Math.min(start, end), end, offset: Math.min(start, end) * rowHeight, total };
}

/**
 * A virtualized list in a scroll container: call `setRows(n)` when the data changes; it calls
 * `render(i)` for rows in view and re-renders on scroll in the next animation frame. Rows that
 * stay in view while scrolling are kept, so a scroll step builds only the rows that came into
 * view: rebuilding the whole window each frame made the web process's heap grow by ~25 MiB over
 * one scroll through 500 rows (measured by src-tauri/bench/run).
 */
export class VirtualList {
  private count = 0;
  private frame = 0;
  private last = { start: -1, end: -1 };
  /** The rendered rows, first to last: indices last.start .. last.end-1. */
  private rows: HTMLElement[] = [];
  readonly spacer: HTMLDivElement;
  readonly body: HTMLDivElement;

  constructor(
    readonly scroller: HTMLElement,
    readonly rowHeight: number,
    private render: (index: number) => HTMLElement,
  ) {
    this.spacer = document.createElement("div");
    this.spacer.className = "vl-spacer";
    this.body = document.createElement("div");
    this.body.className = "vl-body";
    this.spacer.appendChild(this.body);
    scroller.appendChild(this.spacer);
    scroller.addEventListener("scroll", () => this.schedule(), { passive: true });
    if (typeof ResizeObserver !== "undefined") new ResizeObserver(() => this.schedule()).observe(scroller);
  }

  setRows(count: number) {
    this.count = count;
    this.last = { start: -1, end: -1 };
    this.draw();
  }

  /** Redraw the rows in view (e.g. after the data of visible rows changed). */
  refresh() {
    this.last = { start: -1, end: -1 };
    this.draw();
  }

  renderedCount(): number {
    return this.body.childElementCount;
  }

  private schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.draw();
    });
  }

  private draw() {
    const viewport = this.scroller.clientHeight || 600;
    const w = visibleWindow(this.scroller.scrollTop, viewport, this.rowHeight, this.count);
    this.spacer.style.height = `${w.total}px`;
    if (w.start === this.last.start && w.end === this.last.end) return;
    const old = this.last;
    this.last = { start: w.start, end: w.end };
    this.body.style.transform = `translateY(${w.offset}px)`;
    // Rows of the old window that are still in view (none after setRows/refresh: last is -1).
    const keepFrom = Math.max(old.start, w.start);
    const keepTo = Math.min(old.end, w.end);
    if (old.start < 0 || keepFrom >= keepTo) {
      const frag = document.createDocumentFragment();
      this.rows = [];
      for (let i = w.start; i < w.end; i++) this.rows.push(frag.appendChild(this.render(i)));
      this.body.replaceChildren(frag);
      return;
    }
    const kept = this.rows.slice(keepFrom - old.start, keepTo - old.start);
    for (const el of this.rows.slice(0, keepFrom - old.start)) el.remove();
    for (const el of this.rows.slice(keepTo - old.start)) el.remove();
    const before: HTMLElement[] = [];
    for (let i = w.start; i < keepFrom; i++) before.push(this.render(i));
    const after: HTMLElement[] = [];
    for (let i = keepTo; i < w.end; i++) after.push(this.render(i));
    this.body.prepend(...before);
    this.body.append(...after);
    this.rows = [...before, ...kept, ...after];
  }
}
