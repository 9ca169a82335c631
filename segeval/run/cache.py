"""Per-case count cache: re-running an evaluation (a grading run after new submissions
arrive, or after a crash) evaluates only what is new.

A cached entry is keyed by the SHA-256 of both files' bytes, the options that change counts,
and segeval's version, so it can never serve numbers for other data or other rules.  Only
deterministic outcomes are cached: time-outs, crashed workers, interruptions and internal
errors are evaluated again next time.  Entries are small JSON files written atomically.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from segeval import errors
from segeval.config import EvalConfig, fields_that_change
from segeval.core.counts import CaseCounts, ChannelCounts, Confusion
from segeval.results import CaseResult, write_text_atomic
from segeval.run.cases import CaseSource
from segeval.version import __version__

TRANSIENT = {errors.E_TIMEOUT, errors.E_WORKER_CRASHED, errors.E_INTERRUPTED,
             errors.E_INTERNAL}
HASH_BLOCK = 1 << 20


class CountCache:
    """A folder of cached case results for one set of count options."""

    def __init__(self, folder: str | Path, config: EvalConfig) -> None:
        self.folder = Path(folder)
        # the options tagged as changing counts (config.py); the others act after counting
        options = {name: getattr(config, name) for name in fields_that_change("counts")}
        text = json.dumps([__version__, options], sort_keys=True, default=str)
        self.options_digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        self.hits = 0

    def key(self, source: CaseSource) -> str | None:
        """The entry name for a case read from files; None for in-memory arrays."""
        if not isinstance(source.reference, (str, Path)):
            return None
        try:
            parts = [file_digest(source.reference),
                     "none" if source.prediction is None else file_digest(source.prediction)]
        except OSError:
            return None  # unreadable: let pre-flight name the problem
        problem = "" if source.problem is None else source.problem[0]
        text = "|".join([*parts, problem, self.options_digest])
        return hashlib.sha256(text.encode()).hexdigest()

    def get(self, key: str | None, source: CaseSource) -> CaseResult | None:
        if key is None:
            return None
        path = self.folder / f"{key}.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            result = result_from_dict(data)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        # names may differ (a resubmission with the same bytes); the numbers may not
        result.id, result.prediction, result.reference = (
            source.id, source.prediction_name, source.reference_name)
        self.hits += 1
        return result

    def put(self, key: str | None, result: CaseResult) -> None:
        if key is None or result.error_code in TRANSIENT:
            return
        write_text_atomic(self.folder / f"{key}.json", json.dumps(result_to_dict(result)))


def file_digest(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def result_to_dict(result: CaseResult) -> dict[str, Any]:
    data = asdict(result)
    data["counts"] = counts_to_dict(result.counts)
    return data


def result_from_dict(data: dict[str, Any]) -> CaseResult:
    data = dict(data)
    data["counts"] = counts_from_dict(data["counts"])
    for name in ("shape", "spacing"):
        if data.get(name) is not None:
            data[name] = tuple(data[name])
    return CaseResult(**data)


def counts_to_dict(counts: CaseCounts | None) -> dict[str, Any] | None:
    if counts is None:
        return None
    sweep = None if counts.sweep is None else counts.sweep.tolist()
    if isinstance(counts, Confusion):
        return {"kind": "confusion", "sweep": sweep, **counts.to_dict()}
    return {"kind": "channels", "soft": counts.soft, "sweep": sweep, **counts.to_dict()}


def counts_from_dict(data: dict[str, Any] | None) -> CaseCounts | None:
    if data is None:
        return None
    sweep = None if data.get("sweep") is None else np.asarray(data["sweep"], dtype=np.int64)
    if data["kind"] == "confusion":
        return Confusion(np.asarray(data["reference"], dtype=np.int64),
                         np.asarray(data["prediction"], dtype=np.int64),
                         np.asarray(data["count"], dtype=np.int64), sweep=sweep)
    dtype = np.float64 if data["soft"] else np.int64
    tp, fp, fn, tn = (np.asarray(data[k], dtype=dtype) for k in ("tp", "fp", "fn", "tn"))
    return ChannelCounts(tp, fp, fn, tn, soft=bool(data["soft"]), sweep=sweep)
