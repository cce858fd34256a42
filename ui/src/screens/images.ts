// Images: list, pull with per-layer progress, delete, prune, and the Run form.

import { api, errorText, type ImageSummary } from "../api";
import { actionButton, h } from "../dom";
import { hub } from "../events";
import { ago, bytes, shortId, splitReference } from "../format";
import { PullState } from "../pull";
import { createBody, FormError, type RunForm } from "../runform";
import { confirmDialog, emptyState, modal, notify, showError, jsonView } from "../widgets";
import type { Screen } from "./screen";

export class ImagesScreen implements Screen {
  readonly el: HTMLElement;
  private body: HTMLElement;
  private progress: HTMLElement;
  private count: HTMLElement;
  private images: ImageSummary[] = [];
  private loaded = false;

  constructor(private afterRun: (id: string) => void) {
    const input = h("input", { type: "text", placeholder: "Image to pull, e.g. 127.0.0.1:5000/busybox:latest", "data-testid": "pull-input", spellcheck: "false" });
    const pull = actionButton("Pull", { class: "primary", "data-testid": "pull-button" }, () => this.pull(input.value.trim()), showError);
    input.addEventListener("keydown", (e) => e.key === "Enter" && pull.click());
    this.progress = h("div", { class: "pulls", "data-testid": "pull-progress" });
    this.body = h("div", { class: "tbody" });
    this.count = h("span", { class: "muted", "data-testid": "image-count" });
    this.el = h(
      "section",
      { class: "screen", "data-testid": "screen-images" },
      h("header", { class: "screen-head" }, h("h1", null, "Images"), this.count, h("div", { class: "spacer" }), actionButton("Prune dangling", { "data-testid": "images-prune" }, () => this.prune(), showError)),
      h("div", { class: "toolbar" }, input, pull),
      this.progress,
      h("div", { class: "table images" }, h("div", { class: "thead irow" }, h("span", null, "Repository"), h("span", null, "Tag"), h("span", null, "ID"), h("span", null, "Created"), h("span", null, "Size"), h("span", { class: "c-actions" }, "Actions")), this.body),
    );
    hub.on("image", () => this.reload());
  }

  show() {
    if (!this.loaded) this.reload();
  }
  hide() {}

  async reload() {
    try {
      this.images = await api.images();
      this.loaded = true;
      this.render();
    } catch (e) {
      showError(e);
    }
  }

  private render() {
    this.count.textContent = `${this.images.length} images`;
    const rows: HTMLElement[] = [];
    for (const img of [...this.images].sort((a, b) => (b.Created ?? 0) - (a.Created ?? 0))) {
      const tags = img.RepoTags?.filter((t) => t !== "<none>:<none>") ?? [];
      for (const ref of tags.length ? tags : [null]) {
        const { repo, tag } = ref ? splitReference(ref) : { repo: "<none>", tag: "<none>" };
        rows.push(
          h(
            "div",
            { class: "irow", "data-testid": "image-row", "data-ref": ref ?? shortId(img.Id) },
            h("span", { class: "c-image", title: repo }, repo),
            h("span", null, tag),
            h("span", { class: "mono" }, shortId(img.Id)),
            h("span", null, ago(img.Created)),
            h("span", null, bytes(img.Size)),
            h(
              "span",
              { class: "c-actions" },
              h("button", { class: "small primary", "data-testid": "image-run", title: `Run ${ref ?? img.Id}`, onclick: () => this.runForm(ref ?? img.Id) }, "Run"),
              h("button", { class: "small", "data-testid": "image-inspect", onclick: () => this.inspect(img.Id) }, "Inspect"),
              actionButton("Delete", { class: "small danger", "data-testid": "image-delete" }, () => this.remove(ref ?? img.Id), showError),
            ),
          ),
        );
      }
    }
    this.body.replaceChildren(...(rows.length ? rows : [emptyState("No images. Pull one above.", "images-empty")]));
  }

