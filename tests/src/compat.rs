//! Other projects' own test suites run against berthd (docker-py, moby's `integration/`): the
//! expected-outcome file every run is compared with, and the tally that turns outcomes into a
//! pass rate and a verdict. Any failure or skip the file does not list fails the run.

use std::io::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Not run at all.
    Deselect,
    /// Runs and is expected to fail; a pass is reported.
    Fail,
    /// Runs; either outcome accepted (timing-dependent).
    Flaky,
    /// The suite skips it itself; the reason says why that is right here.
    Skip,
    /// moby only: run with the daemon declared local (see tests/compat/moby/expected.txt). May
    /// be listed once more with another kind.
    Local,
}

#[derive(Debug)]
pub struct Entry {
    pub kind: Kind,
    pub id: String,
    pub reason: String,
}

/// `<kind> <test id> -- <reason>` lines; `#` comments and blank lines ignored. Every entry needs
/// a reason; `local` only where the suite has that notion.
pub fn parse_expected(text: &str, local_allowed: bool) -> Vec<Entry> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (head, reason) = line.split_once(" -- ").unwrap_or_else(|| panic!("expected.txt:{}: no ` -- reason`: {line}", n + 1));
        let (kind, id) = head.trim().split_once(' ').unwrap_or_else(|| panic!("expected.txt:{}: want `<kind> <id> -- <reason>`", n + 1));
        let kind = match kind {
            "deselect" => Kind::Deselect,
            "fail" => Kind::Fail,
            "flaky" => Kind::Flaky,
            "skip" => Kind::Skip,
            "local" if local_allowed => Kind::Local,
            k => panic!("expected.txt:{}: unknown kind {k}", n + 1),
        };
        assert!(!reason.trim().is_empty(), "expected.txt:{}: empty reason", n + 1);
        out.push(Entry { kind, id: id.trim().to_string(), reason: reason.trim().to_string() });
    }
    out
}

/// Uncaptured output, so a suite's summary shows in CI logs even when the test passes.
pub fn say(s: &str) {
    let _ = std::io::stderr().write_all(format!("{s}\n").as_bytes());
}

/// Outcomes against the expected file.
#[derive(Debug, Default)]
pub struct Tally {
    pub passed: usize,
    pub known: usize,
    pub skipped: usize,
    pub deselected: usize,
    pub regressions: Vec<String>,
    pub unlisted_skips: Vec<String>,
    pub now_pass: Vec<String>,
}

impl Tally {
    pub fn pass(&mut self, id: &str, entry: Option<&Entry>) {
        self.passed += 1;
        if let Some(e) = entry.filter(|e| e.kind == Kind::Fail) {
            self.now_pass.push(format!("{id} (listed: {})", e.reason));
        }
    }

    pub fn fail(&mut self, id: &str, detail: &str, entry: Option<&Entry>) {
        match entry.map(|e| e.kind) {
            Some(Kind::Fail) | Some(Kind::Flaky) => self.known += 1,
            _ => self.regressions.push(format!("{id}\n      {detail}")),
        }
    }

    pub fn skip(&mut self, id: &str, detail: &str, entry: Option<&Entry>) {
        self.skipped += 1;
        if entry.map(|e| e.kind) != Some(Kind::Skip) {
            self.unlisted_skips.push(format!("{id} ({detail})"));
        }
    }

    /// Tests that ran: passed, failed (known or not) and skipped.
    pub fn ran(&self) -> usize {
        self.passed + self.known + self.regressions.len() + self.skipped
    }

    /// `<suite>: P/R passed (N%), ...`
    pub fn summary(&self, suite: &str, secs: f64) -> String {
        let ran = self.ran();
        let rate = if ran == 0 { 0.0 } else { 100.0 * self.passed as f64 / ran as f64 };
        format!(
            "{suite}: {}/{ran} passed ({rate:.0}%), {} known failures, {} unexpected failures, {} skipped, {} deselected ({secs:.0} s)",
            self.passed,
            self.known,
            self.regressions.len(),
            self.skipped,
            self.deselected
        )
    }

    /// Prints the known failures that now pass (`tag: ...`, to be taken out of `expected`).
    pub fn report_now_passing(&self, tag: &str, expected: &str) {
        for id in &self.now_pass {
            say(&format!("{tag}: known failure now PASSES (remove it from {expected}): {id}"));
        }
    }

    /// Fails the test on anything the expected file does not list; `context` follows the lists.
    pub fn check(&self, summary: &str, context: &str) {
        assert!(
            self.regressions.is_empty() && self.unlisted_skips.is_empty(),
            "{summary}\nunexpected failures ({}):\n  {}\nskips not listed in expected.txt ({}):\n  {}\n{context}",
            self.regressions.len(),
            self.regressions.join("\n  "),
            self.unlisted_skips.len(),
            self.unlisted_skips.join("\n  "),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kinds_and_tallies_against_them() {
        let e = parse_expected("# c\n\nfail a -- why\nflaky b -- timing\nskip c -- itself\nlocal d -- host\n", true);
        assert_eq!(e.iter().map(|e| e.kind).collect::<Vec<_>>(), [Kind::Fail, Kind::Flaky, Kind::Skip, Kind::Local]);
        let find = |id: &str| e.iter().find(|e| e.id == id);
        let mut t = Tally::default();
        t.pass("a", find("a"));
        t.fail("b", "x", find("b"));
        t.fail("z", "boom", find("z"));
        t.skip("c", "x", find("c"));
        t.skip("y", "why", find("y"));
        assert_eq!((t.passed, t.known, t.skipped, t.ran()), (1, 1, 2, 5));
        assert_eq!((t.now_pass.len(), t.regressions.len(), t.unlisted_skips.len()), (1, 1, 1));
        assert!(t.summary("s", 1.0).starts_with("s: 1/5 passed (20%)"));
        assert!(std::panic::catch_unwind(|| t.check("s", "")).is_err());
        assert!(std::panic::catch_unwind(|| parse_expected("local d -- host", false)).is_err());
        assert!(std::panic::catch_unwind(|| parse_expected("fail a", true)).is_err());
    }
}
