// Volumes and networks: list, create, inspect, delete, prune over the Docker API.

import { api } from "../api";
import { actionButton, h } from "../dom";
import { hub } from "../events";
import { ago, shortId } from "../format";
import { confirmDialog, emptyState, jsonView, modal, notify, showError } from "../widgets";
import type { Screen } from "./screen";

interface Column<T> {
  title: string;
  cell: (r: T) => string;
  cls?: string;
}

interface Kind<T> {
  key: "volume" | "network";
  title: string;
  list: () => Promise<T[]>;
  id: (r: T) => string;
  label: (r: T) => string;
  columns: Column<T>[];
  create: (name: string, extra: string) => Promise<unknown>;
  extraField?: { label: string; options: string[] };
  inspect: (id: string) => Promise<unknown>;
  remove: (id: string) => Promise<void>;
  prune: () => Promise<Record<string, any>>;
  pruned: (r: Record<string, any>) => string;
  protectedRow?: (r: T) => boolean;
}

class ResourceScreen<T> implements Screen {
  readonly el: HTMLElement;
  private body: HTMLElement;
  private count: HTMLElement;
  private loaded = false;

  constructor(private k: Kind<T>) {
    const name = h("input", { type: "text", placeholder: `New ${k.key} name`, "data-testid": `${k.key}-create-name`, spellcheck: "false" });
    const extra = k.extraField ? h("select", { "data-testid": `${k.key}-create-extra`, title: k.extraField.label }, ...k.extraField.options.map((o) => h("option", { value: o }, o))) : null;
    const create = actionButton("Create", { class: "primary", "data-testid": `${k.key}-create` }, async () => {
      const n = name.value.trim();
      await k.create(n, extra?.value ?? "");
      name.value = "";
      notify("info", `Created ${k.key} ${n}`);
      await this.reload();
    }, showError);
    this.body = h("div", { class: "tbody" });
    this.count = h("span", { class: "muted" });
    const cols = `grid-template-columns: ${k.columns.map(() => "minmax(0,1fr)").join(" ")} 170px`;
    this.el = h(
      "section",
      { class: "screen", "data-testid": `screen-${k.key}s` },
      h("header", { class: "screen-head" }, h("h1", null, k.title), this.count, h("div", { class: "spacer" }), actionButton("Prune unused", { "data-testid": `${k.key}s-prune` }, async () => {
        notify("info", k.pruned(await k.prune()));
        await this.reload();
      }, showError)),
      h("div", { class: "toolbar" }, name, extra, create),
      h("div", { class: "table" }, h("div", { class: "thead grow", style: cols }, ...k.columns.map((c) => h("span", null, c.title)), h("span", { class: "c-actions" }, "Actions")), this.body),
    );
    this.body.dataset.cols = cols;
    hub.on(k.key, () => this.reload());
  }

  show() {
    if (!this.loaded) this.reload();
  }
  hide() {}

  async reload() {
    let rows: T[];
    try {
      rows = await this.k.list();
    } catch (e) {
      this.loaded = true;
      this.count.textContent = "";
      this.body.replaceChildren(emptyState(`The engine answered: ${(e as any)?.message ?? e}`, `${this.k.key}s-error`));
      return;
    }
    this.loaded = true;
    this.count.textContent = `${rows.length} ${this.k.key}s`;
    const k = this.k;
    this.body.replaceChildren(
      ...(rows.length
        ? rows.map((r) =>
            h(
              "div",
              { class: "grow", style: this.body.dataset.cols, "data-testid": `${k.key}-row`, "data-name": k.label(r) },
              ...k.columns.map((c) => h("span", { class: c.cls ?? "", title: c.cell(r) }, c.cell(r))),
              h(
                "span",
                { class: "c-actions" },
                h("button", { class: "small", "data-testid": `${k.key}-inspect`, onclick: async () => {
                  try {
                    modal(`${k.key} ${k.label(r)}`, jsonView(await k.inspect(k.id(r))), { wide: true, testid: `${k.key}-inspect-dialog` });
                  } catch (e) {
                    showError(e);
                  }
                } }, "Inspect"),
                k.protectedRow?.(r)
                  ? null
                  : actionButton("Delete", { class: "small danger", "data-testid": `${k.key}-delete` }, async () => {
                      if (!(await confirmDialog(`Delete ${k.key}`, `Delete ${k.key} ${k.label(r)}?`))) return;
                      await k.remove(k.id(r));
                      await this.reload();
                    }, showError),
              ),
            ),
          )
        : [emptyState(`No ${k.key}s.`, `${k.key}s-empty`)]),
    );
  }
}

type Vol = Record<string, any>;
type Net = Record<string, any>;

export function volumesScreen(): Screen {
  return new ResourceScreen<Vol>({
    key: "volume",
    title: "Volumes",
    list: async () => ((await api.volumes()).Volumes ?? []).sort((a, b) => String(a.Name).localeCompare(String(b.Name))),
    id: (v) => v.Name,
    label: (v) => v.Name,
    columns: [
      { title: "Name", cell: (v) => v.Name, cls: "mono" },
      { title: "Driver", cell: (v) => v.Driver ?? "" },
      { title: "Mountpoint", cell: (v) => v.Mountpoint ?? "", cls: "mono" },
      { title: "Created", cell: (v) => (v.CreatedAt ? ago(Date.parse(v.CreatedAt) / 1000) : "–") },
    ],
    create: (name) => api.volumeCreate(name),
    inspect: (name) => api.volumeInspect(name),
    remove: (name) => api.volumeRemove(name, false),
    prune: () => api.volumesPrune(),
    pruned: (r) => `Pruned ${(r.VolumesDeleted ?? []).length} volumes`,
  });
}

export function networksScreen(): Screen {
  const builtin = new Set(["bridge", "host", "none"]);
  return new ResourceScreen<Net>({
    key: "network",
    title: "Networks",
    list: async () => (await api.networks()).sort((a, b) => String(a.Name).localeCompare(String(b.Name))),
    id: (n) => n.Id,
    label: (n) => n.Name,
    columns: [
      { title: "Name", cell: (n) => n.Name, cls: "mono" },
      { title: "ID", cell: (n) => shortId(n.Id), cls: "mono" },
      { title: "Driver", cell: (n) => n.Driver ?? "" },
      { title: "Subnet", cell: (n) => (n.IPAM?.Config ?? []).map((c: any) => c.Subnet).filter(Boolean).join(", ") },
    ],
    create: (name, driver) => api.networkCreate(name, driver || "bridge"),
    extraField: { label: "Driver", options: ["bridge"] },
    inspect: (id) => api.networkInspect(id),
    remove: (id) => api.networkRemove(id),
    prune: () => api.networksPrune(),
    pruned: (r) => `Pruned ${(r.NetworksDeleted ?? []).length} networks`,
    protectedRow: (n) => builtin.has(n.Name),
  });
}
