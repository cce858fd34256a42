// Log lines as berthd sends them with `timestamps=1` (unit-tested).

export interface LogLine {
  stream: "stdout" | "stderr";
  /** RFC 3339 timestamp from the engine, or "" when absent. */
  ts: string;
  text: string;
}

/** Split "2024-05-01T10:00:00.123456789Z message" into its timestamp and text. */
export function splitTimestamp(raw: string): { ts: string; text: string } {
  const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)) ?(.*)$/s.exec(raw);
  if (!m) return { ts: "", text: raw };
  return { ts: m[1], text: m[2] };
}

/** Short local display of an engine timestamp ("10:00:00.123"). */
export function shortTime(ts: string): string {
  const m = /T(\d\d:\d\d:\d\d)(\.\d{1,3})?/.exec(ts);
  return m ? m[1] + (m[2] ?? "") : ts;
}

/** Lines matching a case-insensitive search (all lines for an empty search). */
export function filterLines(lines: LogLine[], q: string): LogLine[] {
  const s = q.trim().toLowerCase();
  if (!s) return lines;
  return lines.filter((l) => l.text.toLowerCase().includes(s));
}
