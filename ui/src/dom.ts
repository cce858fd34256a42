// A tiny hyperscript helper: enough structure for a handful of screens without a framework.

type Child = Node | string | number | null | undefined | false;
type Attrs = Record<string, any>;

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs?: Attrs | null, ...children: (Child | Child[])[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v == null || v === false) continue;
      if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2).toLowerCase(), v);
      else if (k === "class") el.className = v;
      else if (k === "style" && typeof v === "object") Object.assign(el.style, v);
      else if (k === "value") (el as any).value = v;
      else if (k === "checked") (el as any).checked = !!v;
      else if (v === true) el.setAttribute(k, "");
      else el.setAttribute(k, String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el: HTMLElement, children: (Child | Child[])[]) {
  for (const c of children) {
    if (Array.isArray(c)) append(el, c);
    else if (c == null || c === false) continue;
    else el.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
  }
}

/** A button that disables itself while its async action runs and reports errors. */
export function actionButton(label: string, attrs: Attrs, run: () => Promise<unknown>, onError: (e: unknown) => void): HTMLButtonElement {
  const b = h("button", attrs, label);
  b.addEventListener("click", async (ev) => {
    ev.stopPropagation();
    if (b.disabled) return;
    b.disabled = true;
    b.classList.add("busy");
    try {
      await run();
    } catch (e) {
      onError(e);
    } finally {
      b.disabled = false;
      b.classList.remove("busy");
    }
  });
  return b;
}
