"""In-suite fuzzing of the loaders (issue 13): mutants of small valid files of every format,
as predictions and as references, evaluated by segeval in one process per batch and judged
by ``tests.fuzzer.judge`` (exit 0 or 3, no E_INTERNAL / E_WORKER_CRASHED / E_TIMEOUT, the
decoy outside the folder never opened, bounded peak RSS, and every case scored ok equal to
the reference libraries' reading recounted with NumPy).  Seeded: the same mutants every run.
The release run (thousands per format) is ``benchmarks/fuzz.py``.
"""

from __future__ import annotations

import pytest

from tests.fuzzer import FORMATS, Batch, build_batch, fuzz, judge, run_batch

PER_FORMAT = 150  # 1,500 mutants (10 formats), about 12 s on two cores


def test_fuzzed_files_in_every_format(tmp_path):
    summary = fuzz(tmp_path, seed=13, per_format=PER_FORMAT)
    assert not summary["findings"], "\n".join(summary["findings"][:20])
    assert set(summary["per_format"]) == set(FORMATS)
    for tally in summary["per_format"].values():
        assert tally["cases"] == PER_FORMAT
        assert tally["ok"] + tally["error"] == PER_FORMAT
    # the mutants reach the decoders: some are scored, most are refused
    assert sum(t["ok"] for t in summary["per_format"].values()) >= 50


@pytest.fixture
def small_batch(tmp_path) -> Batch:
    return build_batch(tmp_path, seed=7, per_format=4)


def test_the_judge_sees_a_wrong_count(small_batch):
    """The differential check itself: a report whose counts were altered is a finding."""
    outcome = run_batch(small_batch)
    assert judge(small_batch, outcome)["findings"] == []
    scored = [case for case in outcome["report"]["cases"] if case["status"] == "ok"]
    assert scored, "no case was scored: the check would test nothing"
    metrics = next(iter(scored[0]["metrics"].values()))
    metrics["tp"] += 1
    findings = judge(small_batch, outcome)["findings"]
    assert any(scored[0]["id"] in finding for finding in findings), findings


def test_the_judge_sees_the_decoy_crash_and_memory(small_batch):
    outcome = run_batch(small_batch)
    for change, words in (({"decoy_opened": True}, "decoy"), ({"code": 4}, "exit 4"),
                          ({"peak_rss_kib": 10**8}, "peak RSS")):
        findings = judge(small_batch, {**outcome, **change})["findings"]
        assert any(words in finding for finding in findings), (change, findings)
    crashed = {**outcome["report"]["cases"][0], "status": "error",
               "error_code": "E_WORKER_CRASHED", "message": "SIGSEGV"}
    report = {**outcome["report"], "cases": [crashed, *outcome["report"]["cases"][1:]]}
    findings = judge(small_batch, {**outcome, "report": report})["findings"]
    assert any("E_WORKER_CRASHED" in finding for finding in findings)
