// Bench mode (BERTH_BENCH=1, see src-tauri/bench/run): report when the containers list is first
// interactive, then scroll it frame by frame and report frame times and how many rows exist.

import { api } from "./api";
import type { ContainersScreen } from "./screens/containers";

export function runBench(c: ContainersScreen, rowHeight: number) {
  let reported = false;
  c.onRender = (rows) => {
    if (reported || rows === 0) return;
    reported = true;
    // The list is in the DOM; wait for the frame that paints it.
    requestAnimationFrame(() =>
      requestAnimationFrame(() => {
        api.benchMark("interactive", { rows, domRows: c.domRows() }).then(() => scroll(c, rowHeight, rows));
      }),
    );
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
