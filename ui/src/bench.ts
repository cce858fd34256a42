// Bench mode (BERTH_BENCH_OUT set, see src-tauri/bench/run): report when the containers list is first
// interactive, then scroll it frame by frame and report frame times and how many rows exist.

import { api } from "./api";
import type { ContainersScreen } from "./screens/containers";

/**
 * `scriptMs` is performance.now() when main.ts ran. The "interactive" mark carries the page's
 * phases as wall-clock times (performance.timeOrigin is when the navigation started), so the
 * bench can tell process and WebView start-up from script, data and paint time.
 */
export function runBench(c: ContainersScreen, rowHeight: number, scriptMs: number) {
  const report = (rows: number, listedMs: number) =>
    // The list is in the DOM; wait for the frame that paints it.
    requestAnimationFrame(() =>
      requestAnimationFrame(() => {
        const at = (ms: number) => performance.timeOrigin + ms;
        const phases = { navigation: at(0), script: at(scriptMs), listed: at(listedMs), painted: at(performance.now()) };
        api.benchMark("interactive", { rows, domRows: c.domRows(), phases }).then(() => scroll(c, rowHeight, rows));
      }),
    );
  // The list request goes out before the bench is configured: it may be on screen already.
  if (c.firstRows) {
    report(c.firstRows.rows, c.firstRows.at);
    return;
  }
  c.onRender = (rows) => {
    if (!c.firstRows) return;
    c.onRender = null;
    report(rows, c.firstRows.at);
  };
}

function scroll(c: ContainersScreen, rowHeight: number, rows: number) {
  const el = c.scroller();
  const frames: number[] = [];
  let last = performance.now();
  let maxDom = 0;
  const total = rows * rowHeight;
  const step = rowHeight * 3;
  const tick = (t: number) => {
    frames.push(t - last);
    last = t;
    maxDom = Math.max(maxDom, c.domRows());
    el.scrollTop = (el.scrollTop + step) % Math.max(1, total - el.clientHeight);
    if (frames.length < 240) requestAnimationFrame(tick);
    else {
      const f = frames.slice(1).sort((a, b) => a - b);
      const pct = (p: number) => f[Math.min(f.length - 1, Math.floor((p / 100) * f.length))];
      api.benchMark("scroll", { frames: f.length, p50: pct(50), p95: pct(95), max: f[f.length - 1], maxDomRows: maxDom, rows });
    }
  };
  requestAnimationFrame((t) => {
    last = t;
    requestAnimationFrame(tick);
  });
}
