//! The extension point: a [`Scenario`] measures one thing on every [`Subject`] of a group.
//!
//! A subject is one column of a comparison: a daemon peer (berthd, dockerd, podman, driven by
//! the same docker CLI) or an OCI runtime (berth's, crun, runc). A scenario says what it
//! measures ([`Meta`]), gets a subject ready without timing it ([`Scenario::prepare`]), takes one
//! timed sample ([`Scenario::sample`]) and cleans up ([`Scenario::cleanup`]). [`measure`] runs it:
//! prepare every subject, warm-up rounds, then rounds in rotating order (see
//! [`crate::schedule`]), and summarizes. A feature a subject lacks is reported as n/a with the
//! reason ([`Skip::NotApplicable`]); a failure is reported as an error with its message. Neither
//! is ever turned into a number.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::schedule::round_order;
use crate::stats::{summarize, Summary};

/// Which direction is better for a scenario's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    /// Times, memory.
    Lower,
    /// Throughput.
    Higher,
}

/// What a scenario measures, for tables and JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    /// Short stable id, used on the command line (`--scenarios run-rm,...`).
    pub name: String,
    /// One line for the summary table, e.g. "`docker run --rm busybox true`".
    pub title: String,
    /// How exactly it is measured (what is timed, what is not).
    pub description: String,
    /// "s", "MiB", "MB/s".
    pub unit: String,
    pub better: Better,
    /// Timed rounds (each measures every subject once).
    pub rounds: usize,
    /// Untimed rounds first (page cache, lazily started helpers).
    pub warmup: usize,
    /// The target the team set for the reference, if any (checked into `verdict`).
    #[serde(default)]
    pub goal: Option<Goal>,
}

/// A target for the reference subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Goal {
    /// At least `times` better than `peer` (its advantage over that peer >= times).
    Beat { peer: String, times: f64 },
    /// The reference's median at most `value`, in the scenario's unit.
    AtMost { value: f64 },
    /// The reference at most `times` worse than `peer` (1 / advantage <= times): for a floor
    /// the reference cannot beat, e.g. a VM boot within 1.5x of a bare kernel boot.
    Within { peer: String, times: f64 },
}

/// Whether the goal was met in this run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub pass: bool,
    /// e.g. "≥ 4x vs dockerd: 2.26x".
    pub text: String,
}

/// One measurement, plus optional facts for the JSON (e.g. per-process RSS).
#[derive(Debug, Clone)]
pub struct Sample {
    pub value: f64,
    pub detail: Option<serde_json::Value>,
}

impl From<f64> for Sample {
    fn from(value: f64) -> Sample {
        Sample {
            value,
            detail: None,
        }
    }
}

/// Why a subject is not measured in a scenario.
#[derive(Debug)]
pub enum Skip {
    /// The feature does not exist in this subject (yet): reported as n/a with this reason.
    NotApplicable(String),
    /// Getting ready failed: reported as an error.
    Failed(Error),
}

impl From<Error> for Skip {
    fn from(e: Error) -> Skip {
        Skip::Failed(e)
    }
}

/// One column of a comparison.
pub trait Subject: Sync {
    fn name(&self) -> &str;
}

/// A benchmark scenario over subjects of type `S`. Implement this (and list it in
/// [`crate::scenarios`]) to add a scenario; see README "Benchmarks".
pub trait Scenario<S: ?Sized>: Sync {
    fn meta(&self) -> Meta;
    /// Untimed: check the feature exists and set up what the samples need.
    fn prepare(&self, _subject: &S) -> Result<(), Skip> {
        Ok(())
    }
    /// One timed measurement. `round` counts from 0 over warm-up and timed rounds.
    fn sample(&self, subject: &S, round: usize) -> Result<Sample, Error>;
    /// Untimed: remove what `prepare` and `sample` left (containers, images). Called for
    /// every subject whose `prepare` ran, also after a failure.
    fn cleanup(&self, _subject: &S) {}
}

/// A subject ready to measure, or the reason it is not there at all (a daemon that did not
/// start, a runtime that is not installed or not built yet).
pub enum Slot<'a, S: ?Sized> {
    Ready(&'a S),
    Missing { name: String, reason: String },
}

