"""--scheduler: cases counted on a Dask distributed cluster give the very same report.

A LocalCluster (two worker processes) is started by the test; the per-case work is the
same pure function as locally and counts add, so every number must be identical.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import segeval
from segeval.verdicts.leaderboard import grade

distributed = pytest.importorskip("distributed", reason="segeval[dask] is not installed")
SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


@pytest.fixture(scope="module")
def scheduler():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


def numbers(report) -> dict:
    data = report.to_dict()
    data.pop("run")
    return data


@pytest.mark.parametrize("folder", ["nifti3d", "png2d"])
def test_cluster_report_equals_local_report(scheduler, folder):
    local = segeval.evaluate(SAMPLE / folder / "pred", SAMPLE / folder / "gt", workers=1)
    remote = segeval.evaluate(SAMPLE / folder / "pred", SAMPLE / folder / "gt",
                              scheduler=scheduler)
    assert remote.run["scheduler"] == scheduler
    assert numbers(remote) == numbers(local)


def test_cluster_values_equal_local_values(scheduler):
    """Boundary and lesion metrics (per case × class values) travel back from the cluster
    as the counts do: the same report, value for value."""
    options = {"boundary_metrics": ["hd", "hd95", "assd", "masd", "nsd"],
               "lesion_metrics": ["lesion_f1", "lesion_dice", "pq"]}
    local = segeval.evaluate(SAMPLE / "nifti3d" / "pred", SAMPLE / "nifti3d" / "gt",
                             workers=1, **options)
    remote = segeval.evaluate(SAMPLE / "nifti3d" / "pred", SAMPLE / "nifti3d" / "gt",
                              scheduler=scheduler, **options)
    assert numbers(remote) == numbers(local)
    hd95 = [case["metrics"]["1"]["hd95"] for case in local.to_dict()["cases"]]
    assert any(value > 0 for value in hd95)  # the values compared are there


def test_cluster_keeps_case_errors(scheduler, tmp_path):
    pred = tmp_path / "pred"
    shutil.copytree(SAMPLE / "png2d" / "pred", pred)
    (pred / "img_003.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    remote = segeval.evaluate(pred, SAMPLE / "png2d" / "gt", scheduler=scheduler)
    local = segeval.evaluate(pred, SAMPLE / "png2d" / "gt", workers=1)
    assert numbers(remote) == numbers(local)
    assert [c.error_code for c in remote.cases if c.error_code] == ["E_UNREADABLE"]


def test_grading_on_a_cluster_equals_local_grading(scheduler, tmp_path):
    subs = tmp_path / "subs"
    shutil.copytree(SAMPLE / "nifti3d" / "pred", subs / "team_a")
    shutil.copytree(SAMPLE / "nifti3d" / "gt", subs / "team_b")
    (subs / "team_b" / "case_005.nrrd").unlink()  # a missing case: scored empty
    local = grade(subs, SAMPLE / "nifti3d" / "gt", tmp_path / "local", workers=1).rows()
    remote = grade(subs, SAMPLE / "nifti3d" / "gt", tmp_path / "remote",
                   scheduler=scheduler).rows()
    assert remote == local


def test_unreachable_scheduler_is_a_usage_error(monkeypatch):
    monkeypatch.setattr("segeval.run.runner.DASK_CONNECT_TIMEOUT", 2)
    with pytest.raises(segeval.UsageError):
        segeval.evaluate(SAMPLE / "png2d" / "pred", SAMPLE / "png2d" / "gt",
                         scheduler="tcp://127.0.0.1:9")


def test_grading_with_an_unreachable_scheduler_stops_instead_of_failing_every_team(
        monkeypatch, tmp_path):
    """Before: every team was listed invalid ("cannot connect") and the leaderboard written
    with exit 0.  The cluster is checked once, before any team."""
    monkeypatch.setattr("segeval.run.runner.DASK_CONNECT_TIMEOUT", 2)
    subs = tmp_path / "subs"
    shutil.copytree(SAMPLE / "png2d" / "pred", subs / "team_a")
    with pytest.raises(segeval.UsageError, match="cannot connect"):
        grade(subs, SAMPLE / "png2d" / "gt", tmp_path / "out", scheduler="tcp://127.0.0.1:9")
    assert not (tmp_path / "out" / "leaderboard.json").exists()


def test_a_case_whose_cluster_worker_dies_scores_as_empty_in_grading(scheduler, monkeypatch,
                                                                      tmp_path):
    """--invalid empty on a cluster: a case that keeps killing its Dask worker keeps
    E_WORKER_CRASHED and is scored as an empty prediction (reference read locally), as in a
    local run; it does not drop out of the mean."""
    import numpy as np
    from PIL import Image

    from segeval.run import runner

    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    mask = np.zeros((6, 6), np.uint8)
    mask[1:4, 1:4] = 1
    for case in ("a", "b"):
        Image.fromarray(mask).save(gt / f"{case}.png")
        Image.fromarray(mask).save(pred / f"{case}.png")
    real = runner.evaluate_on_dask

    def one_dies(cases, *args, **kwargs):  # as if case a's worker kept dying
        results = real(cases, *args, **kwargs)
        return [runner._from_failure(c, runner.Failure("crashed", "KilledWorker"))
                if c.id == "a" else r for c, r in zip(cases, results, strict=True)]

    monkeypatch.setattr(runner, "evaluate_on_dask", one_dies)
    report = segeval.evaluate(pred, gt, scheduler=scheduler, labels=[1], invalid="empty")
    crashed, fine = report.cases
    assert crashed.error_code == "E_WORKER_CRASHED" and crashed.counts is not None
    assert fine.status == "ok"
    assert report.reductions.macro_imagewise["dice"] == 0.5  # (0 + 1) / 2
