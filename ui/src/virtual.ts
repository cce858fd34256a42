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
 * `render(i)` for rows in view (and reuses nothing: rows are cheap and this keeps it simple) and
 * re-renders on scroll in the next animation frame.
 */
export class VirtualList {
  private count = 0;
  private frame = 0;
  private last = { start: -1, end: -1 };
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
    this.last = { start: w.start, end: w.end };
    this.body.style.transform = `translateY(${w.offset}px)`;
    const frag = document.createDocumentFragment();
    for (let i = w.start; i < w.end; i++) frag.appendChild(this.render(i));
    this.body.replaceChildren(frag);
  }
}
