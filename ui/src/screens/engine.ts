// Engine: is berthd reachable on its socket, what it reports (/version, /info), where the socket
// comes from, and the host agent's staged start-up, controls, settings and diagnostics.

import { api, errorText, type EngineStatus } from "../api";
import { actionButton, h } from "../dom";
import { hub } from "../events";
import { bytes } from "../format";
import { notify, showError } from "../widgets";
import type { Screen } from "./screen";

export class EngineScreen implements Screen {
  readonly el: HTMLElement;
  private body: HTMLElement;
  status: EngineStatus | null = null;
  onStatus: ((s: EngineStatus) => void) | null = null;

  constructor() {
    this.body = h("div", { class: "engine" });
    this.el = h(
      "section",
      { class: "screen", "data-testid": "screen-engine" },
      h("header", { class: "screen-head" }, h("h1", null, "Engine"), h("div", { class: "spacer" }), actionButton("Refresh", { "data-testid": "engine-refresh" }, () => this.reload(), showError)),
      this.body,
    );
    hub.linkHandlers.add(() => this.reload());
  }

  show() {
    this.reload();
  }
  hide() {}

  async reload() {
    try {
      this.status = await api.engineStatus();
    } catch (e) {
      showError(e);
      return;
    }
    this.onStatus?.(this.status);
    this.render(this.status);
  }

  private render(s: EngineStatus) {
    const kv = (k: string, v: unknown) => h("div", { class: "kv" }, h("span", { class: "k" }, k), h("span", { class: "v", "data-testid": `engine-${k.toLowerCase().replace(/[^a-z]+/g, "-")}` }, v == null || v === "" ? "–" : String(v)));
    const v = s.version ?? {};
    const i = s.info ?? {};
    const status = h(
      "div",
      { class: "card" },
      h("h2", null, "berthd ", h("span", { class: `badge ${s.reachable ? "state-running" : "state-exited"}`, "data-testid": "engine-state" }, s.reachable ? "running" : "unreachable")),
      s.error ? h("p", { class: "form-error", "data-testid": "engine-error" }, s.error) : null,
      kv("Socket", `${s.socket} (${s.socketSource})`),
      kv("Version", v.Version),
      kv("API version", v.ApiVersion),
      kv("OS / arch", v.Os ? `${v.Os}/${v.Arch}` : ""),
      kv("Kernel", v.KernelVersion ?? i.KernelVersion),
      kv("Containers", i.Containers != null ? `${i.Containers} (${i.ContainersRunning} running, ${i.ContainersPaused} paused, ${i.ContainersStopped} stopped)` : ""),
      kv("Images", i.Images),
      kv("Storage driver", i.Driver),
      kv("Data root", i.DockerRootDir),
      kv("CPUs / memory", i.NCPU ? `${i.NCPU} / ${bytes(i.MemTotal)}` : ""),
    );
    const hostInput = h("input", { type: "text", value: s.socketSource === "settings" ? `unix://${s.socket}` : "", placeholder: "unix:///run/berth/docker.sock (empty: DOCKER_HOST or the default)", "data-testid": "docker-host-input", spellcheck: "false" });
    const settings = h(
      "div",
      { class: "card" },
      h("h2", null, "Connection"),
      h("p", { class: "muted" }, "The app speaks the Docker Engine API on this socket: DOCKER_HOST first, then this setting, then the host agent's socket, then the platform default."),
      h("div", { class: "row" }, hostInput, actionButton("Save", { "data-testid": "docker-host-save" }, async () => {
        const st = await api.setDockerHost(hostInput.value.trim());
        notify("info", `Using ${st.socket}`);
        this.status = st;
        this.onStatus?.(st);
        this.render(st);
      }, showError)),
    );
    this.body.replaceChildren(status, this.agentCard(s), settings);
  }

  private agentCard(s: EngineStatus): HTMLElement {
    const a = s.agent;
    if (!a || !a.available) {
      return h(
        "div",
        { class: "card", "data-testid": "agent-card" },
        h("h2", null, "Host agent"),
        h("p", { class: "muted", "data-testid": "agent-missing" }, a?.error ?? "No host agent is running: on Linux berthd runs natively (`./berth up`). On macOS and Windows the agent boots the Berth VM."),
      );
    }
    const stages = h(
      "ol",
      { class: "stages", "data-testid": "agent-stages" },
      ...(a.stages ?? []).map((st) => h("li", { class: `stage stage-${st.state}` }, h("span", { class: "stage-name" }, st.name), h("span", { class: "badge" }, st.state), h("span", { class: "muted" }, st.at ? new Date(st.at).toLocaleTimeString() : ""), st.detail ? h("div", { class: "muted" }, st.detail) : null)),
    );
    const set = a.settings ?? {};
    const num = (testid: string, value: number | undefined, min: number) => h("input", { type: "number", min, value: value ?? "", "data-testid": testid });
    const cpus = num("agent-cpus", set.cpus, 1);
    const mem = num("agent-memory", set.memoryMib, 256);
    const disk = num("agent-disk", set.diskGib, 1);
    const act = (label: string, action: "start" | "stop" | "restart") => actionButton(label, { "data-testid": `agent-${action}` }, () => api.agentAction(action).then(() => this.reload()), showError);
    return h(
      "div",
      { class: "card", "data-testid": "agent-card" },
      h("h2", null, "Host agent ", h("span", { class: "badge", "data-testid": "agent-state" }, a.state ?? "unknown")),
      h("div", { class: "row" }, act("Start", "start"), act("Stop", "stop"), act("Restart", "restart")),
      stages,
      h("h3", null, "Resources"),
      h("div", { class: "row" }, h("label", null, "CPUs ", cpus), h("label", null, "Memory (MiB) ", mem), h("label", null, "Disk (GiB) ", disk), actionButton("Apply", { "data-testid": "agent-apply" }, async () => {
        await api.agentSettings({ cpus: +cpus.value, memoryMib: +mem.value, diskGib: +disk.value });
        notify("info", "Settings saved; they apply at the next engine start");
      }, showError)),
      a.error ? h("p", { class: "form-error" }, a.error) : null,
      h("h3", null, "Diagnostics: last log lines"),
      h("pre", { class: "diag", "data-testid": "agent-logs" }, (a.logs ?? []).join("\n") || "(empty)"),
    );
  }
}

export function engineErrorText(e: unknown) {
  return errorText(e);
}