impl<S: Subject + ?Sized> Slot<'_, S> {
    pub fn name(&self) -> &str {
        match self {
            Slot::Ready(s) => s.name(),
            Slot::Missing { name, .. } => name,
        }
    }
}

/// The outcome for one subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Not applicable: the feature is missing; `reason` says which and where.
    Na {
        reason: String,
    },
    /// It broke; samples taken before the failure are kept in `samples` but not summarized.
    Error {
        message: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubjectResult {
    pub name: String,
    #[serde(flatten)]
    pub status: Status,
    pub samples: Vec<f64>,
    /// Only for `Status::Ok`.
    pub summary: Option<Summary>,
    pub details: Vec<serde_json::Value>,
}

/// The reference subject against one other subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub peer: String,
    /// reference median / peer median.
    pub ratio: f64,
    /// How many times better the reference is (> 1: better): 1/ratio when lower is better,
    /// ratio when higher is better.
    pub advantage: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioResult {
    #[serde(flatten)]
    pub meta: Meta,
    pub reference: String,
    pub subjects: Vec<SubjectResult>,
    pub comparisons: Vec<Comparison>,
    /// `None` without a goal, or when the numbers it needs are missing.
    #[serde(default)]
    pub verdict: Option<Verdict>,
}

impl ScenarioResult {
    pub fn subject(&self, name: &str) -> Option<&SubjectResult> {
        self.subjects.iter().find(|s| s.name == name)
    }

    pub fn comparison(&self, peer: &str) -> Option<&Comparison> {
        self.comparisons.iter().find(|c| c.peer == peer)
    }

    /// A scenario that cannot run on anyone yet (e.g. the feature has not landed anywhere):
    /// every subject n/a with its reason.
    pub fn not_applicable(meta: Meta, reference: &str, reasons: &[(&str, String)]) -> Self {
        let subjects = reasons
            .iter()
            .map(|(name, reason)| SubjectResult {
                name: name.to_string(),
                status: Status::Na {
                    reason: reason.clone(),
                },
                samples: Vec::new(),
                summary: None,
                details: Vec::new(),
            })
            .collect();
        ScenarioResult {
            meta,
            reference: reference.into(),
            subjects,
            comparisons: Vec::new(),
            verdict: None,
        }
    }

    /// Summaries and comparisons from the collected samples.
    fn finish(&mut self) {
        for s in &mut self.subjects {
            s.summary = match s.status {
                Status::Ok => summarize(&s.samples),
                _ => None,
            };
            if s.status == Status::Ok && s.summary.is_none() {
                s.status = Status::Error {
                    message: "no samples".into(),
                };
            }
        }
        self.comparisons = compare(&self.subjects, &self.reference, self.meta.better);
        self.verdict = self.meta.goal.as_ref().and_then(|g| self.check(g));
    }

    fn check(&self, goal: &Goal) -> Option<Verdict> {
        match goal {
            Goal::Beat { peer, times } => {
                let c = self.comparison(peer)?;
                Some(Verdict {
                    pass: c.advantage >= *times,
                    text: format!("≥ {times}x vs {peer}: {:.2}x", c.advantage),
                })
            }
            Goal::Within { peer, times } => {
                let c = self.comparison(peer)?;
                let worse = 1.0 / c.advantage;
                Some(Verdict {
                    pass: worse <= *times,
                    text: format!("≤ {times}x of {peer}: {worse:.2}x"),
                })
            }
            Goal::AtMost { value } => {
                let m = self.subject(&self.reference)?.summary?.median;
                Some(Verdict {
                    pass: m <= *value,
                    text: format!("≤ {value} {}: {m:.1}", self.meta.unit),
                })
            }
        }
    }
}

/// Ratios of the reference's median against every other subject with a median.
pub fn compare(subjects: &[SubjectResult], reference: &str, better: Better) -> Vec<Comparison> {
    let Some(r) = subjects
        .iter()
        .find(|s| s.name == reference)
        .and_then(|s| s.summary)
    else {
        return Vec::new();
    };
    subjects
        .iter()
        .filter(|s| s.name != reference)
        .filter_map(|s| {
            let p = s.summary?;
            if p.median <= 0.0 || r.median <= 0.0 {
                return None;
            }
            let ratio = r.median / p.median;
            let advantage = match better {
                Better::Lower => 1.0 / ratio,
                Better::Higher => ratio,
            };
            Some(Comparison {
                peer: s.name.clone(),
                ratio,
                advantage,
            })
        })
        .collect()
}

/// Run `scenario` on every slot: prepare, `warmup` untimed rounds, `rounds` timed rounds in
/// rotating order, cleanup. Progress goes to stderr.
pub fn measure<S: Subject + ?Sized>(
    scenario: &dyn Scenario<S>,
    slots: &[Slot<'_, S>],
    reference: &str,
) -> ScenarioResult {
    let meta = scenario.meta();
    let mut subjects: Vec<SubjectResult> = slots
        .iter()
        .map(|slot| SubjectResult {
            name: slot.name().to_string(),
            status: match slot {
                Slot::Ready(_) => Status::Ok,
                Slot::Missing { reason, .. } => Status::Na {
                    reason: reason.clone(),
                },
            },
            samples: Vec::new(),
            summary: None,
            details: Vec::new(),
        })
        .collect();
    let mut prepared = vec![false; slots.len()];
    for (i, slot) in slots.iter().enumerate() {
        let Slot::Ready(s) = slot else { continue };
        prepared[i] = true;
        match scenario.prepare(*s) {
            Ok(()) => {}
            Err(Skip::NotApplicable(reason)) => {
                eprintln!("{} {}: n/a: {reason}", meta.name, s.name());
                subjects[i].status = Status::Na { reason };
            }
            Err(Skip::Failed(e)) => {
                eprintln!("{} {}: prepare failed: {e}", meta.name, s.name());
                subjects[i].status = Status::Error {
                    message: format!("prepare: {e}"),
                };
            }
        }
    }
    let total = meta.warmup + meta.rounds;
    for round in 0..total {
        let timed = round >= meta.warmup;
        for i in round_order(slots.len(), round) {
            let Slot::Ready(s) = &slots[i] else { continue };
            if subjects[i].status != Status::Ok {
                continue;
            }
            match scenario.sample(*s, round) {
                Ok(sample) if sample.value.is_finite() => {
                    if timed {
                        eprintln!(
                            "{} {}/{} {}: {:.4} {}",
                            meta.name,
                            round - meta.warmup + 1,
                            meta.rounds,
                            s.name(),
                            sample.value,
                            meta.unit
                        );
                        subjects[i].samples.push(sample.value);
                        if let Some(d) = sample.detail {
                            subjects[i].details.push(d);
                        }
                    }
                }
                Ok(sample) => {
                    subjects[i].status = Status::Error {
                        message: format!("sample is not a number: {}", sample.value),
                    };
                }
                Err(e) => {
                    eprintln!("{} {}: {e}", meta.name, s.name());
                    subjects[i].status = Status::Error {
                        message: e.to_string(),
                    };
                }
            }
        }
    }
    for (i, slot) in slots.iter().enumerate() {
        if let (Slot::Ready(s), true) = (slot, prepared[i]) {
            scenario.cleanup(*s);
        }
    }
    let mut result = ScenarioResult {
        meta,
        reference: reference.into(),
        subjects,
        comparisons: Vec::new(),
        verdict: None,
    };
    result.finish();
    result
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A fake subject whose samples are scripted; records every call in order.
    pub struct Fake {
        pub name: String,
        pub values: Vec<f64>,
        pub na: Option<String>,
        pub fail_at: Option<usize>,
    }

    impl Subject for Fake {
        fn name(&self) -> &str {
            &self.name
        }
    }

    pub fn fake(name: &str, values: &[f64]) -> Fake {
        Fake {
            name: name.into(),
            values: values.to_vec(),
            na: None,
            fail_at: None,
        }
    }

    pub struct Recorder {
        pub calls: Mutex<Vec<String>>,
        pub rounds: usize,
        pub warmup: usize,
        pub better: Better,
        pub goal: Option<Goal>,
    }

    impl Recorder {
        pub fn new(rounds: usize, warmup: usize) -> Recorder {
            Recorder {
                calls: Mutex::new(Vec::new()),
                rounds,
                warmup,
                better: Better::Lower,
                goal: None,
            }
        }
    }

    impl Scenario<Fake> for Recorder {
        fn meta(&self) -> Meta {
            Meta {
                name: "fake".into(),
                title: "fake".into(),
                description: "scripted".into(),
                unit: "s".into(),
                better: self.better,
                rounds: self.rounds,
                warmup: self.warmup,
                goal: self.goal.clone(),
            }
        }
        fn prepare(&self, s: &Fake) -> Result<(), Skip> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("prepare {}", s.name));
            match &s.na {
                Some(r) => Err(Skip::NotApplicable(r.clone())),
                None => Ok(()),
            }
        }
        fn sample(&self, s: &Fake, round: usize) -> Result<Sample, Error> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("sample {} {round}", s.name));
            if s.fail_at == Some(round) {
                return Err(Error::Unexpected("boom".into()));
            }
            Ok(s.values[round % s.values.len()].into())
        }
        fn cleanup(&self, s: &Fake) {
            self.calls
                .lock()
                .unwrap()
                .push(format!("cleanup {}", s.name));
        }
    }

    #[test]
    fn alternates_warms_up_and_summarizes() {
        let a = fake("a", &[9.0, 1.0, 2.0, 3.0]);
        let b = fake("b", &[9.0, 2.0, 4.0, 6.0]);
        let c = fake("c", &[9.0, 4.0, 8.0, 12.0]);
        let rec = Recorder::new(3, 1);
        let slots = [Slot::Ready(&a), Slot::Ready(&b), Slot::Ready(&c)];
        let r = measure(&rec, &slots, "a");
        let calls = rec.calls.lock().unwrap().clone();
        assert_eq!(
            calls,
            [
                "prepare a",
                "prepare b",
                "prepare c", //
                "sample a 0",
                "sample b 0",
                "sample c 0", // warm-up, not recorded
                "sample b 1",
                "sample c 1",
                "sample a 1", //
                "sample c 2",
                "sample a 2",
                "sample b 2", //
                "sample a 3",
                "sample b 3",
                "sample c 3", //
                "cleanup a",
                "cleanup b",
                "cleanup c",
            ]
        );
        assert_eq!(r.subject("a").unwrap().samples, [1.0, 2.0, 3.0]);
        assert_eq!(r.subject("b").unwrap().summary.unwrap().median, 4.0);
        let cb = r.comparison("b").unwrap();
        assert_eq!(cb.ratio, 0.5);
        assert_eq!(cb.advantage, 2.0);
        assert_eq!(r.comparison("c").unwrap().ratio, 0.25);
        assert!(r.comparison("a").is_none());
    }

    #[test]
    fn not_applicable_missing_and_failed_are_never_numbers() {
        let a = fake("a", &[1.0]);
        let mut b = fake("b", &[2.0]);
        b.na = Some("no builder".into());
        let mut c = fake("c", &[3.0]);
        c.fail_at = Some(1);
        let rec = Recorder::new(3, 0);
        let slots = [
            Slot::Ready(&a),
            Slot::Ready(&b),
            Slot::Ready(&c),
            Slot::Missing {
                name: "d".into(),
                reason: "not installed".into(),
            },
        ];
        let r = measure(&rec, &slots, "a");
        assert_eq!(r.subject("a").unwrap().status, Status::Ok);
        assert_eq!(
            r.subject("b").unwrap().status,
            Status::Na {
                reason: "no builder".into()
            }
        );
        assert!(r.subject("b").unwrap().summary.is_none());
        let c = r.subject("c").unwrap();
        assert!(matches!(&c.status, Status::Error { message } if message == "boom"));
        assert_eq!(c.samples, [3.0], "samples before the failure are kept");
        assert!(c.summary.is_none(), "but not summarized");
        assert_eq!(
            r.subject("d").unwrap().status,
            Status::Na {
                reason: "not installed".into()
            }
        );
        assert!(r.comparisons.is_empty(), "nobody else has a median");
        let calls = rec.calls.lock().unwrap().clone();
        assert!(!calls.iter().any(|c| c.starts_with("sample b")));
        assert_eq!(
            calls.iter().filter(|c| c.starts_with("sample c")).count(),
            2
        );
        assert!(calls.contains(&"cleanup b".to_string()));
    }

    #[test]
    fn goals_give_verdicts() {
        let a = fake("a", &[1.0]);
        let b = fake("b", &[3.0]);
        let mut rec = Recorder::new(1, 0);
        rec.goal = Some(Goal::Beat {
            peer: "b".into(),
            times: 4.0,
        });
        let r = measure(&rec, &[Slot::Ready(&a), Slot::Ready(&b)], "a");
        let v = r.verdict.unwrap();
        assert!(!v.pass);
        assert_eq!(v.text, "≥ 4x vs b: 3.00x");
        rec.goal = Some(Goal::Beat {
            peer: "b".into(),
            times: 2.0,
        });
        assert!(
            measure(&rec, &[Slot::Ready(&a), Slot::Ready(&b)], "a")
                .verdict
                .unwrap()
                .pass
        );
        // Within: a (1.0) is 3x worse than b (3.0) when higher is better.
        rec.goal = Some(Goal::Within {
            peer: "b".into(),
            times: 1.5,
        });
        rec.better = Better::Higher;
        let v = measure(&rec, &[Slot::Ready(&a), Slot::Ready(&b)], "a")
            .verdict
            .unwrap();
        assert!(!v.pass && v.text == "≤ 1.5x of b: 3.00x", "{v:?}");
        rec.better = Better::Lower;
        let v = measure(&rec, &[Slot::Ready(&a), Slot::Ready(&b)], "a")
            .verdict
            .unwrap();
        assert!(v.pass && v.text == "≤ 1.5x of b: 0.33x", "{v:?}");
        let slower = fake("a", &[4.0]);
        let v = measure(&rec, &[Slot::Ready(&slower), Slot::Ready(&b)], "a")
            .verdict
            .unwrap();
        assert!(v.pass && v.text == "≤ 1.5x of b: 1.33x", "{v:?}");
        let slowest = fake("a", &[6.0]);
        let v = measure(&rec, &[Slot::Ready(&slowest), Slot::Ready(&b)], "a")
            .verdict
            .unwrap();
        assert!(!v.pass && v.text == "≤ 1.5x of b: 2.00x", "{v:?}");
        rec.goal = Some(Goal::AtMost { value: 20.0 });
        let v = measure(&rec, &[Slot::Ready(&a)], "a").verdict.unwrap();
        assert!(v.pass && v.text == "≤ 20 s: 1.0", "{v:?}");
        // No number to judge: no verdict rather than a made-up one.
        rec.goal = Some(Goal::Beat {
            peer: "c".into(),
            times: 1.0,
        });
        assert!(measure(&rec, &[Slot::Ready(&a), Slot::Ready(&b)], "a")
            .verdict
            .is_none());
    }

    #[test]
    fn higher_is_better_flips_advantage_and_missing_reference_gives_no_ratio() {
        let a = fake("a", &[200.0]);
        let b = fake("b", &[100.0]);
        let mut rec = Recorder::new(1, 0);
        rec.better = Better::Higher;
        let r = measure(&rec, &[Slot::Ready(&a), Slot::Ready(&b)], "a");
        let c = r.comparison("b").unwrap();
        assert_eq!((c.ratio, c.advantage), (2.0, 2.0));
        let r = measure(
            &rec,
            &[
                Slot::Missing {
                    name: "a".into(),
                    reason: "not built".into(),
                },
                Slot::Ready(&b),
            ],
            "a",
        );
        assert!(r.comparisons.is_empty());
        assert_eq!(r.subject("b").unwrap().summary.unwrap().median, 100.0);
    }
}
