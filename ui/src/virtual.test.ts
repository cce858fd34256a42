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
});
