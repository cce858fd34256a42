// Shared widgets: notices (errors carry the engine's text), a modal, a confirm dialog, JSON view.

import { h } from "./dom";
import { errorText } from "./api";

let noticeArea: HTMLElement | null = null;

export function mountNotices(el: HTMLElement) {
  noticeArea = el;
}

/** Show a notice; errors stay until dismissed, info fades after a few seconds. */
export function notify(kind: "error" | "info", text: string) {
  if (!noticeArea) return;
  const close = h("button", { class: "notice-close", title: "Dismiss", "data-testid": "notice-close" }, "×");
  const n = h("div", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status", "data-testid": `notice-${kind}` }, h("span", { class: "notice-text" }, text), close);
  close.addEventListener("click", () => n.remove());
  noticeArea.appendChild(n);
  if (kind === "info") setTimeout(() => n.remove(), 4000);
}

export function showError(e: unknown) {
  notify("error", errorText(e));
}

/** A modal dialog; returns a function that closes it. */
export function modal(title: string, body: HTMLElement, opts: { wide?: boolean; testid?: string } = {}): () => void {
  const close = () => overlay.remove();
  const overlay = h(
    "div",
    { class: "overlay", onclick: (e: Event) => e.target === overlay && close() },
    h(
      "div",
      { class: `dialog${opts.wide ? " wide" : ""}`, role: "dialog", "data-testid": opts.testid ?? "dialog" },
      h("div", { class: "dialog-head" }, h("h2", null, title), h("button", { class: "icon", title: "Close", "data-testid": "dialog-close", onclick: close }, "×")),
      body,
    ),
  );
  document.body.appendChild(overlay);
  return close;
}

/** Ask before something destructive; resolves true on confirm. */
export function confirmDialog(title: string, text: string, confirmLabel = "Delete"): Promise<boolean> {
  return new Promise((resolve) => {
    let done = false;
    const finish = (v: boolean) => {
      if (done) return;
      done = true;
      close();
      resolve(v);
    };
    const body = h(
      "div",
      { class: "confirm" },
      h("p", null, text),
      h(
        "div",
        { class: "row end" },
        h("button", { onclick: () => finish(false), "data-testid": "confirm-cancel" }, "Cancel"),
        h("button", { class: "danger", onclick: () => finish(true), "data-testid": "confirm-ok" }, confirmLabel),
      ),
    );
    const close = modal(title, body, { testid: "confirm" });
  });
}

export function jsonView(v: unknown): HTMLElement {
  return h("pre", { class: "json", "data-testid": "inspect-json" }, JSON.stringify(v, null, 2));
}

export function emptyState(text: string, testid = "empty"): HTMLElement {
  return h("div", { class: "empty", "data-testid": testid }, text);
}

export function stateBadge(state: string | undefined): HTMLElement {
  const s = state ?? "unknown";
  return h("span", { class: `badge state-${s}`, "data-testid": "state" }, s);
}