  private async pull(reference: string) {
    if (!reference) throw new FormError("type an image reference to pull");
    const state = new PullState();
    const bars = h("div", { class: "layers" });
    const msg = h("div", { class: "muted pull-messages" });
    const title = h("strong", null, `Pulling ${reference}`);
    const box = h("div", { class: "pull", "data-testid": "pull", "data-ref": reference }, h("div", { class: "row" }, title, h("div", { class: "spacer" }), h("button", { class: "icon", title: "Dismiss", onclick: () => box.remove() }, "×")), bars, msg);
    this.progress.prepend(box);
    const draw = () => {
      bars.replaceChildren(
        ...[...state.layers.values()].map((l) =>
          h(
            "div",
            { class: "layer", "data-testid": "layer-progress", "data-layer": l.id, "data-done": l.done ? "1" : "0" },
            h("span", { class: "mono" }, l.id),
            h("div", { class: "bar" }, h("div", { class: "fill", style: { width: `${(PullState.fraction(l) * 100).toFixed(1)}%` } })),
            h("span", { class: "layer-status" }, l.status + (l.total && !l.done ? ` ${bytes(l.current)} / ${bytes(l.total)}` : "")),
          ),
        ),
      );
      msg.textContent = state.messages.slice(-2).join(" · ");
    };
    try {
      await api.imagePull(reference, (m) => {
        if ("end" in m) return;
        state.apply(m);
        draw();
      });
    } catch (e) {
      box.classList.add("failed");
      title.textContent = `Pull of ${reference} failed: ${errorText(e)}`;
      throw e;
    }
    if (state.error) {
      box.classList.add("failed");
      title.textContent = `Pull of ${reference} failed: ${state.error}`;
      throw { message: state.error };
    }
    box.classList.add("done");
    box.dataset.done = "1";
    title.textContent = `Pulled ${reference}`;
    draw();
    await this.reload();
  }

  private async remove(ref: string) {
    if (!(await confirmDialog("Delete image", `Delete ${ref}?`))) return;
    await api.imageRemove(ref, false);
    notify("info", `Deleted ${ref}`);
  }

  private async prune() {
    const r = await api.imagesPrune();
    notify("info", `Pruned ${(r.ImagesDeleted ?? []).length} image entries, reclaimed ${bytes(r.SpaceReclaimed ?? 0)}`);
    await this.reload();
  }

  private async inspect(id: string) {
    try {
      modal(`Image ${shortId(id)}`, jsonView(await api.imageInspect(id)), { wide: true, testid: "image-inspect-dialog" });
    } catch (e) {
      showError(e);
    }
  }

  /** The Run form: name, ports, env, volumes, command, restart policy; one click to start. */
  runForm(image: string) {
    const f = {
      image: h("input", { type: "text", value: image, "data-testid": "run-image", spellcheck: "false" }),
      name: h("input", { type: "text", placeholder: "random if empty", "data-testid": "run-name", spellcheck: "false" }),
      ports: h("textarea", { rows: 2, placeholder: "8080:80 (host:container, one per line)", "data-testid": "run-ports", spellcheck: "false" }),
      env: h("textarea", { rows: 2, placeholder: "KEY=value, one per line", "data-testid": "run-env", spellcheck: "false" }),
      volumes: h("textarea", { rows: 2, placeholder: "/host/path:/data or volume:/data[:ro]", "data-testid": "run-volumes", spellcheck: "false" }),
      command: h("input", { type: "text", placeholder: "image default", "data-testid": "run-command", spellcheck: "false" }),
      restart: h("select", { "data-testid": "run-restart" }, ...["no", "always", "unless-stopped", "on-failure"].map((r) => h("option", { value: r }, r))),
    };
    const err = h("div", { class: "form-error", "data-testid": "run-error" });
    const field = (label: string, el: HTMLElement) => h("label", { class: "field" }, h("span", null, label), el);
    let close = () => {};
    const submit = actionButton("Run", { class: "primary", "data-testid": "run-submit" }, async () => {
      err.textContent = "";
      const form: RunForm = {
        image: f.image.value,
        name: f.name.value,
        ports: f.ports.value,
        env: f.env.value,
        volumes: f.volumes.value,
        command: f.command.value,
        restart: f.restart.value as RunForm["restart"],
      };
      try {
        const id = await api.containerRun(form.name.trim(), createBody(form));
        close();
        notify("info", `Started ${form.name.trim() || shortId(id)}`);
        this.afterRun(id);
      } catch (e) {
        err.textContent = errorText(e);
      }
    }, showError);
    const body = h(
      "form",
      { class: "run-form", onsubmit: (e: Event) => (e.preventDefault(), submit.click()) },
      field("Image", f.image),
      field("Name", f.name),
      field("Ports", f.ports),
      field("Environment", f.env),
      field("Volumes", f.volumes),
      field("Command", f.command),
      field("Restart policy", f.restart),
      err,
      h("div", { class: "row end" }, h("button", { type: "button", "data-testid": "run-cancel", onclick: () => close() }, "Cancel"), submit),
    );
    close = modal(`Run ${image}`, body, { testid: "run-dialog" });
    f.name.focus();
  }
}
