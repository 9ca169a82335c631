"""``evaluate(prediction, reference, **options) -> Report``: the one entry point.

The CLI calls exactly this function.  Steps: pair the inputs into cases, count each case
once (load → interpret → count), decide the classes from the counts, build the count
table, reduce it, and wrap everything in a :class:`~segeval.results.Report`.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from segeval import errors
from segeval.config import EvalConfig
from segeval.core.counts import ClassSpec, Confusion, CountTable
from segeval.core.reduce import ValueReductions, reduce_counts, reduce_values
from segeval.core.relabel import label_mapping, relabel_confusion
from segeval.core.sweep import sweep_block
from segeval.core.warnings import Declared, PairingFacts, label_facts, run_warnings
from segeval.errors import SegevalError, UsageError
from segeval.results import CaseResult, Report
from segeval.run.cases import Pairing, pair_inputs
from segeval.run.runner import Progress, default_case_timeout, default_workers, run_cases
from segeval.version import __version__

DEVICES_HELP = "auto, cpu, cuda, cuda:N or mps"


def evaluate(
    prediction: Any,
    reference: Any,
    *,
    device: str = "auto",
    workers: int | None = None,
    case_timeout: float | None = None,
    cache: str | Path | None = None,
    scheduler: str | None = None,
    progress: Progress | None = None,
    regions_from: str = "--region",
    **options: Any,
) -> Report:
    """Evaluate predictions against references.

    Parameters
    ----------
    prediction, reference:
        Two paths (files or folders), two arrays (NumPy or torch), two lists of arrays
        (paired by position, ids ``case_000``…) or two dicts ``{case_id: array}``.
    device:
        ``auto`` (default) counts where the data already is: on the CPU for files and NumPy
        arrays, on a tensor's own device for torch tensors.  ``cpu``, ``cuda``, ``cuda:N``
        and ``mps`` force a device; results are identical on every device.
    workers:
        Processes (CPU) or loader threads (GPU) working on cases in parallel; default: the
        usable cores, at most 8.  Results do not depend on it.
    case_timeout:
        Seconds one case may take (files on the CPU); a case past it is stopped and recorded
        as ``E_TIMEOUT``.  A case whose worker process dies is ``E_WORKER_CRASHED``.
    cache:
        A folder of per-case counts keyed by the files' contents and the counting options
        (see :mod:`segeval.run.cache`); cases found there are not read again.
    scheduler:
        The address of a Dask distributed scheduler (``segeval[dask]``): cases are counted
        on that cluster instead of locally, with identical results.
    progress:
        Called as ``progress(done, total, case_id)`` after each case.
    regions_from:
        How the regions were given (``dataset.json``, ``--region``), named in warnings.
    **options:
        Fields of :class:`~segeval.config.EvalConfig` (``labels``, ``empty``, ``smooth``,
        ``beta``, ``threshold``, ``ignore_index``, ``regions``, ``missing``, ...).

    Bad input in one case never raises: the case is recorded with ``status="error"`` and an
    ``error_code``.  Only a bad request as a whole raises :class:`~segeval.UsageError`.
    """
    config = EvalConfig.create(**options)
    started = time.perf_counter()
    pairing = pair_inputs(prediction, reference, config.prediction_suffix)
    resolved = resolve_device(device, pairing)
    n_workers = checked_workers(workers, case_timeout)
    count_cache = count_cache_of(cache, config)
    if case_timeout is None and pairing.from_files and resolved == "cpu" and scheduler is None:
        case_timeout = default_case_timeout(pairing.cases)  # recorded in the report's run
    results = run_cases(pairing.cases, config, resolved, pairing.from_files, n_workers,
                        progress, case_timeout, count_cache, scheduler)
    return build_report(config, pairing, results,
                        run_facts(resolved, n_workers, case_timeout, scheduler, count_cache),
                        started, regions_from)


def checked_workers(workers: int | None, case_timeout: float | None) -> int:
    """The number of worker processes (default: :func:`default_workers`), after checking
    ``workers`` and ``case_timeout``."""
    n_workers = default_workers() if workers is None else workers
    if n_workers < 1:
        raise UsageError("E_USAGE", f"--workers {workers}: must be at least 1")
    if case_timeout is not None and not case_timeout > 0:
        raise UsageError("E_USAGE", f"--case-timeout {case_timeout}: must be positive seconds")
    return n_workers


def count_cache_of(cache: str | Path | None, config: EvalConfig) -> Any:
    """The :class:`~segeval.run.cache.CountCache` in folder ``cache`` (None: no cache)."""
    if cache is None:
        return None
    from segeval.run.cache import CountCache  # hashlib & co. only when a cache is used

    return CountCache(cache, config)


def run_facts(device: str, workers: int, case_timeout: float | None, scheduler: str | None,
              count_cache: Any) -> dict[str, Any]:
    """The report's ``run`` block before the results are known (see :func:`build_report`)."""
    return {"device": device, "backend": "numpy" if device == "cpu" else "torch",
            "workers": workers, "case_timeout": case_timeout, "scheduler": scheduler,
            "cache_hits": None if count_cache is None else count_cache.hits}


