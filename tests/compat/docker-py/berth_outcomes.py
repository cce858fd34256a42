"""pytest plugin (loaded with -p berth_outcomes): one line per test, JSON, into $BERTH_OUTCOMES.

Each line is {"id": nodeid, "outcome": passed|failed|skipped|deselected, "detail": text}. A
test whose setup or teardown fails counts as failed; pytest's own skips (skipif, xfail) keep
their reason in "detail". The Rust test (tests/tests/docker_py.rs) compares these lines with
expected.txt, so the comparison logic lives in one place.
"""
import json
import os

_results = {}
_order = []
# Read at start: some docker-py tests change os.environ.
_path = os.environ.get("BERTH_OUTCOMES")


def _put(nodeid, outcome, detail):
    if nodeid not in _results:
        _order.append(nodeid)
        _results[nodeid] = (outcome, detail)
        return
    prev, _ = _results[nodeid]
    # failed beats skipped beats passed, whichever phase reported it.
    rank = {"passed": 0, "skipped": 1, "failed": 2}
    if rank[outcome] > rank[prev]:
        _results[nodeid] = (outcome, detail)


def _short(report):
    text = getattr(report, "longreprtext", "") or ""
    lines = [line for line in text.splitlines() if line.strip()]
    # The last "E ..." line is the assertion or exception; fall back to the last line.
    errs = [line for line in lines if line.startswith("E ")]
    return (errs[-1] if errs else (lines[-1] if lines else ""))[:300]


def pytest_runtest_logreport(report):
    if report.passed:
        _put(report.nodeid, "passed", "")
    elif report.failed:
        _put(report.nodeid, "failed", f"{report.when}: {_short(report)}")
    elif report.skipped:
        if hasattr(report, "wasxfail"):
            reason = f"xfail: {report.wasxfail}"
        elif isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
            reason = str(report.longrepr[2])
        else:
            reason = _short(report)
        _put(report.nodeid, "skipped", reason)


def pytest_deselected(items):
    for item in items:
        _put(item.nodeid, "passed", "")
        _results[item.nodeid] = ("deselected", "")


def pytest_sessionfinish(session, exitstatus):
    if not _path:
        return
    with open(_path, "w") as f:
        for nodeid in _order:
            outcome, detail = _results[nodeid]
            f.write(json.dumps({"id": nodeid, "outcome": outcome, "detail": detail}) + "\n")
