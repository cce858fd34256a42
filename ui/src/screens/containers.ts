// Containers: a live, virtualized list with search, state filter, per-row and bulk actions.
// Updates come from berthd's /events (see events.ts); the only timer ticks the uptime text.

import { api } from "../api";
import { actionButton, h } from "../dom";
import { hub } from "../events";
import { visibleContainers, type ContainerSummary, type StateFilter } from "../filter";
import { containerName, duration, portLinks, shortId } from "../format";
import { VirtualList } from "../virtual";
import { confirmDialog, emptyState, notify, showError, stateBadge } from "../widgets";
import type { Screen } from "./screen";

export const ROW_HEIGHT = 44;

export class ContainersScreen implements Screen {
  readonly el: HTMLElement;
  private all: ContainerSummary[] = [];
  private shown: ContainerSummary[] = [];
  private search = "";
  private filter: StateFilter = "all";
  private selected = new Set<string>();
  private list: VirtualList;
  private count: HTMLElement;
  private bulk: HTMLElement;
  private selectAll: HTMLInputElement;
  private empty: HTMLElement;
  private loaded = false;
  private loading: Promise<void> | null = null;
  private again = false;
  /** Called after each render; the bench waits on it. */
  onRender: ((rows: number) => void) | null = null;
  /** The first render that showed rows: how many, and when (performance.now()), for the bench. */
  firstRows: { rows: number; at: number } | null = null;

  constructor(private openDetail: (id: string) => void) {
    const searchBox = h("input", {
      type: "search",
      placeholder: "Search name, image, ID or port",
      "data-testid": "container-search",
      oninput: (e: Event) => {
        this.search = (e.target as HTMLInputElement).value;
        this.render();
      },
    });
    const filterSel = h(
      "select",
      {
        "data-testid": "container-filter",
        onchange: (e: Event) => {
          this.filter = (e.target as HTMLSelectElement).value as StateFilter;
          this.render();
        },
      },
      ...(["all", "running", "stopped", "paused"] as const).map((f) => h("option", { value: f }, f === "all" ? "All states" : f[0].toUpperCase() + f.slice(1))),
    );
    this.bulk = h(
      "div",
      { class: "bulk hidden", "data-testid": "bulk-actions" },
      actionButton("Start", { "data-testid": "bulk-start" }, () => this.bulkAction("start"), showError),
      actionButton("Stop", { "data-testid": "bulk-stop" }, () => this.bulkAction("stop"), showError),
      actionButton("Restart", { "data-testid": "bulk-restart" }, () => this.bulkAction("restart"), showError),
      actionButton("Delete", { class: "danger", "data-testid": "bulk-delete" }, () => this.bulkDelete(), showError),
    );
    this.selectAll = h("input", {
      type: "checkbox",
      title: "Select all shown",
      "data-testid": "select-all",
      onchange: () => {
        if (this.selectAll.checked) this.shown.forEach((c) => this.selected.add(c.Id));
        else this.selected.clear();
        this.render();
      },
    });
    this.count = h("span", { class: "muted", "data-testid": "container-count" });
    const scroller = h("div", { class: "vl-scroller", "data-testid": "container-list" });
    this.empty = emptyState("No containers yet. Run one from the Images screen.", "containers-empty");
    this.el = h(
      "section",
      { class: "screen", "data-testid": "screen-containers" },
      h("header", { class: "screen-head" }, h("h1", null, "Containers"), this.count),
      h("div", { class: "toolbar" }, searchBox, filterSel, this.bulk),
      h(
        "div",
        { class: "table containers" },
        h("div", { class: "thead crow" }, h("span", { class: "c-check" }, this.selectAll), h("span", null, "Name"), h("span", null, "Image"), h("span", null, "State"), h("span", null, "Ports"), h("span", null, "Uptime"), h("span", { class: "c-actions" }, "Actions")),
        scroller,
        this.empty,
      ),
    );
    this.list = new VirtualList(scroller, ROW_HEIGHT, (i) => this.row(this.shown[i]));
    hub.on("container", () => this.reload());
    // Uptime text only: a local clock, the engine is not asked anything.
    setInterval(() => this.tickUptime(), 1000);
  }

  show() {
    if (!this.loaded) this.reload();
    else this.list.refresh();
  }

  hide() {}

  /** Re-read the list; calls that arrive while one is in flight fold into one more read. */
  reload(): Promise<void> {
    if (this.loading) {
      this.again = true;
      return this.loading;
    }
    this.loading = (async () => {
      try {
        do {
          this.again = false;
          this.all = await api.containers();
          this.loaded = true;
          const ids = new Set(this.all.map((c) => c.Id));
          for (const s of [...this.selected]) if (!ids.has(s)) this.selected.delete(s);
          this.render();
        } while (this.again);
      } catch (e) {
        showError(e);
      } finally {
        this.loading = null;
      }
    })();
    return this.loading;
  }

