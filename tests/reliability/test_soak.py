"""A soak under every simulator fault at once; invariants checked against the server's records."""

from __future__ import annotations

from .soak import run_soak

RUNS = 300
FAULTS = ("500_before_create", "500_after_create", "dropped_answers", "429_rate_limited", "slowed_requests",
          "runs_failed_by_server", "insufficient_credits")


def test_soak_under_every_fault(tmp_path):
    report = run_soak(RUNS, tmp_path, seed=12)
    assert report.problems() == [], report.as_dict()
    assert [k for k in FAULTS if report.faults[k] == 0] == [], report.faults  # every fault really happened
    assert report.server_runs >= RUNS * 0.8 and sum(report.rows.values()) == RUNS
    assert report.rows.get("skipped", 0) >= 1  # credits ran out: the rest of the sweep was skipped, not lost
    assert report.charged_server > 0 and abs(report.charged_ledger - report.charged_server) < 0.005
