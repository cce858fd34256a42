// One container: header with actions, and tabs for live logs, an exec terminal, stats graphs
// and inspect. Streams are opened when a tab is shown and closed when it is left.

import type { Terminal } from "@xterm/xterm";
import type { FitAddon } from "@xterm/addon-fit";
import { api, errorText } from "../api";
import { actionButton, h } from "../dom";
import { hub } from "../events";
import { mib, portLinks, shortId } from "../format";
import { filterLines, shortTime, splitTimestamp, type LogLine } from "../logs";
import { cpuPercent, memoryUsage, Series } from "../stats";
import { jsonView, showError, stateBadge } from "../widgets";
import { OrderedSender } from "../ordered";
import type { Screen } from "./screen";

const MAX_LINES = 5000;
type Tab = "logs" | "terminal" | "stats" | "inspect";

export class DetailScreen implements Screen {
  readonly el: HTMLElement;
  private id = "";
  private info: Record<string, any> | null = null;
  private head: HTMLElement;
  private tabs: Record<Tab, HTMLElement>;
  private tabButtons: Record<Tab, HTMLButtonElement>;
  private tab: Tab = "logs";
  private visible = false;
  // logs
  private lines: LogLine[] = [];
  private logSub: number | null = null;
  private logBox: HTMLElement;
  private follow = true;
  private timestamps = false;
  private logSearch = "";
  private logDraw = 0;
  // terminal
  private term: Terminal | null = null;
  private fit: FitAddon | null = null;
  private session: number | null = null;
  private termStatus: HTMLElement;
  private termHost: HTMLElement;
  // stats
  private statsSub: number | null = null;
  private cpu = new Series();
  private mem = new Series();
  private cpuCanvas: HTMLCanvasElement;
  private memCanvas: HTMLCanvasElement;
  private statsText: HTMLElement;

  constructor(private back: () => void) {
    this.head = h("header", { class: "screen-head detail-head" });
    this.logBox = h("div", { class: "logs", "data-testid": "logs" });
    const logTools = h(
      "div",
      { class: "toolbar" },
      h("label", null, h("input", { type: "checkbox", checked: true, "data-testid": "logs-follow", onchange: (e: Event) => this.setFollow((e.target as HTMLInputElement).checked) }), " Follow"),
      h("label", null, h("input", { type: "checkbox", "data-testid": "logs-timestamps", onchange: (e: Event) => ((this.timestamps = (e.target as HTMLInputElement).checked), this.drawLogs()) }), " Timestamps"),
      h("input", { type: "search", placeholder: "Search logs", "data-testid": "logs-search", oninput: (e: Event) => ((this.logSearch = (e.target as HTMLInputElement).value), this.drawLogs()) }),
      h("button", { "data-testid": "logs-clear", onclick: () => ((this.lines = []), this.drawLogs()) }, "Clear"),
    );
    this.termStatus = h("div", { class: "term-status muted", "data-testid": "terminal-status" });
    this.termHost = h("div", { class: "terminal", "data-testid": "terminal" });
    this.cpuCanvas = h("canvas", { width: 520, height: 160, "data-testid": "cpu-graph" });
    this.memCanvas = h("canvas", { width: 520, height: 160, "data-testid": "mem-graph" });
    this.statsText = h("div", { class: "stats-text", "data-testid": "stats-text" }, "Waiting for samples…");
    this.tabs = {
      logs: h("div", { class: "tab-body", "data-testid": "tab-logs" }, logTools, this.logBox),
      terminal: h(
        "div",
        { class: "tab-body", "data-testid": "tab-terminal" },
        h("div", { class: "toolbar" }, this.termStatus, h("button", { "data-testid": "terminal-reconnect", onclick: () => this.openTerminal() }, "New session")),
        this.termHost,
      ),
      stats: h(
        "div",
        { class: "tab-body", "data-testid": "tab-stats" },
        this.statsText,
        h("div", { class: "graphs" }, h("figure", null, h("figcaption", null, "CPU %"), this.cpuCanvas), h("figure", null, h("figcaption", null, "Memory"), this.memCanvas)),
      ),
      inspect: h("div", { class: "tab-body", "data-testid": "tab-inspect" }),
    };
    const tb = (t: Tab, label: string) => h("button", { class: "tab", "data-testid": `tab-button-${t}`, onclick: () => this.selectTab(t) }, label);
    this.tabButtons = { logs: tb("logs", "Logs"), terminal: tb("terminal", "Terminal"), stats: tb("stats", "Stats"), inspect: tb("inspect", "Inspect") };
    this.el = h(
      "section",
      { class: "screen detail", "data-testid": "screen-detail" },
      h("button", { class: "link back", "data-testid": "detail-back", onclick: () => this.back() }, "← Containers"),
      this.head,
      h("nav", { class: "tabs" }, ...Object.values(this.tabButtons)),
      ...Object.values(this.tabs),
    );
    hub.on("container", (evs) => {
      if (this.visible && evs.some((e) => e.Actor?.ID === this.id)) {
        if (evs.some((e) => e.Actor?.ID === this.id && e.Action === "destroy")) this.back();
        else this.loadInfo();
      }
    });
  }