  private render() {
    this.shown = visibleContainers(this.all, this.search, this.filter);
    const running = this.all.filter((c) => c.State === "running").length;
    this.count.textContent = `${this.all.length} containers, ${running} running`;
    this.empty.style.display = this.loaded && this.shown.length === 0 ? "" : "none";
    this.empty.textContent = this.all.length === 0 ? "No containers yet. Run one from the Images screen." : "No container matches the search.";
    this.bulk.classList.toggle("hidden", this.selected.size === 0);
    this.selectAll.checked = this.shown.length > 0 && this.shown.every((c) => this.selected.has(c.Id));
    this.list.setRows(this.shown.length);
    if (!this.firstRows && this.shown.length) this.firstRows = { rows: this.shown.length, at: performance.now() };
    this.onRender?.(this.shown.length);
  }

  private row(c: ContainerSummary): HTMLElement {
    const name = containerName(c.Names, c.Id);
    const running = c.State === "running";
    const paused = c.State === "paused";
    const check = h("input", {
      type: "checkbox",
      checked: this.selected.has(c.Id),
      "data-testid": "container-select",
      onchange: (e: Event) => {
        if ((e.target as HTMLInputElement).checked) this.selected.add(c.Id);
        else this.selected.delete(c.Id);
        this.bulk.classList.toggle("hidden", this.selected.size === 0);
      },
    });
    const act = (label: string, action: "start" | "stop" | "restart" | "pause" | "unpause", testid: string) =>
      actionButton(label, { class: "small", "data-testid": testid, title: `${label} ${name}` }, () => api.containerAction(c.Id, action), showError);
    const actions = h("span", { class: "c-actions" });
    if (running) actions.append(act("Stop", "stop", "container-stop"), act("Restart", "restart", "container-restart"), act("Pause", "pause", "container-pause"));
    else if (paused) actions.append(act("Resume", "unpause", "container-unpause"), act("Stop", "stop", "container-stop"));
    else actions.append(act("Start", "start", "container-start"));
    actions.append(actionButton("Delete", { class: "small danger", "data-testid": "container-delete", title: `Delete ${name}` }, () => this.remove(c), showError));
    const started = running && c.StartedAt ? Date.parse(c.StartedAt) : NaN;
    return h(
      "div",
      { class: "crow", "data-testid": "container-row", "data-id": c.Id, "data-name": name, "data-state": c.State },
      h("span", { class: "c-check" }, check),
      h("span", { class: "c-name" }, h("a", { href: "#", "data-testid": "container-name", onclick: (e: Event) => (e.preventDefault(), this.openDetail(c.Id)) }, name), h("small", { class: "muted" }, shortId(c.Id))),
      h("span", { class: "c-image", title: c.Image }, c.Image ?? ""),
      h("span", null, stateBadge(c.State)),
      h("span", { class: "c-ports" }, ...portLinks(c.Ports).map((p) => (p.url ? h("a", { href: "#", class: "port", "data-testid": "port-link", "data-url": p.url, title: p.url, onclick: (e: Event) => (e.preventDefault(), api.openUrl(p.url!).catch(showError)) }, p.label) : h("span", { class: "port" }, p.label)))),
      h("span", { class: "uptime", "data-started": isNaN(started) ? null : String(started) }, isNaN(started) ? (c.Status ?? "") : duration((Date.now() - started) / 1000)),
      actions,
    );
  }

  private tickUptime() {
    if (!this.el.isConnected) return;
    for (const u of this.el.querySelectorAll<HTMLElement>(".uptime[data-started]")) {
      u.textContent = duration((Date.now() - Number(u.dataset.started)) / 1000);
    }
  }

  private async remove(c: ContainerSummary) {
    const name = containerName(c.Names, c.Id);
    const running = c.State === "running" || c.State === "paused" || c.State === "restarting";
    const ok = await confirmDialog("Delete container", running ? `${name} is ${c.State}. It will be killed and deleted.` : `Delete ${name}?`);
    if (!ok) return;
    await api.containerRemove(c.Id, true);
    notify("info", `Deleted ${name}`);
  }

  private targets(): ContainerSummary[] {
    return this.all.filter((c) => this.selected.has(c.Id));
  }

  private async bulkAction(action: "start" | "stop" | "restart") {
    const errors: string[] = [];
    await Promise.all(
      this.targets().map((c) =>
        api.containerAction(c.Id, action).catch((e) => errors.push(`${containerName(c.Names, c.Id)}: ${e?.message ?? e}`)),
      ),
    );
    if (errors.length) throw { message: errors.join("\n") };
  }

  private async bulkDelete() {
    const t = this.targets();
    if (!(await confirmDialog("Delete containers", `Delete ${t.length} container(s)? Running ones are killed first.`))) return;
    const errors: string[] = [];
    await Promise.all(t.map((c) => api.containerRemove(c.Id, true).catch((e) => errors.push(`${containerName(c.Names, c.Id)}: ${e?.message ?? e}`))));
    this.selected.clear();
    if (errors.length) throw { message: errors.join("\n") };
  }

  /** For the bench: the scroll container and how many rows exist in the DOM. */
  scroller(): HTMLElement {
    return this.list.scroller;
  }
  domRows(): number {
    return this.list.renderedCount();
  }
}
