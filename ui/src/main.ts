// The app shell: sidebar navigation, engine status pill, notices, and the screens.

import "./styles.css";
import { api, onNavigate } from "./api";
import { h } from "./dom";
import { hub } from "./events";
import { ContainersScreen, ROW_HEIGHT } from "./screens/containers";
import { DetailScreen } from "./screens/detail";
import { EngineScreen } from "./screens/engine";
import { ImagesScreen } from "./screens/images";
import { networksScreen, volumesScreen } from "./screens/resources";
import type { Screen } from "./screens/screen";
import { mountNotices } from "./widgets";
import { runBench } from "./bench";

const scriptMs = performance.now();

type Name = "containers" | "detail" | "images" | "volumes" | "networks" | "engine";

const content = h("main", { class: "content" });
const pill = h("span", { class: "pill", "data-testid": "engine-pill" }, "connecting…");
const navButtons = new Map<Name, HTMLElement>();
let current: Name | null = null;

const screens = {} as Record<Name, Screen>;
const detail = new DetailScreen(() => go("containers"));
const containers = new ContainersScreen((id) => {
  detail.open(id);
  go("detail");
});
screens.containers = containers;
screens.detail = detail;
screens.images = new ImagesScreen((id) => {
  go("containers");
  containers.reload().then(() => {
    detail.open(id);
    go("detail");
  });
});
screens.volumes = volumesScreen();
screens.networks = networksScreen();
const engine = new EngineScreen();
screens.engine = engine;

function go(name: Name) {
  if (current === name) return;
  if (current) screens[current].hide();
  current = name;
  content.replaceChildren(screens[name].el);
  for (const [n, b] of navButtons) b.classList.toggle("active", n === name || (name === "detail" && n === "containers"));
  screens[name].show();
}

function navItem(name: Name, label: string, icon: string) {
  const b = h("button", { class: "nav-item", "data-testid": `nav-${name}`, onclick: () => go(name) }, h("span", { class: "nav-icon" }, icon), label);
  navButtons.set(name, b);
  return b;
}

engine.onStatus = (s) => {
  pill.textContent = s.reachable ? `Engine running · ${s.version?.Version ?? ""}` : "Engine unreachable";
  pill.className = `pill ${s.reachable ? "ok" : "bad"}`;
  pill.title = s.reachable ? s.socket : (s.error ?? s.socket);
};

const app = document.getElementById("app")!;
const notices = h("div", { class: "notices", "data-testid": "notices" });
mountNotices(notices);
app.replaceChildren(
  h(
    "div",
    { class: "shell" },
    h(
      "aside",
      { class: "sidebar" },
      h("div", { class: "brand" }, h("span", { class: "logo" }, "⚓"), "Berth"),
      navItem("containers", "Containers", "▣"),
      navItem("images", "Images", "◫"),
      navItem("volumes", "Volumes", "⛁"),
      navItem("networks", "Networks", "⇄"),
      navItem("engine", "Engine", "⚙"),
      h("div", { class: "spacer" }),
      h("button", { class: "nav-item status", onclick: () => go("engine") }, pill),
    ),
    h("div", { class: "main" }, notices, content),
  ),
);

hub.linkHandlers.add((up, error) => {
  pill.textContent = up ? "Engine running" : "Engine unreachable";
  pill.className = `pill ${up ? "ok" : "bad"}`;
  if (error) pill.title = error;
  if (up) {
    engine.reload();
    containers.reload();
  }
});

async function boot() {
  go("containers"); // the list request is the first thing the page sends
  const bench = await api.benchConfig().catch(() => ({ enabled: false }));
  if (bench.enabled) runBench(containers, ROW_HEIGHT, scriptMs);
  await hub.start();
  engine.reload();
  await onNavigate((s) => go(s as Name));
}
boot();