  open(id: string) {
    this.closeStreams();
    this.closeTerminal();
    this.id = id;
    this.info = null;
    this.lines = [];
    this.cpu = new Series();
    this.mem = new Series();
    this.logBox.replaceChildren();
    this.head.replaceChildren(h("h1", null, shortId(id)));
    this.tab = "logs";
  }

  show() {
    this.visible = true;
    this.loadInfo().then(() => this.selectTab(this.tab));
  }

  hide() {
    this.visible = false;
    this.closeStreams();
    this.closeTerminal();
  }

  private async loadInfo() {
    try {
      this.info = await api.containerInspect(this.id);
    } catch (e) {
      showError(e);
      return;
    }
    const c = this.info;
    const name = String(c.Name ?? "").replace(/^\//, "");
    const status = c.State?.Status as string;
    const act = (label: string, action: "start" | "stop" | "restart" | "pause" | "unpause", testid: string) =>
      actionButton(label, { "data-testid": testid }, () => api.containerAction(this.id, action), showError);
    const buttons: HTMLElement[] = [];
    if (status === "running") buttons.push(act("Stop", "stop", "detail-stop"), act("Restart", "restart", "detail-restart"), act("Pause", "pause", "detail-pause"));
    else if (status === "paused") buttons.push(act("Resume", "unpause", "detail-unpause"));
    else buttons.push(act("Start", "start", "detail-start"));
    buttons.push(
      actionButton("Delete", { class: "danger", "data-testid": "detail-delete" }, async () => {
        await api.containerRemove(this.id, true);
        this.back();
      }, showError),
    );
    const ports = Object.entries((c.NetworkSettings?.Ports ?? {}) as Record<string, { HostIp: string; HostPort: string }[] | null>).flatMap(([k, v]) => {
      const [priv, type] = k.split("/");
      return (v ?? [{ HostIp: "", HostPort: "" }]).map((b) => ({ IP: b.HostIp, PrivatePort: +priv, PublicPort: b.HostPort ? +b.HostPort : undefined, Type: type }));
    });
    this.head.replaceChildren(
      h("div", null, h("h1", { "data-testid": "detail-name" }, name), h("div", { class: "muted" }, `${shortId(this.id)} · ${c.Config?.Image ?? ""}`)),
      stateBadge(status),
      h("span", { class: "c-ports" }, ...portLinks(ports).map((p) => (p.url ? h("a", { href: "#", class: "port", "data-testid": "port-link", onclick: (e: Event) => (e.preventDefault(), api.openUrl(p.url!).catch(showError)) }, p.label) : h("span", { class: "port" }, p.label)))),
      h("div", { class: "spacer" }),
      ...buttons,
    );
    if (this.tab === "inspect") this.tabs.inspect.replaceChildren(jsonView(this.info));
  }

  private selectTab(t: Tab) {
    if (t !== this.tab) {
      if (this.tab === "stats") this.stopStats();
      if (this.tab === "logs") this.stopLogs();
    }
    this.tab = t;
    for (const [k, el] of Object.entries(this.tabs)) el.style.display = k === t ? "" : "none";
    for (const [k, b] of Object.entries(this.tabButtons)) b.classList.toggle("active", k === t);
    if (t === "logs" && this.logSub === null && this.follow) this.startLogs();
    if (t === "logs" && !this.follow && this.lines.length === 0) this.startLogs(false);
    if (t === "terminal" && this.session === null) this.openTerminal();
    if (t === "terminal") setTimeout(() => this.fitTerminal(), 0);
    if (t === "stats") this.startStats();
    if (t === "inspect" && this.info) this.tabs.inspect.replaceChildren(jsonView(this.info));
  }

  // ---- logs
  private async startLogs(follow = true) {
    this.stopLogs();
    this.lines = [];
    this.drawLogs();
    const id = this.id;
    try {
      const sub = await api.containerLogs(id, 1000, follow, (b) => {
        if (id !== this.id) return;
        if ("lines" in b) {
          for (const l of b.lines) {
            const { ts, text } = splitTimestamp(l.line);
            this.lines.push({ stream: l.stream, ts, text });
          }
          if (this.lines.length > MAX_LINES) this.lines.splice(0, this.lines.length - MAX_LINES);
          this.scheduleLogs();
        } else if (b.error) {
          showError({ message: b.error });
        }
      });
      if (follow && this.tab === "logs" && id === this.id) this.logSub = sub;
      else api.unsubscribe(sub).catch(() => {});
    } catch (e) {
      showError(e);
    }
  }

  private stopLogs() {
    if (this.logSub !== null) api.unsubscribe(this.logSub).catch(() => {});
    this.logSub = null;
  }

  private setFollow(on: boolean) {
    this.follow = on;
    if (on) this.startLogs();
    else this.stopLogs();
  }

  private scheduleLogs() {
    if (this.logDraw) return;
    this.logDraw = requestAnimationFrame(() => {
      this.logDraw = 0;
      this.drawLogs();
    });
  }

  private drawLogs() {
    const atBottom = this.logBox.scrollTop + this.logBox.clientHeight >= this.logBox.scrollHeight - 8;
    const frag = document.createDocumentFragment();
    for (const l of filterLines(this.lines, this.logSearch)) {
      frag.appendChild(h("div", { class: `line ${l.stream}`, "data-testid": "log-line" }, this.timestamps && l.ts ? h("span", { class: "ts" }, shortTime(l.ts) + " ") : null, l.text));
    }
    this.logBox.replaceChildren(frag);
    if (this.follow && atBottom) this.logBox.scrollTop = this.logBox.scrollHeight;
  }

  // ---- terminal
  private async openTerminal() {
    this.closeTerminal();
    // xterm.js is loaded on first use: it is most of the bundle, and the start-up path (the
    // containers list) does not need it.
    const [{ Terminal }, { FitAddon }] = await Promise.all([import("@xterm/xterm"), import("@xterm/addon-fit"), import("@xterm/xterm/css/xterm.css")]);
    const term = new Terminal({ fontSize: 13, cursorBlink: true, convertEol: false, fontFamily: "monospace", theme: { background: "#0f1720" } });
    const fit = new FitAddon();
    term.loadAddon(fit);
    this.termHost.replaceChildren();
    term.open(this.termHost);
    this.term = term;
    this.fit = fit;
    this.fitTerminal();
    this.termStatus.textContent = "Connecting…";
    const id = this.id;
    try {
      const session = await api.execOpen(id, ["/bin/sh"], term.cols, term.rows, (o) => {
        if (this.term !== term) return;
        if (o.kind === "data") term.write(o.data);
        else if (o.kind === "exit") {
          this.termStatus.textContent = `Session ended (exit code ${o.code ?? "unknown"})`;
          this.session = null;
        } else this.termStatus.textContent = `Error: ${o.message}`;
      });
      if (this.term !== term) {
        api.execClose(session).catch(() => {});
        return;
      }
      this.session = session;
      this.termStatus.textContent = "Connected: /bin/sh";
      const input = new OrderedSender(
        (d) => api.execInput(session, d),
        (e) => (this.termStatus.textContent = `Error: ${errorText(e)}`),
      );
      term.onData((d) => this.session === session && input.push(d));
      term.onResize(({ cols, rows }) => this.session !== null && api.execResize(session, cols, rows).catch(() => {}));
      term.focus();
    } catch (e) {
      this.termStatus.textContent = `Error: ${errorText(e)}`;
    }
  }

  private fitTerminal() {
    try {
      this.fit?.fit();
    } catch {
      /* not laid out yet */
    }
  }

  private closeTerminal() {
    if (this.session !== null) api.execClose(this.session).catch(() => {});
    this.session = null;
    this.term?.dispose();
    this.term = null;
    this.fit = null;
  }

  // ---- stats
  private async startStats() {
    this.stopStats();
    const id = this.id;
    try {
      const sub = await api.containerStats(id, (s) => {
        if (id !== this.id) return;
        if ("end" in s) {
          if (s.error) this.statsText.textContent = s.error;
          return;
        }
        const cpu = cpuPercent(s);
        const m = memoryUsage(s);
        this.cpu.push(cpu);
        this.mem.push(m.used);
        this.statsText.textContent = `CPU ${cpu.toFixed(1)} %   Memory ${mib(m.used)}${m.limit ? " / " + mib(m.limit) : ""}`;
        graph(this.cpuCanvas, this.cpu, Math.max(100, this.cpu.max()), (v) => `${v.toFixed(0)} %`);
        graph(this.memCanvas, this.mem, Math.max(1, this.mem.max() * 1.2), mib);
      });
      if (this.tab === "stats" && id === this.id) this.statsSub = sub;
      else api.unsubscribe(sub).catch(() => {});
    } catch (e) {
      this.statsText.textContent = errorText(e);
    }
  }

  private stopStats() {
    if (this.statsSub !== null) api.unsubscribe(this.statsSub).catch(() => {});
    this.statsSub = null;
  }

  private closeStreams() {
    this.stopLogs();
    this.stopStats();
  }
}

/** A small line graph of a series on a canvas (no chart library needed for two lines). */
function graph(c: HTMLCanvasElement, s: Series, max: number, label: (v: number) => string) {
  const ctx = c.getContext("2d");
  if (!ctx) return;
  const { width: w, height: hgt } = c;
  ctx.clearRect(0, 0, w, hgt);
  ctx.strokeStyle = "#2a3a4d";
  ctx.lineWidth = 1;
  for (let i = 1; i < 4; i++) {
    ctx.beginPath();
    ctx.moveTo(0, (hgt * i) / 4);
    ctx.lineTo(w, (hgt * i) / 4);
    ctx.stroke();
  }
  const v = s.values;
  if (v.length > 1) {
    ctx.strokeStyle = "#4aa3ff";
    ctx.lineWidth = 2;
    ctx.beginPath();
    v.forEach((x, i) => {
      const px = (i / (s.capacity - 1)) * w;
      const py = hgt - (x / max) * (hgt - 10) - 2;
      if (i === 0) ctx.moveTo(px, py);
      else ctx.lineTo(px, py);
    });
    ctx.stroke();
  }
  ctx.fillStyle = "#9fb3c8";
  ctx.font = "12px sans-serif";
  ctx.fillText(label(max), 4, 14);
}