def evaluate_many(
    predictions: dict[str, Path],
    reference: str | Path,
    *,
    workers: int | None = None,
    case_timeout: float | None = None,
    cache: str | Path | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> dict[str, Report | SegevalError]:
    """``{name: evaluate(predictions[name], reference, ...)}`` for many prediction folders
    against one reference folder (grading), on the CPU: the same reports, number for number,
    but the same case of every prediction folder is evaluated in one worker process, so each
    reference file is opened and decoded once per case instead of once per folder.

    A folder that cannot be paired (no mask file at all, ...) maps to the
    :class:`~segeval.errors.SegevalError` that :func:`evaluate` would raise.  Each report's
    ``run`` block is its own (case timeout, cache hits); ``run.seconds`` is the whole call's.
    ``progress(done, total, reference case)`` is called as each reference case's group is
    final and cached: in the order of the groups, a group rerun after a worker crash or
    timeout after the rerun.  ``done`` and ``total`` count cases of every folder; cached cases
    count as done (with every case cached, there is no call).
    """
    from segeval.run.runner import evaluate_groups

    config = EvalConfig.create(**options)
    started = time.perf_counter()
    n_workers = checked_workers(workers, case_timeout)
    out: dict[str, Report | SegevalError] = {}
    teams: dict[str, tuple[Pairing, list[CaseResult | None], Any, float]] = {}
    groups: dict[str, list[tuple[str, int]]] = {}  # reference file → (team, case index)
    for name, folder in predictions.items():
        try:
            pairing = pair_inputs(folder, reference, config.prediction_suffix)
        except SegevalError as exc:
            out[name] = exc
            continue
        count_cache = count_cache_of(cache, config)
        found = [None if count_cache is None else count_cache.get(count_cache.key(c), c)
                 for c in pairing.cases]
        limit = case_timeout or default_case_timeout(pairing.cases)
        teams[name] = (pairing, found, count_cache, limit)
        for index, (case, result) in enumerate(zip(pairing.cases, found, strict=True)):
            if result is None:
                groups.setdefault(str(case.reference), []).append((name, index))
    members = list(groups.values())
    case_names = [Path(reference_file).name for reference_file in groups]
    total = sum(len(pairing.cases) for pairing, *_ in teams.values())
    finished = [total - sum(len(group) for group in members)]  # the cached cases

    def done(g: int, results: list[CaseResult]) -> None:  # cached as soon as final
        for (name, index), result in zip(members[g], results, strict=True):
            pairing, found, count_cache, _ = teams[name]
            found[index] = result
            if count_cache is not None:
                count_cache.put(count_cache.key(pairing.cases[index]), result)
        finished[0] += len(results)
        if progress is not None:  # after the cache: an interrupt here loses no finished case
            progress(finished[0], total, case_names[g])

    computed = evaluate_groups(
        [[teams[name][0].cases[i] for name, i in group] for group in members], config,
        n_workers, [[teams[name][3] for name, _ in group] for group in members], done)
    for group, results in zip(members, computed, strict=True):  # the interrupted ones
        for (name, index), result in zip(group, results, strict=True):
            if teams[name][1][index] is None:
                teams[name][1][index] = result
    for name, (pairing, found, count_cache, limit) in teams.items():
        out[name] = build_report(config, pairing, [r for r in found if r is not None],
                                 run_facts("cpu", n_workers, limit, None, count_cache), started)
    return {name: out[name] for name in predictions}


def build_report(config: EvalConfig, pairing: Pairing, results: list[CaseResult],
                 run: dict[str, Any], started: float, regions_from: str = "--region") -> Report:
    """The report of evaluated cases: classes, warnings, count table, reductions, values.
    ``run`` holds the run facts (device, workers, ...); the version and times are added."""
    relabel_results(results, config)
    classes = resolve_classes(results, config)
    if config.unexpected_labels == "error":
        reject_unexpected_labels(results, config)
    warnings = run_warnings(
        label_facts(((r.id, r.counts) for r in results), config.ignore_index),
        declared_labels(config, regions_from), classes, pairing_facts(pairing))
    table = CountTable.build([r.counts for r in results], classes, config.ignore_index,
                             soft=config.soft)
    run = {**run, "interrupted": any(r.error_code == errors.E_INTERRUPTED for r in results),
           "tool_version": __version__,
           "seconds": round(time.perf_counter() - started, 3),
           "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    sweep = sweep_block([r.counts for r in results], classes, config)
    return Report(config, classes, results, table, reduce_counts(table, config), run,
                  pairing.unmatched_predictions, pairing.ignored_files, sweep, warnings,
                  value_reductions(results, classes, config))


def value_reductions(results: list[CaseResult], classes: list[ClassSpec],
                     config: EvalConfig) -> ValueReductions | None:
    """Every per case x class value metric asked for (boundary, then lesion), reduced; lesion
    counts also pooled, and lesion F1 / RQ from the pooled counts.  None when none is asked."""
    if not (config.boundary_metrics or config.lesion_metrics):
        return None
    per_case = distance_table(results, classes, config) if config.boundary_metrics else {}
    counts: dict[str, np.ndarray] = {}
    if config.lesion_metrics:
        from segeval.config import LESION_COUNTS
        from segeval.core.lesions import POOLED_LESION_METRICS

        lesions = lesion_value_table(results, classes, config)
        per_case.update({m: lesions[m] for m in config.lesion_metrics})
        counts = {m: lesions[m] for m in LESION_COUNTS}
        reduced = reduce_values(per_case, config.std_ddof, counts, POOLED_LESION_METRICS,
                                config.lesion_empty or config.empty)
        return replace(reduced, recorded={m: v for m, v in lesions.items()
                                          if m not in per_case})
    return reduce_values(per_case, config.std_ddof)



def relabel_results(results: list[CaseResult], config: EvalConfig) -> None:
    """Apply ``binary``/``map_*`` to each case's confusion table (never to voxels)."""
    mapping = label_mapping(config)
    if mapping.identity:
        return
    for result in results:
        if isinstance(result.counts, Confusion):
            result.counts = relabel_confusion(result.counts, mapping, config.ignore_index)


def declared_labels(config: EvalConfig, regions_from: str = "--region") -> Declared:
    """The labels the options name, for the run's warnings."""
    return Declared(config.labels, tuple(config.names), config.regions, config.ignore_index,
                    regions_from)


def pairing_facts(pairing: Pairing) -> PairingFacts:
    return PairingFacts(tuple(s.id for s in pairing.cases if s.prediction is None),
                        tuple(pairing.skipped_predictions),
                        tuple(pairing.unmatched_predictions))


def distance_table(results: list[CaseResult], classes: list[ClassSpec],
                   config: EvalConfig) -> dict[str, np.ndarray]:
    """``{metric: [case, class]}`` boundary values; NaN for a case not scored and for a class
    absent from both of a case's masks (undefined, like Dice under ``--empty nan``)."""
    keys = {spec.key: k for k, spec in enumerate(classes)}
    table = {m: np.full((len(results), len(classes)), np.nan) for m in config.boundary_metrics}
    for i, result in enumerate(results):
        if result.counts is None or result.distances is None:
            continue
        for key, values in result.distances.items():
            if key in keys:
                for metric, value in values.items():
                    table[metric][i, keys[key]] = value
    return table


def lesion_value_table(results: list[CaseResult], classes: list[ClassSpec],
                       config: EvalConfig) -> dict[str, np.ndarray]:
    """``{metric: [case, class]}`` of every lesion metric computed: NaN for a case not scored;
    a class absent from both of a scored case's masks has no lesion on either side
    (:func:`segeval.engines.lesions.both_empty_values`: counts 0, ratios by the empty rule)."""
    from segeval.engines.lesions import both_empty_values

    keys = {spec.key: k for k, spec in enumerate(classes)}
    empty_by_ndim: dict[int, dict[str, float]] = {}
    table: dict[str, np.ndarray] = {}
    for i, result in enumerate(results):
        if result.counts is None or result.lesions is None:
            continue
        found = {key: values for key, values in result.lesions.items() if key in keys}
        ndim = len(result.shape) if result.shape else 3
        if len(found) < len(keys) and ndim not in empty_by_ndim:
            empty_by_ndim[ndim] = both_empty_values(config, ndim)
        for key, k in keys.items():
            values = found.get(key) or empty_by_ndim[ndim]
            for metric, value in values.items():
                if metric not in table:
                    table[metric] = np.full((len(results), len(classes)), np.nan)
                table[metric][i, k] = value
    if not table:  # nothing scored: every metric undefined
        from segeval.config import LESION_METRIC_NAMES

        table = {m: np.full((len(results), len(classes)), np.nan) for m in LESION_METRIC_NAMES}
    return table


def resolve_device(device: str, pairing: Pairing) -> str:
    """The rule for ``auto``: count where the data is.

    Files are decoded on the CPU, and decoding costs far more than counting (see the README's
    performance notes), so moving decoded volumes to a GPU only adds torch's import and CUDA
    start-up.  Tensors already on a GPU are counted there.
    """
    if device == "auto":
        devices = {d for s in pairing.cases if (d := _tensor_device(s.reference))} - {"cpu"}
        if len(devices) > 1:
            raise UsageError("E_USAGE", f"tensors on several devices: {sorted(devices)}")
        return devices.pop() if devices else "cpu"
    if device == "cpu":
        return "cpu"
    if device == "mps" or device == "cuda" or (device.startswith("cuda:")
                                                and device[5:].isdigit()):
        from segeval.engines.torch_backend import check_device

        check_device(device)
        return device
    raise UsageError("E_USAGE", f"--device {device!r} is not one of {DEVICES_HELP}")


def _tensor_device(value: Any) -> str | None:
    if type(value).__module__.startswith("torch"):
        return str(value.device)
    return None


def resolve_classes(results: list[CaseResult], config: EvalConfig) -> list[ClassSpec]:
    """The evaluated classes: explicit ``labels`` or every label found, then regions.

    Found labels exclude ``ignore_index`` and, unless ``include_background`` (or
    ``multilabel``, where channel 0 is an ordinary class), label 0.  With regions and no
    explicit labels, only the regions are evaluated.
    """
    names = config.names
    found: set[int] = set()
    for result in results:
        if result.counts is not None:
            found |= result.counts.evaluated_labels(config.ignore_index)
    if config.labels is not None:
        labels = set(config.labels)
        if config.include_background:
            labels.add(0)
    elif config.regions:
        labels = set()
    else:
        labels = found - ({0} if not (config.include_background or config.multilabel)
                          else set())
    labels.discard(config.ignore_index)  # type: ignore[arg-type]
    classes = [ClassSpec(str(label), names.get(label, str(label)), (label,))
               for label in sorted(labels)]
    classes += [ClassSpec(name, name, members) for name, members in config.regions]
    return classes


def reject_unexpected_labels(results: list[CaseResult], config: EvalConfig) -> None:
    """With explicit ``labels`` and ``unexpected_labels="error"``, a case holding a label
    nobody declared is invalid (by default such labels are negatives for every class, as
    with scikit-learn's ``labels=``, and named by a ``W_UNEVALUATED_LABELS`` warning).

    Declared: background 0, ``labels``, the labels of ``label_names`` (a dataset.json
    declares every label of a dataset, so ``--labels 1`` with it evaluates a subset),
    region members and ``ignore_index``.
    """
    if config.labels is None:
        return
    allowed = set(config.labels) | {0} | set(config.names)
    allowed |= {label for _, members in config.regions for label in members}
    if config.ignore_index is not None:
        allowed.add(config.ignore_index)
    for result in results:
        if result.counts is None:
            continue
        unexpected = sorted(result.counts.evaluated_labels(config.ignore_index) - allowed)
        if unexpected:
            sides = labels_by_side(result.counts, config.ignore_index)
            where = "; ".join(
                f"{name}: labels {sorted(found - allowed)}"
                for name, found in ((result.reference, sides[0]),
                                    (result.prediction or "prediction", sides[1]))
                if found - allowed)
            result.status, result.error_code = "error", errors.E_UNEXPECTED_LABEL
            result.message = (f"{where} not declared; expected only {sorted(allowed)} "
                              "(declare every label of the dataset with --labels or "
                              "--label-names, or drop --unexpected-labels error)")
            result.counts = None


def labels_by_side(counts: Any, ignore_index: int | None) -> tuple[set[int], set[int]]:
    """Labels present in the reference and in the prediction (evaluated voxels only)."""
    if not isinstance(counts, Confusion):
        everything = counts.evaluated_labels(ignore_index)
        return everything, everything
    kept = counts.reference != ignore_index if ignore_index is not None else slice(None)
    return ({int(x) for x in np.unique(counts.reference[kept])},
            {int(x) for x in np.unique(counts.prediction[kept])})
