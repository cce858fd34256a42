//! The report: markdown (summary table per group, then one section per scenario) and JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::machine::Machine;
use crate::scenario::{Better, ScenarioResult, Status};

/// Scenarios that compare the same subjects against one reference (e.g. berthd against
/// dockerd and podman; berth-oci against crun and runc).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Group {
    pub title: String,
    /// What the subjects are and how they are driven.
    pub description: String,
    pub reference: String,
    pub subjects: Vec<String>,
    pub results: Vec<ScenarioResult>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// UTC, RFC 3339.
    pub started: String,
    pub finished: String,
    pub machine: Machine,
    /// Program -> version string, for every peer and tool involved.
    pub versions: BTreeMap<String, String>,
    /// How the run was set up (isolation, image, options), one fact per line.
    pub setup: Vec<String>,
    /// What the run left behind (empty: nothing) and how that was checked.
    pub leak_check: LeakCheck,
    pub groups: Vec<Group>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LeakCheck {
    /// What was checked.
    pub checked: Vec<String>,
    /// What was found (empty when clean).
    pub leaks: Vec<String>,
    /// Things outside the bench's scope that changed meanwhile (other helpers share the host).
    pub notes: Vec<String>,
}

/// A value with as many decimals as its magnitude needs.
pub fn fmt_value(v: f64, unit: &str) -> String {
    let a = v.abs();
    match unit {
        "s" if a < 0.01 => format!("{:.2} ms", v * 1000.0),
        "s" if a < 1.0 => format!("{:.1} ms", v * 1000.0),
        "s" => format!("{v:.2} s"),
        _ if a >= 100.0 => format!("{v:.0} {unit}"),
        _ => format!("{v:.1} {unit}"),
    }
}

/// Median (min–max), all three on the median's scale.
pub fn fmt_triplet(median: f64, min: f64, max: f64, unit: &str) -> String {
    let a = median.abs();
    let (scale, suffix, decimals) = match unit {
        "s" if a < 0.01 => (1000.0, "ms", 2),
        "s" if a < 1.0 => (1000.0, "ms", 1),
        "s" => (1.0, "s", 2),
        _ if a >= 100.0 => (1.0, unit, 0),
        _ => (1.0, unit, 1),
    };
    let f = |v: f64| format!("{:.*}", decimals, v * scale);
    format!("{} {suffix} ({}–{})", f(median), f(min), f(max))
}

/// Words for "the reference is `advantage` times better", by unit and direction.
pub fn advantage_words(advantage: f64, unit: &str, better: Better) -> String {
    let (good, bad) = match (better, unit) {
        (Better::Lower, "s") => ("faster", "slower"),
        (Better::Lower, _) => ("less", "more"),
        (Better::Higher, _) => ("more", "less"),
    };
    if advantage >= 1.0 {
        format!("{advantage:.2}x {good}")
    } else {
        format!("{:.2}x {bad}", 1.0 / advantage)
    }
}

/// The informative part of a long message: its first line, plus the last line that names an
/// error when that is a different one (the docker CLI prints notices before the error).
pub fn gist(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let first: String = lines
        .first()
        .copied()
        .unwrap_or("")
        .chars()
        .take(200)
        .collect();
    let err = lines.iter().skip(1).rev().find(|l| l.contains("rror"));
    match err {
        Some(e) => format!("{first} … {}", e.chars().take(200).collect::<String>()),
        None => first,
    }
}

/// Cell text for one subject in the summary table; reasons go to numbered notes (one note
/// per distinct text).
fn cell(r: &ScenarioResult, subject: &str, notes: &mut Vec<String>) -> String {
    let Some(s) = r.subject(subject) else {
        return "-".into();
    };
    let mut note = |kind: &str, text: &str| {
        let text = gist(text);
        let i = match notes.iter().position(|n| *n == text) {
            Some(i) => i,
            None => {
                notes.push(text);
                notes.len() - 1
            }
        };
        format!("{kind} [{}]", i + 1)
    };
    match (&s.status, s.summary) {
        (Status::Ok, Some(sum)) => fmt_triplet(sum.median, sum.min, sum.max, &r.meta.unit),
        (Status::Na { reason }, _) => note("n/a", reason),
        (Status::Error { message }, _) => note("error", message),
        (Status::Ok, None) => "-".into(),
    }
}

