import { describe, expect, it } from "vitest";
import { VirtualList } from "./virtual";

describe("VirtualList in a DOM", () => {
  it("keeps the DOM small with 500 rows", () => {
    const scroller = document.createElement("div");
    Object.defineProperty(scroller, "clientHeight", { value: 440 });
    document.body.appendChild(scroller);
    const vl = new VirtualList(scroller, 44, (i) => {
      const d = document.createElement("div");
      d.textContent = `row ${i}`;
      return d;
    });
    vl.setRows(500);
    expect(vl.renderedCount()).toBeLessThan(30);
    expect(vl.spacer.style.height).toBe("22000px");
    expect(vl.body.firstElementChild?.textContent).toBe("row 0");
    scroller.scrollTop = 44 * 200;
    vl.refresh();
    expect(vl.body.firstElementChild?.textContent).toBe("row 194");
    expect(vl.renderedCount()).toBeLessThan(30);
  });

  it("keeps rows that stay in view while scrolling and builds only the new ones", () => {
    const scroller = document.createElement("div");
    Object.defineProperty(scroller, "clientHeight", { value: 440 });
    document.body.appendChild(scroller);
    let built = 0;
    const vl = new VirtualList(scroller, 44, (i) => {
      built++;
      const d = document.createElement("div");
      d.textContent = `row ${i}`;
      return d;
    });
    const texts = () => [...vl.body.children].map((c) => c.textContent);
    const rowsFrom = (n: number) => Array.from({ length: vl.renderedCount() }, (_, k) => `row ${n + k}`);
    scroller.scrollTop = 44 * 100;
    vl.setRows(500);
    expect(texts()).toEqual(rowsFrom(94));
    const before = [...vl.body.children];
    const first = built;
    // Three rows down: the window moves by 3 at both ends, 3 rows are built.
    scroller.scrollTop = 44 * 103;
    (vl as any).draw();
    expect(texts()).toEqual(rowsFrom(97));
    expect(built - first).toBe(3);
    expect(vl.body.children[0]).toBe(before[3]);
    // Back up by 5: rows come back at the top.
    scroller.scrollTop = 44 * 98;
    (vl as any).draw();
    expect(texts()).toEqual(rowsFrom(92));
    expect(built - first).toBe(8);
    // A jump past the window rebuilds it; new data (setRows) rebuilds every row.
    scroller.scrollTop = 44 * 300;
    (vl as any).draw();
    expect(texts()[0]).toBe("row 294");
    const b = built;
    vl.setRows(500);
    expect(built - b).toBe(vl.renderedCount());
  });
});
