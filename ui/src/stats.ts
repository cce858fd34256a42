// `GET /containers/{id}/stats` samples -> the numbers `docker stats` shows (unit-tested).

export interface StatsSample {
  read?: string;
  cpu_stats?: { cpu_usage?: { total_usage?: number; percpu_usage?: number[] }; system_cpu_usage?: number; online_cpus?: number };
  precpu_stats?: { cpu_usage?: { total_usage?: number }; system_cpu_usage?: number };
  memory_stats?: { usage?: number; limit?: number; stats?: Record<string, number> };
}

/** CPU % the way the docker CLI computes it (delta of container vs system time, times CPUs). */
export function cpuPercent(s: StatsSample): number {
  const cur = s.cpu_stats?.cpu_usage?.total_usage ?? 0;
  const prev = s.precpu_stats?.cpu_usage?.total_usage ?? 0;
  const sys = s.cpu_stats?.system_cpu_usage ?? 0;
  const psys = s.precpu_stats?.system_cpu_usage ?? 0;
  const cpus = s.cpu_stats?.online_cpus || s.cpu_stats?.cpu_usage?.percpu_usage?.length || 1;
  const dc = cur - prev;
  const ds = sys - psys;
  if (dc <= 0 || ds <= 0) return 0;
  return (dc / ds) * cpus * 100;
}

/** Memory in use minus page cache (cgroup v1 `total_inactive_file`, v2 `inactive_file`), as the CLI does. */
export function memoryUsage(s: StatsSample): { used: number; limit: number } {
  const m = s.memory_stats ?? {};
  const st = m.stats ?? {};
  let used = m.usage ?? 0;
  const cache = st.total_inactive_file ?? st.inactive_file;
  if (cache !== undefined && cache < used) used -= cache;
  return { used, limit: m.limit ?? 0 };
}

/** A fixed-length ring of recent values for the graphs. */
export class Series {
  readonly values: number[] = [];
  constructor(readonly capacity = 60) {}
  push(v: number) {
    this.values.push(v);
    if (this.values.length > this.capacity) this.values.shift();
  }
  max(): number {
    return this.values.reduce((a, b) => Math.max(a, b), 0);
  }
}