impl Group {
    /// The summary table: one row per scenario, median (min–max) per subject, then the
    /// reference's ratio against each other subject.
    pub fn summary_markdown(&self) -> String {
        let others: Vec<&String> = self
            .subjects
            .iter()
            .filter(|s| **s != self.reference)
            .collect();
        let mut s = String::new();
        s.push_str("| scenario |");
        for sub in &self.subjects {
            s.push_str(&format!(" {sub} |"));
        }
        for o in &others {
            s.push_str(&format!(" {}/{o} |", self.reference));
        }
        s.push_str(" goal |\n");
        s.push_str("|---|");
        for _ in 0..self.subjects.len() + others.len() + 1 {
            s.push_str("---|");
        }
        s.push('\n');
        let mut notes = Vec::new();
        for r in &self.results {
            s.push_str(&format!("| {} |", r.meta.title));
            for sub in &self.subjects {
                s.push_str(&format!(" {} |", cell(r, sub, &mut notes)));
            }
            for o in &others {
                let c = match r.comparison(o) {
                    Some(c) => format!(
                        "{:.2} ({})",
                        c.ratio,
                        advantage_words(c.advantage, &r.meta.unit, r.meta.better)
                    ),
                    None => "-".into(),
                };
                s.push_str(&format!(" {c} |"));
            }
            let goal = match (&r.meta.goal, &r.verdict) {
                (None, _) => String::new(),
                (Some(_), Some(v)) => {
                    format!("{} {}", v.text, if v.pass { "✅" } else { "❌ not met" })
                }
                (Some(_), None) => "not measured".into(),
            };
            s.push_str(&format!(" {goal} |\n"));
        }
        if !notes.is_empty() {
            s.push('\n');
            for (i, n) in notes.iter().enumerate() {
                s.push_str(&format!("[{}] {}  \n", i + 1, n.replace('|', "\\|")));
            }
        }
        s
    }
}

impl Report {
    /// The full markdown: machine, versions, setup, summary tables, per-scenario sections,
    /// leak check.
    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let mut s = String::new();
        s.push_str(&format!(
            "Run {} to {} (UTC).\n\n",
            self.started, self.finished
        ));
        s.push_str("| machine | |\n|---|---|\n");
        for (k, v) in m.rows() {
            s.push_str(&format!("| {k} | {v} |\n"));
        }
        s.push_str("\n| program | version |\n|---|---|\n");
        for (k, v) in &self.versions {
            s.push_str(&format!("| {k} | {} |\n", v.replace('|', "\\|")));
        }
        if !self.setup.is_empty() {
            s.push_str("\nSetup:\n\n");
            for l in &self.setup {
                s.push_str(&format!("- {l}\n"));
            }
        }
        for g in &self.groups {
            s.push_str(&format!("\n## {}\n\n{}\n\n", g.title, g.description));
            s.push_str(
                "Cells: median (min–max). Ratio: reference median / peer median, with how many \
                 times better or worse the reference is.\n\n",
            );
            s.push_str(&g.summary_markdown());
        }
        s.push_str("\n## Scenarios in detail\n");
        for g in &self.groups {
            for r in &g.results {
                s.push_str(&format!(
                    "\n### {} ({}, {} is better)\n\n{}\n\nRounds: {} timed after {} warm-up.\n\n",
                    r.meta.name,
                    r.meta.unit,
                    match r.meta.better {
                        Better::Lower => "lower",
                        Better::Higher => "higher",
                    },
                    r.meta.description,
                    r.meta.rounds,
                    r.meta.warmup
                ));
                s.push_str(
                    "| subject | status | runs | median | min | max |\n|---|---|---|---|---|---|\n",
                );
                for sub in &r.subjects {
                    let status = match &sub.status {
                        Status::Ok => "ok".to_string(),
                        Status::Na { reason } => format!("n/a: {}", one_line(reason)),
                        Status::Error { message } => format!("error: {}", one_line(message)),
                    };
                    let (med, min, max) = match sub.summary {
                        Some(x) => (
                            fmt_value(x.median, &r.meta.unit),
                            fmt_value(x.min, &r.meta.unit),
                            fmt_value(x.max, &r.meta.unit),
                        ),
                        None => ("-".into(), "-".into(), "-".into()),
                    };
                    s.push_str(&format!(
                        "| {} | {} | {} | {med} | {min} | {max} |\n",
                        sub.name,
                        status,
                        sub.samples.len()
                    ));
                }
            }
        }
        s.push_str("\n## Left behind\n\n");
        if self.leak_check.leaks.is_empty() {
            s.push_str("Nothing. Checked after the run:\n\n");
        } else {
            s.push_str("**Leaks found:**\n\n");
            for l in &self.leak_check.leaks {
                s.push_str(&format!("- {}\n", one_line(l)));
            }
            s.push_str("\nChecked:\n\n");
        }
        for c in &self.leak_check.checked {
            s.push_str(&format!("- {c}\n"));
        }
        if !self.leak_check.notes.is_empty() {
            s.push_str("\nNotes:\n\n");
            for n in &self.leak_check.notes {
                s.push_str(&format!("- {}\n", one_line(n)));
            }
        }
        s
    }
}

impl Report {
    /// BENCHMARKS.md: what this is, how to reproduce, the plot, then the report.
    pub fn benchmarks_document(&self, plot_path: &str) -> String {
        format!(
            "# Berth benchmarks\n\n\
             Written by `./tests/bench/run` (berth-bench) from its last full run; do not edit by \
             hand. Berth side by side with its peers, every scenario measured on all of them in \
             one run on one machine, rounds alternating. Absolute times drift between machines \
             and with the load of this shared build machine: compare the ratios.\n\n\
             Reproduce (Debian 12, root): `./tests/bench/run`. It installs the peers from \
             Debian's packages without starting any service, builds berthd (release), runs \
             every scenario and rewrites this file, `{plot_path}` and \
             `tests/bench/results/latest.json`. See README \"Benchmarks\" for options and for \
             adding scenarios.\n\n\
             ![ratios]({plot_path})\n\n{}",
            self.markdown()
        )
    }
}

