// The app's Tauri commands, typed. Every call goes to the Rust side, which speaks berthd's
// Engine API over the docker socket (the same API the docker CLI uses).

import { invoke, Channel } from "@tauri-apps/api/core";
import { listen, type UnlistenFn } from "@tauri-apps/api/event";
import type { ContainerSummary } from "./filter";
import type { PullMessage } from "./pull";
import type { StatsSample } from "./stats";

/** What the Rust side returns on failure: the engine's own message when it sent one. */
export interface AppError {
  kind: string;
  message: string;
  status?: number;
}

export function errorText(e: unknown): string {
  if (e && typeof e === "object" && "message" in e) return String((e as AppError).message);
  return String(e);
}

export interface AgentStage {
  name: string;
  state: string;
  at?: string;
  detail?: string;
}

export interface EngineStatus {
  socket: string;
  socketSource: string;
  reachable: boolean;
  error?: string;
  version?: Record<string, any>;
  info?: Record<string, any>;
  agent?: {
    available: boolean;
    state?: string;
    stages?: AgentStage[];
    settings?: { cpus?: number; memoryMib?: number; diskGib?: number };
    logs?: string[];
    error?: string;
  };
}

export interface ImageSummary {
  Id: string;
  RepoTags?: string[];
  RepoDigests?: string[];
  Size?: number;
  Created?: number;
  Containers?: number;
}

export interface EngineEvent {
  Type?: string;
  Action?: string;
  Actor?: { ID?: string; Attributes?: Record<string, string> };
  time?: number;
  timeNano?: number;
}

export type ExecOutput = { kind: "data"; data: string } | { kind: "exit"; code: number | null } | { kind: "error"; message: string };
export type LogBatch = { lines: { stream: "stdout" | "stderr"; line: string }[] } | { end: true; error?: string };

export const api = {
  engineStatus: () => invoke<EngineStatus>("engine_status"),
  setDockerHost: (host: string) => invoke<EngineStatus>("set_docker_host", { host }),
  agentAction: (action: "start" | "stop" | "restart") => invoke<void>("agent_action", { action }),
  agentSettings: (settings: { cpus: number; memoryMib: number; diskGib: number }) => invoke<void>("agent_settings", { settings }),

  containers: () => invoke<ContainerSummary[]>("containers_list"),
  containerInspect: (id: string) => invoke<Record<string, any>>("container_inspect", { id }),
  containerAction: (id: string, action: "start" | "stop" | "restart" | "pause" | "unpause" | "kill") =>
    invoke<void>("container_action", { id, action }),
  containerRemove: (id: string, force: boolean) => invoke<void>("container_remove", { id, force }),
  containerRun: (name: string, body: Record<string, unknown>) => invoke<string>("container_run", { name, body }),
  containerLogs: (id: string, tail: number, follow: boolean, onBatch: (b: LogBatch) => void) => {
    const ch = new Channel<LogBatch>();
    ch.onmessage = onBatch;
    return invoke<number>("container_logs", { id, tail, follow, channel: ch });
  },
  containerStats: (id: string, onSample: (s: StatsSample | { end: true; error?: string }) => void) => {
    const ch = new Channel<StatsSample | { end: true; error?: string }>();
    ch.onmessage = onSample;
    return invoke<number>("container_stats", { id, channel: ch });
  },
  unsubscribe: (sub: number) => invoke<void>("unsubscribe", { sub }),

  execOpen: (id: string, cmd: string[], cols: number, rows: number, onOutput: (o: ExecOutput) => void) => {
    const ch = new Channel<ExecOutput>();
    ch.onmessage = onOutput;
    return invoke<number>("exec_open", { id, cmd, cols, rows, channel: ch });
  },
  execInput: (session: number, data: string) => invoke<void>("exec_input", { session, data }),
  execResize: (session: number, cols: number, rows: number) => invoke<void>("exec_resize", { session, cols, rows }),
  execClose: (session: number) => invoke<void>("exec_close", { session }),

  images: () => invoke<ImageSummary[]>("images_list"),
  imageInspect: (id: string) => invoke<Record<string, any>>("image_inspect", { id }),
  imageRemove: (id: string, force: boolean) => invoke<void>("image_remove", { id, force }),
  imagesPrune: () => invoke<Record<string, any>>("images_prune"),
  imagePull: (reference: string, onMessage: (m: PullMessage | { end: true }) => void) => {
    const ch = new Channel<PullMessage | { end: true }>();
    ch.onmessage = onMessage;
    return invoke<void>("image_pull", { reference, channel: ch });
  },

  volumes: () => invoke<{ Volumes?: Record<string, any>[] }>("volumes_list"),
  volumeCreate: (name: string) => invoke<Record<string, any>>("volume_create", { name }),
  volumeInspect: (name: string) => invoke<Record<string, any>>("volume_inspect", { name }),
  volumeRemove: (name: string, force: boolean) => invoke<void>("volume_remove", { name, force }),
  volumesPrune: () => invoke<Record<string, any>>("volumes_prune"),

  networks: () => invoke<Record<string, any>[]>("networks_list"),
  networkCreate: (name: string, driver: string) => invoke<Record<string, any>>("network_create", { name, driver }),
  networkInspect: (id: string) => invoke<Record<string, any>>("network_inspect", { id }),
  networkRemove: (id: string) => invoke<void>("network_remove", { id }),
  networksPrune: () => invoke<Record<string, any>>("networks_prune"),

  openUrl: (url: string) => invoke<void>("open_url", { url }),
  benchConfig: () => invoke<{ enabled: boolean }>("bench_config"),
  benchMark: (label: string, data: Record<string, unknown>) => invoke<void>("bench_mark", { label, data }),
};

/** berthd's /events, forwarded by the Rust side (one stream for the whole app). */
export function onEngineEvent(f: (e: EngineEvent) => void): Promise<UnlistenFn> {
  return listen<EngineEvent>("berth:engine-event", (e) => f(e.payload));
}

/** Connectivity changes of the event stream ("up" / "down" with a reason). */
export function onEngineLink(f: (s: { up: boolean; error?: string }) => void): Promise<UnlistenFn> {
  return listen<{ up: boolean; error?: string }>("berth:engine-link", (e) => f(e.payload));
}

/** Navigation requests from the tray menu. */
export function onNavigate(f: (screen: string) => void): Promise<UnlistenFn> {
  return listen<string>("berth:navigate", (e) => f(e.payload));
}