/// First line, pipes escaped, at most 400 characters: for table cells.
fn one_line(s: &str) -> String {
    let l: String = s.lines().next().unwrap_or("").chars().take(400).collect();
    l.replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::tests::{fake, Recorder};
    use crate::scenario::{measure, Slot};

    fn group() -> Group {
        let a = fake("berthd", &[0.1, 0.12, 0.11]);
        let b = fake("dockerd", &[0.4, 0.5, 0.45]);
        let mut c = fake("podman", &[0.5]);
        c.na = Some("no | pipes".into());
        let r = measure(
            &Recorder::new(3, 0),
            &[Slot::Ready(&a), Slot::Ready(&b), Slot::Ready(&c)],
            "berthd",
        );
        Group {
            title: "Daemons".into(),
            description: "d".into(),
            reference: "berthd".into(),
            subjects: vec!["berthd".into(), "dockerd".into(), "podman".into()],
            results: vec![r],
        }
    }

    #[test]
    fn summary_table_has_cells_ratios_and_notes() {
        let md = group().summary_markdown();
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(
            lines[0],
            "| scenario | berthd | dockerd | podman | berthd/dockerd | berthd/podman | goal |"
        );
        assert_eq!(lines[1], "|---|---|---|---|---|---|---|");
        assert_eq!(
            lines[2],
            "| fake | 110.0 ms (100.0–120.0) | 450.0 ms (400.0–500.0) | n/a [1] | 0.24 (4.09x faster) | - |  |"
        );
        assert!(md.contains("[1] no \\| pipes"), "{md}");
    }

    #[test]
    fn gist_keeps_the_error_line() {
        assert_eq!(gist("one line"), "one line");
        assert_eq!(
            gist("`docker build` exited 1: DEPRECATED: legacy\n   notice\nError response from daemon: x\n"),
            "`docker build` exited 1: DEPRECATED: legacy … Error response from daemon: x"
        );
    }

    #[test]
    fn values_and_words() {
        assert_eq!(fmt_value(0.0042, "s"), "4.20 ms");
        assert_eq!(fmt_triplet(1.04, 0.938, 1.13, "s"), "1.04 s (0.94–1.13)");
        assert_eq!(
            fmt_triplet(392.0, 193.0, 592.0, "MB/s"),
            "392 MB/s (193–592)"
        );
        assert_eq!(fmt_value(0.133, "s"), "133.0 ms");
        assert_eq!(fmt_value(2.5, "s"), "2.50 s");
        assert_eq!(fmt_value(9.26, "MiB"), "9.3 MiB");
        assert_eq!(fmt_value(131.2, "MiB"), "131 MiB");
        assert_eq!(advantage_words(3.0, "s", Better::Lower), "3.00x faster");
        assert_eq!(advantage_words(0.5, "s", Better::Lower), "2.00x slower");
        assert_eq!(advantage_words(10.0, "MiB", Better::Lower), "10.00x less");
        assert_eq!(advantage_words(0.25, "MB/s", Better::Higher), "4.00x less");
    }

    #[test]
    fn full_report_markdown_and_json() {
        let report = Report {
            started: "2026-01-01T00:00:00Z".into(),
            finished: "2026-01-01T00:10:00Z".into(),
            machine: Machine::example(),
            versions: [("dockerd".to_string(), "Docker version 20.10.24".to_string())].into(),
            setup: vec!["each peer in its own netns".into()],
            leak_check: LeakCheck {
                checked: vec!["no process in the bench's namespaces".into()],
                leaks: vec![],
                notes: vec![],
            },
            groups: vec![group()],
        };
        let md = report.markdown();
        assert!(md.contains("| cores | 2 |"), "{md}");
        assert!(md.contains("| dockerd | Docker version 20.10.24 |"));
        assert!(md.contains("## Daemons"));
        assert!(md.contains("### fake (s, lower is better)"));
        assert!(
            md.contains("| podman | n/a: no \\| pipes | 0 | - | - | - |"),
            "{md}"
        );
        assert!(md.contains("Nothing. Checked after the run:"));
        let back: Report = serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
        assert_eq!(back.markdown(), md, "--replot renders the same report");
        let j = serde_json::to_value(&report).unwrap();
        let r = &j["groups"][0]["results"][0];
        assert_eq!(r["name"], "fake");
        assert_eq!(r["subjects"][0]["status"], "ok");
        assert_eq!(r["subjects"][0]["summary"]["median"], 0.11);
        assert_eq!(r["subjects"][2]["status"], "na");
        assert_eq!(r["subjects"][2]["reason"], "no | pipes");
        assert_eq!(r["comparisons"][0]["peer"], "dockerd");
        assert_eq!(j["machine"]["cores"], 2);
    }
}
