"""The one frozen object that holds every option that can change a number.

The CLI and the Python API both build an :class:`EvalConfig`; it is validated once, here,
recorded whole in every report (``Report.config``), and read by exactly the functions
that need each field.  Words used here are the words of the CLI flags and JSON keys.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, get_args

from segeval.errors import UsageError

EmptyRule = Literal["nan", "one", "zero"]
MissingRule = Literal["error", "empty", "skip"]
Logits = Literal["none", "sigmoid", "softmax"]
Headline = Literal["macro", "micro", "macro_imagewise"]
GeometryRule = Literal["strict", "shape", "off"]
InvalidRule = Literal["exclude", "empty"]
MetricName = Literal["dice", "iou", "fbeta", "precision", "recall", "specificity"]
Effect = Literal["counts", "scores", "display"]
UnexpectedRule = Literal["warn", "error"]
Surface = Literal["voxel", "surfel"]
PercentileMode = Literal["directed", "pooled"]
Connectivity = Literal["face", "18", "full"]

METRICS: tuple[str, ...] = get_args(MetricName)
HEADLINES: tuple[str, ...] = get_args(Headline)
EMPTY_RULES: tuple[str, ...] = get_args(EmptyRule)
MISSING_RULES: tuple[str, ...] = get_args(MissingRule)
LOGITS: tuple[str, ...] = get_args(Logits)
GEOMETRY_RULES: tuple[str, ...] = get_args(GeometryRule)
INVALID_RULES: tuple[str, ...] = get_args(InvalidRule)
UNEXPECTED_RULES: tuple[str, ...] = get_args(UnexpectedRule)
MAPPED = ("map_reference", "map_prediction")  # label mappings: (from, to) pairs
SURFACES: tuple[str, ...] = get_args(Surface)
PERCENTILE_MODES: tuple[str, ...] = get_args(PercentileMode)
# boundary (surface-distance) metrics: values per case x class, lower is better except nsd
BOUNDARY_METRICS: tuple[str, ...] = ("hd", "hd95", "assd", "masd", "nsd")
EMPTY_DISTANCES: tuple[str, ...] = ("diagonal", "nan", "inf")
_HD_PERCENTILE = re.compile(r"^hd(\d+(?:\.\d+)?)$")


def hd_percentile(name: str) -> float | None:
    """The percentile a metric name asks for: ``hd95`` -> 95.0, ``hd99.5`` -> 99.5; None if
    not an ``hdNN`` name with 0 < NN < 100.  ``hd`` itself is the maximum."""
    match = _HD_PERCENTILE.match(name)
    if match is None:
        return None
    value = float(match.group(1))
    return value if 0 < value < 100 else None


def is_boundary_metric(name: str) -> bool:
    """True for ``hd``, ``hdNN`` (0 < NN < 100), ``assd``, ``masd`` and ``nsd``."""
    return name in ("hd", "assd", "masd", "nsd") or hd_percentile(name) is not None


# --- per case x class values that do not add ---------------------------------------------
# The one table of facts about "value" metrics (boundary distances and lesion-wise metrics):
# tables, CSV, compare, grade, gates and the report's ``units`` read it, never a list of their
# own.  A value metric is computed per case x class beside the counts; it always reduces by
# the statistics in VALUE_STATISTICS over cases, and by ``macro_imagewise`` (the mean over
# classes of the per-class means).  ``pooled``, ``macro`` and ``micro`` exist only for the
# values listed with them in ``ValueMetric.reductions``: lesion counts add over cases, and
# lesion F1 and RQ are functions of such counts; the others are null in the report and "—"
# in tables.
ValueStatistic = Literal["mean", "std", "median"]
VALUE_STATISTICS: tuple[str, ...] = get_args(ValueStatistic)
VALUE_SUMMARIES: tuple[str, ...] = ("macro_imagewise",)
VALUE_REDUCTIONS: tuple[str, ...] = (*VALUE_STATISTICS, "macro_imagewise")
COUNT_REDUCTIONS: tuple[str, ...] = (*VALUE_REDUCTIONS, "pooled", "micro")
RATIO_REDUCTIONS: tuple[str, ...] = (*COUNT_REDUCTIONS, "macro")


@dataclass(frozen=True)
class ValueMetric:
    """What every consumer needs to know about one per case x class value metric.

    unit: ``mm``, ``fraction``, ``ml``, ``count`` ... (the report's ``units``);
    lower_is_better: the direction of "worse" (a rise of a distance is a regression);
    family: the option that computes it (``boundary`` or ``lesion``: ``--metrics``);
    reductions: those that exist: always ``mean``, ``std``, ``median`` (per class, over
    cases) and ``macro_imagewise``; ``pooled`` (per class, over cases) and ``micro`` (over
    classes and cases) for a count, which is summed, and for a ratio of counts (lesion F1,
    RQ), computed from the summed counts; ``macro`` (mean over classes of ``pooled``) for
    such a ratio.
    """

    name: str
    unit: str
    lower_is_better: bool
    family: str = "boundary"
    reductions: tuple[str, ...] = VALUE_REDUCTIONS


# Lesion counts add over cases (pooled per class, like TP/FP/FN); lesion F1 and RQ are
# functions of such counts (segeval.core.lesions.POOLED_LESION_METRICS), hence pool too.
LESION_COUNTS: tuple[str, ...] = (
    "n_ref_lesions", "n_pred_lesions", "lesion_tp", "lesion_fp", "lesion_fn",
    "pq_tp", "pq_fp", "pq_fn",
)
LESION_POOLED_RATIOS: tuple[str, ...] = ("lesion_f1", "rq")
LESION_LOWER_IS_BETTER: frozenset[str] = frozenset({
    "lesion_fp", "lesion_fn", "pq_fp", "pq_fn", "lesion_count_diff", "fp_volume_ml",
    "fn_volume_ml", "lesion_hd95",
})


def _lesion_metric(name: str, unit: str) -> ValueMetric:
    reductions = COUNT_REDUCTIONS if name in LESION_COUNTS else \
        RATIO_REDUCTIONS if name in LESION_POOLED_RATIOS else VALUE_REDUCTIONS
    return ValueMetric(name, unit, name in LESION_LOWER_IS_BETTER, "lesion", reductions)


# every lesion-wise metric of segeval.core.lesions (definitions there and in the README)
LESION_UNITS: dict[str, str] = {
    "n_ref_lesions": "count", "n_pred_lesions": "count", "lesion_tp": "count",
    "lesion_fp": "count", "lesion_fn": "count", "pq_tp": "count", "pq_fp": "count",
    "pq_fn": "count", "lesion_f1": "fraction", "lesion_dice": "fraction",
    "lesion_count_diff": "count", "rq": "fraction", "sq": "fraction", "sq_dice": "fraction",
    "pq": "fraction", "fp_volume_ml": "ml", "fn_volume_ml": "ml", "lesion_hd95": "mm",
}
LESION_METRIC_NAMES: tuple[str, ...] = tuple(LESION_UNITS)

VALUE_METRICS: dict[str, ValueMetric] = {
    "hd": ValueMetric("hd", "mm", True),
    "hd95": ValueMetric("hd95", "mm", True),
    "assd": ValueMetric("assd", "mm", True),
    "masd": ValueMetric("masd", "mm", True),
    "nsd": ValueMetric("nsd", "fraction", False),
    **{name: _lesion_metric(name, unit) for name, unit in LESION_UNITS.items()},
}


def value_metric(name: str) -> ValueMetric | None:
    """The facts of a value metric (any ``hdNN`` is a distance in mm); None for an overlap
    metric or an unknown name."""
    if name in VALUE_METRICS:
        return VALUE_METRICS[name]
    if hd_percentile(name) is not None:
        return ValueMetric(name, "mm", True)
    return None


def is_lesion_metric(name: str) -> bool:
    """True for the lesion-wise metrics (:data:`LESION_METRIC_NAMES`)."""
    return name in LESION_UNITS


def lower_is_better(name: str) -> bool:
    """Distances, lesion FP/FN counts, the count difference and the volumes improve
    downwards; every overlap metric, nsd and the other lesion metrics improve upwards."""
    found = value_metric(name)
    return found is not None and found.lower_is_better


def reduction_exists(metric: str, reduction: str) -> bool:
    """Whether ``per_class[..][reduction]`` / ``summary[reduction]`` of ``metric`` exists:
    every reduction for overlap metrics; for a value metric those of its
    ``ValueMetric.reductions`` (and ``n_used``)."""
    found = value_metric(metric)
    if found is None:
        return True
    return reduction in found.reductions or reduction == "n_used"


# --- what each option changes ------------------------------------------------------------
# Every EvalConfig field is declared through one of these three, so that what depends on
# "which options change which numbers" derives from one place: the count cache keys on the
# ``counts`` fields, ``segeval compare`` refuses reports whose ``counts`` or ``scores``
# fields differ, and a field without a tag fails tests/test_config.py.

def counts(default: Any) -> Any:
    """A field that changes the integer counts of a case (a cache key part)."""
    return field(default=default, metadata={"effect": "counts"})


def scores(default: Any) -> Any:
    """A field that changes scores computed from the same counts (classes, β, smoothing)."""
    return field(default=default, metadata={"effect": "scores"})


def display(default: Any) -> Any:
    """A field that changes what is shown, never a number (names, the headline choice)."""
    return field(default=default, metadata={"effect": "display"})


def fields_that_change(effect: Effect) -> tuple[str, ...]:
    """The names of the EvalConfig fields tagged with ``effect``, in declaration order."""
    return tuple(f.name for f in fields(EvalConfig) if f.metadata.get("effect") == effect)


@dataclass(frozen=True)
class EvalConfig:
    """Every option of an evaluation.  Build with :meth:`create` to validate.

    Each field is declared with :func:`counts`, :func:`scores` or :func:`display`: what it
    changes decides the count cache's key and what ``segeval compare`` may ignore.

    Fields
    ------
    labels: the label values evaluated as classes; ``None`` means every label found in
        any reference or prediction (background 0 excluded unless ``include_background``).
    include_background: evaluate label 0 as a class too.
    ignore_index: voxels whose *reference* equals this value are not evaluated at all.
    regions: ``(name, labels)`` pairs; each is one class, the union of its labels.
    label_names: ``(label, name)`` pairs used for display and class names.
    threshold: a probability map is foreground where ``p > threshold`` (strictly).
    beta: the β of F-beta (β > 1 weighs recall more, β < 1 precision).
    smooth: S in ``(num + S) / (den + S)`` for every ratio metric (0 = exact).
    empty: value of a metric whose denominator is 0 (e.g. Dice when TP+FP+FN = 0):
        ``nan`` (null in JSON, excluded from means and counted), ``one`` or ``zero``.
    missing: a reference without prediction is an ``error`` (case invalid, exit 3),
        scored as an ``empty`` prediction, or ``skip``-ped (not scored, not an error).
    soft: sum probabilities instead of thresholding (soft TP = Σ p·g, ...).
    logits: apply ``sigmoid`` or ``softmax`` (over the channel axis) to predictions first.
    channel_axis: the prediction's class/channel axis (one-hot, multi-label or
        per-class probabilities); ``None`` for label maps and single probability maps.
    multilabel: with ``channel_axis``, each channel is an independent binary class
        (classes may overlap) instead of one class per voxel (argmax).
    headline_metric / headline: the score shown last and compared with ``--fail-under``:
        ``summary[headline][headline_metric]`` in the report.
    geometry: ``strict`` (shape, spacing, orientation and origin must agree within
        ``geometry_tol``), ``shape`` (voxel grids only) or ``off``; see segeval.formats.geometry.
    max_voxels: a file announcing more voxels than this is refused before it is read.
    boundary_metrics: boundary metrics computed per case x class beside the counts (``hd``,
        ``hdNN`` such as ``hd95``, ``assd``, ``masd``, ``nsd``; see segeval.core.boundary).
    nsd_tolerance / nsd_tolerances: NSD's tolerance τ in mm, globally and per class key.
    hd_percentile_mode: ``directed`` (max of the two directed percentiles) or ``pooled``
        (the percentile of both directed sets together, as MedPy computes HD95).
    surface: boundary elements: ``voxel`` (boundary voxels) or ``surfel`` (DeepMind's
        surface elements weighted by area).
    empty_distance: distance metrics when exactly one mask is empty: ``diagonal`` (the image
        diagonal in mm), ``nan``, ``inf`` or a number of mm.
    spacing: voxel size in mm for array inputs (files use their reference header).
    sweep: thresholds at which probability maps are also evaluated (one pass per case); the
        main results stay at ``threshold``.
    binary: every non-zero label is foreground (label 1) on both sides.
    map_reference / map_prediction: ``(from, to)`` label pairs applied to that side before
        scoring, by relabelling each case's confusion table (segeval.core.relabel);
        ``labels``, ``regions`` and ``label_names`` speak of the mapped labels, while
        ``ignore_index`` matches the reference as stored.
    probability_scale: integer predictions are probabilities ``v / scale`` (255 for uint8,
        65535 for uint16) instead of label maps; thresholds are decided exactly on integers.
    prediction_axes: the prediction's axes named in the reference's terms, e.g. ``c,2,1,0``
        (nnU-Net v2 ``.npz``: channels, then the reference's axes reversed); ``_`` drops a
        singleton axis.  Naming ``c`` sets ``channel_axis`` to 0 (the channels go first).
    prediction_suffix: in a prediction folder, read only files of this type (``.npz``).
    unexpected_labels: labels found outside explicit ``labels``/``regions`` are a
        ``warn``-ing (they count as negatives, like scikit-learn's ``labels=``), or an
        ``error`` that makes the case invalid (``E_UNEXPECTED_LABEL``).
    invalid: a case whose prediction is invalid is ``exclude``-d from every reduction, or
        also scored as an ``empty`` prediction (the grading default: a broken file must not
        be worth more than no file).  The case keeps its error either way.
    lesion_metrics: lesion-wise metrics computed per case x class (names in
        :data:`LESION_METRIC_NAMES`; definitions in segeval.core.lesions).
    lesion_preset: the name of the preset (``LESION_PRESETS`` in segeval.core.lesions) whose
        options fill the lesion fields not given explicitly; recorded beside them, expanded.
    connectivity / connectivity_2d: lesions are connected components under ``face``,
        ``18`` (3-D only) or ``full`` connectivity; ``connectivity_2d`` replaces it for 2-D
        images (panoptica).
    lesion_dilation: BraTS: reference lesions dilated this many times for matching.
    lesion_min_volume: BraTS: reference lesions of at most this volume (mm³) are dropped.
    lesion_match_iou / lesion_match_inclusive: PQ's matching rule, IoU > t (>= t inclusive).
    lesion_empty: the empty rule of lesion ratios; resolved to ``empty`` when not given.
    lesion_sq_unmatched: sq/sq_dice when lesions exist but none is matched (None: empty rule).
    lesion_hd95_penalty: lesion-wise HD95 of a missed or false-positive lesion in mm (None:
        the image diagonal); lesion_hd95_both_empty: its value with no lesion at all (None:
        undefined).
    lesion_surface: boundary elements of lesion-wise HD95 (``voxel`` or ``surfel``).
    """

    labels: tuple[int, ...] | None = scores(None)
    include_background: bool = scores(False)
    ignore_index: int | None = counts(None)
    regions: tuple[tuple[str, tuple[int, ...]], ...] = scores(())
    label_names: tuple[tuple[int, str], ...] = display(())
    threshold: float = counts(0.5)
    beta: float = scores(1.0)
    smooth: float = scores(0.0)
    empty: EmptyRule = scores("nan")
    missing: MissingRule = counts("error")
    soft: bool = counts(False)
    logits: Logits = counts("none")
    channel_axis: int | None = counts(None)
    multilabel: bool = counts(False)
    headline_metric: MetricName = display("dice")
    headline: Headline = display("macro")
    std_ddof: int = scores(0)
    geometry: GeometryRule = counts("strict")
    geometry_tol: float = counts(1e-3)
    max_voxels: int = counts(2**31)
    invalid: InvalidRule = counts("exclude")
    sweep: tuple[float, ...] = counts(())
    binary: bool = counts(False)
    map_reference: tuple[tuple[int, int], ...] = counts(())
    map_prediction: tuple[tuple[int, int], ...] = counts(())
    probability_scale: int | None = counts(None)
    prediction_axes: str | None = counts(None)
    prediction_suffix: str | None = counts(None)
    unexpected_labels: UnexpectedRule = scores("warn")
    # boundary metrics are per-case values computed from the voxels, like counts: tagged
    # ``counts`` so that they key the per-case cache and compare's comparability
    boundary_metrics: tuple[str, ...] = counts(())
    nsd_tolerance: float = counts(1.0)
    nsd_tolerances: tuple[tuple[str, float], ...] = counts(())
    hd_percentile_mode: PercentileMode = counts("directed")
    surface: Surface = counts("voxel")
    empty_distance: str | float = counts("diagonal")
    spacing: tuple[float, ...] | None = counts(None)
    # lesion-wise metrics (segeval.core.lesions): per-case values, like the boundary ones
    lesion_metrics: tuple[str, ...] = counts(())
    lesion_preset: str | None = display(None)
    connectivity: Connectivity = counts("full")
    connectivity_2d: Connectivity | None = counts(None)
    lesion_dilation: int = counts(0)
    lesion_min_volume: float = counts(0.0)
    lesion_match_iou: float = counts(0.5)
    lesion_match_inclusive: bool = counts(False)
    lesion_empty: EmptyRule | None = counts(None)
    lesion_sq_unmatched: float | None = counts(None)
    lesion_hd95_penalty: float | None = counts(None)
    lesion_hd95_both_empty: float | None = counts(None)
    lesion_surface: Surface = counts("voxel")

    @classmethod
    def create(cls, **options: object) -> EvalConfig:
        """Build and validate; raises :class:`UsageError` naming the bad option."""
        unknown = set(options) - set(cls.__dataclass_fields__)
        if unknown:
            raise UsageError(
                "E_USAGE", f"unknown option(s): {', '.join(sorted(unknown))}",
                hint=f"valid options: {', '.join(cls.__dataclass_fields__)}",
            )
        normalised = dict(options)
        if isinstance(normalised.get("label_names"), Mapping):
            names = normalised["label_names"]
            assert isinstance(names, Mapping)
            normalised["label_names"] = tuple(sorted((int(k), str(v)) for k, v in names.items()))
        if isinstance(normalised.get("regions"), Mapping):
            regions = normalised["regions"]
            assert isinstance(regions, Mapping)
            normalised["regions"] = tuple(
                (str(k), tuple(sorted(int(x) for x in v))) for k, v in regions.items()
            )
        if normalised.get("labels") is not None:
            labels = normalised["labels"]
            assert isinstance(labels, (list, tuple, set, frozenset))
            normalised["labels"] = tuple(sorted({int(x) for x in labels}))
        for name in MAPPED:
            pairs = normalised.get(name)
            if isinstance(pairs, Mapping):
                pairs = pairs.items()
            if pairs is not None:
                assert isinstance(pairs, Iterable)
                normalised[name] = tuple(sorted((int(a), int(b)) for a, b in pairs))
        axes = normalised.get("prediction_axes")
        if isinstance(axes, (list, tuple)):
            normalised["prediction_axes"] = axes = ",".join(str(x) for x in axes)
        if isinstance(axes, str) and "c" in axes.split(",") \
                and normalised.get("channel_axis") is None:
            normalised["channel_axis"] = 0  # reordering puts the channels first
        if normalised.get("sweep") is not None:
            sweep = normalised["sweep"]
            assert isinstance(sweep, (list, tuple))
            normalised["sweep"] = tuple(sorted({float(t) for t in sweep}))
        _normalise_boundary_options(normalised)
        _expand_lesion_options(normalised)
        config = cls(**normalised)  # type: ignore[arg-type]
        config.validate()
        return config

    def validate(self) -> None:
        def bad(option: str, problem: str, hint: str = "") -> UsageError:
            return UsageError("E_USAGE", f"--{option.replace('_', '-')}: {problem}", hint=hint)

        for name, allowed in (
            ("empty", EMPTY_RULES), ("missing", MISSING_RULES), ("logits", LOGITS),
            ("headline", HEADLINES), ("headline_metric", METRICS),
            ("geometry", GEOMETRY_RULES), ("invalid", INVALID_RULES),
            ("unexpected_labels", UNEXPECTED_RULES),
        ):
            if getattr(self, name) not in allowed:
                raise bad(name, f"{getattr(self, name)!r} is not one of {', '.join(allowed)}")
        if not (math.isfinite(self.threshold) and 0.0 <= self.threshold < 1.0):
            raise bad("threshold", f"{self.threshold} is not in [0, 1)")
        if not (math.isfinite(self.beta) and self.beta > 0):
            raise bad("beta", f"{self.beta} must be a positive number")
        if not (math.isfinite(self.smooth) and self.smooth >= 0):
            raise bad("smooth", f"{self.smooth} must be >= 0")
        if not (math.isfinite(self.geometry_tol) and self.geometry_tol >= 0):
            raise bad("geometry_tol", f"{self.geometry_tol} must be >= 0")
        if self.max_voxels < 1:
            raise bad("max_voxels", f"{self.max_voxels} must be positive")
        if self.sweep:
            if list(self.sweep) != sorted(set(self.sweep)) or len(self.sweep) > 1000:
                raise bad("threshold", "a sweep needs at most 1000 increasing thresholds")
            if not all(math.isfinite(t) and 0.0 <= t < 1.0 for t in self.sweep):
                raise bad("threshold", "sweep thresholds must lie in [0, 1)")
            if self.soft:
                raise bad("threshold", "a threshold sweep and --soft exclude each other")
        if self.labels is not None and len(self.labels) == 0:
            raise bad("labels", "the list is empty")
        if self.labels is not None and any(x < 0 for x in self.labels):
            raise bad("labels", "labels must be >= 0")
        names = [name for name, _ in self.regions]
        if len(set(names)) != len(names):
            raise bad("region", "a region name is used twice")
        for name, members in self.regions:
            if not members:
                raise bad("region", f"region {name!r} has no labels")
            if name.lstrip("-").isdigit():
                raise bad("region", f"region name {name!r} looks like a label",
                          "give regions a name such as whole_tumour=1,2,3")
        if self.multilabel and self.channel_axis is None:
            raise bad("multilabel", "needs --channel-axis (which axis holds the classes)")
        if self.regions and (self.soft or self.multilabel):
            raise bad("region", "regions need label maps; not available with --soft or "
                      "--multilabel")
        if self.logits == "softmax" and self.channel_axis is None:
            raise bad("logits", "softmax needs --channel-axis (the axis to normalise over)")
        self._validate_encodings(bad)

    def _validate_encodings(self, bad: Callable[..., UsageError]) -> None:
        """Label mappings, integer probabilities, axis orders, and the ignore index."""
        if self.ignore_index is not None:
            # a class made of ignored voxels has no TP or FN by construction: asking for it
            # is a contradiction, refused before any file is read rather than dropped
            if self.ignore_index in (self.labels or ()):
                raise bad("ignore_index", f"{self.ignore_index} is also in --labels; a class "
                          "whose voxels are all ignored can never be scored",
                          "drop it from --labels, or choose another --ignore-index")
            for name, members in self.regions:
                if self.ignore_index in members:
                    raise bad("ignore_index", f"{self.ignore_index} is also a member of "
                              f"region {name!r}")
        mapped = self.binary or self.map_reference or self.map_prediction
        for name in MAPPED:
            sources = [a for a, _ in getattr(self, name)]
            if any(x < 0 for pair in getattr(self, name) for x in pair):
                raise bad("map", "labels must be >= 0")
            if len(set(sources)) != len(sources):
                raise bad("map", f"a label is mapped twice ({name.replace('_', ' ')})")
        if mapped and (self.soft or self.multilabel or self.sweep):
            raise bad("map" if not self.binary else "binary",
                      "label mappings apply to label maps; not with --soft, --multilabel or "
                      "a threshold sweep")
        if self.probability_scale is not None:
            if not 1 <= self.probability_scale <= 2**32:
                raise bad("probability_scale", f"{self.probability_scale} must be a positive "
                          "integer such as 255 or 65535")
            if self.logits != "none":
                raise bad("probability_scale", "integer probabilities are not logits")
        if self.prediction_axes is not None:
            names = [part.strip() for part in self.prediction_axes.split(",")]
            spatial = sorted(part for part in names if part not in ("c", "_"))
            if names.count("c") > 1 or spatial != [str(k) for k in range(len(spatial))]:
                raise bad("prediction_axes", f"{self.prediction_axes!r}: name each axis of the "
                          "prediction: c (channels), 0, 1, 2 (the reference's axes, each "
                          "once) or _ (a singleton axis to drop)", "nnU-Net .npz: c,2,1,0")
            if "c" in names and self.channel_axis != 0:
                raise bad("prediction_axes", "naming c puts the channels first: "
                          f"--channel-axis must be 0, not {self.channel_axis}")
        self._validate_boundary(bad)
        self._validate_lesions(bad)

    def _validate_boundary(self, bad: Any) -> None:
        for name, allowed in (("surface", SURFACES), ("hd_percentile_mode", PERCENTILE_MODES)):
            if getattr(self, name) not in allowed:
                raise bad(name, f"{getattr(self, name)!r} is not one of {', '.join(allowed)}")
        for name in self.boundary_metrics:
            if not is_boundary_metric(name):
                raise bad("metrics", f"{name!r} is not a metric",
                          f"overlap: {', '.join(METRICS)}; boundary: hd, hd95 (any hdNN), "
                          "assd, masd, nsd; or all")
        tolerances = [self.nsd_tolerance, *(t for _, t in self.nsd_tolerances)]
        if not all(math.isfinite(t) and t >= 0 for t in tolerances):
            raise bad("nsd_tolerance", "tolerances must be finite numbers of mm, >= 0")
        if self.empty_distance not in EMPTY_DISTANCES and not (
                isinstance(self.empty_distance, float) and self.empty_distance >= 0):
            raise bad("empty_distance", f"{self.empty_distance!r} is not diagonal, nan, inf "
                      "or a number of mm >= 0")
        if self.spacing is not None and not all(math.isfinite(s) and s > 0
                                                for s in self.spacing):
            raise bad("spacing", "every voxel size must be a positive number of mm")
        if self.boundary_metrics and (self.soft or self.channel_axis is not None):
            raise bad("metrics", "boundary metrics need label maps or thresholded "
                      "probabilities; not available with --soft or --channel-axis")

    def _validate_lesions(self, bad: Any) -> None:
        unknown = [m for m in self.lesion_metrics if not is_lesion_metric(m)]
        if unknown:
            raise bad("metrics", f"{', '.join(unknown)} not lesion metrics",
                      f"lesion metrics: {', '.join(LESION_METRIC_NAMES)}")
        for name in ("connectivity", "connectivity_2d"):
            value = getattr(self, name)
            if value is not None and value not in get_args(Connectivity):
                raise bad(name, f"{value!r} is not one of face, 18, full")
        if self.lesion_empty is not None and self.lesion_empty not in EMPTY_RULES:
            raise bad("lesion_empty", f"{self.lesion_empty!r} is not one of "
                      f"{', '.join(EMPTY_RULES)}")
        if self.lesion_surface not in SURFACES:
            raise bad("lesion_surface", f"{self.lesion_surface!r} is not one of "
                      f"{', '.join(SURFACES)}")
        if isinstance(self.lesion_dilation, bool) or not isinstance(self.lesion_dilation, int) \
                or self.lesion_dilation < 0:
            raise bad("lesion_dilation", f"{self.lesion_dilation!r} must be an integer >= 0")
        if not (math.isfinite(self.lesion_min_volume) and self.lesion_min_volume >= 0):
            raise bad("lesion_min_volume", "must be a number of mm³ >= 0")
        if not 0.5 <= self.lesion_match_iou < 1:
            raise bad("lesion_match_iou", f"{self.lesion_match_iou} is not in [0.5, 1) (below "
                      "0.5 a lesion could match two, and the matching would need a solver)")
        for name in ("lesion_sq_unmatched", "lesion_hd95_penalty", "lesion_hd95_both_empty"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise bad(name, f"{value!r} must be a finite number >= 0")
        if self.lesion_metrics and (self.soft or self.channel_axis is not None):
            raise bad("metrics", "lesion metrics need label maps or thresholded "
                      "probabilities; not available with --soft or --channel-axis")

    def tolerance_for(self, key: str) -> float:
        """NSD's τ (mm) for the class ``key``: its own, else the global one."""
        return dict(self.nsd_tolerances).get(key, self.nsd_tolerance)

    @property
    def names(self) -> dict[int, str]:
        return dict(self.label_names)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form recorded in every report."""
        data = asdict(self)
        data["labels"] = None if self.labels is None else list(self.labels)
        data["regions"] = {name: list(members) for name, members in self.regions}
        data["label_names"] = {str(k): v for k, v in self.label_names}
        data["sweep"] = list(self.sweep)
        for name in MAPPED:
            data[name] = {str(a): b for a, b in getattr(self, name)}
        data["boundary_metrics"] = list(self.boundary_metrics)
        data["nsd_tolerances"] = {key: t for key, t in self.nsd_tolerances}
        data["spacing"] = None if self.spacing is None else list(self.spacing)
        data["lesion_metrics"] = list(self.lesion_metrics)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> EvalConfig:
        """Inverse of :meth:`to_dict` (used to read reports back)."""
        options = dict(data)
        if options.get("labels") is not None:
            options["labels"] = tuple(options["labels"])  # type: ignore[arg-type]
        options["sweep"] = tuple(options.get("sweep") or ())  # type: ignore[arg-type]
        options["regions"] = dict(options.get("regions") or {})  # type: ignore[call-overload]
        options["label_names"] = dict(options.get("label_names") or {})  # type: ignore[call-overload]
        for name in MAPPED:
            options[name] = dict(options.get(name) or {})  # type: ignore[call-overload]
        return cls.create(**options)


# Lesion presets: named sets of segeval.core.lesions.LesionOptions fields (data, not code),
# each reproducing one official evaluation; sources in docs/lesions.md and the README.
_BRATS2023: dict[str, Any] = {
    "connectivity": "full", "hd95_penalty": 374.0, "empty": "one", "hd95_both_empty": 0.0,
    "surface": "surfel",
}
LESION_PRESETS: dict[str, dict[str, Any]] = {
    "brats2023-gli": {**_BRATS2023, "dilation": 3, "min_ref_volume_mm3": 50.0},
    "brats2023-met": {**_BRATS2023, "dilation": 1, "min_ref_volume_mm3": 2.0},
    "isles22": {"connectivity": "full", "empty": "one"},
    "autopet": {"connectivity": "18"},
    "panoptica": {"connectivity": "full", "connectivity_2d": "face", "match_inclusive": True,
                  "sq_unmatched": 0.0},
}


# LesionOptions (segeval.core.lesions) field -> EvalConfig field, for presets
LESION_FIELDS: dict[str, str] = {
    "connectivity": "connectivity", "connectivity_2d": "connectivity_2d",
    "dilation": "lesion_dilation", "min_ref_volume_mm3": "lesion_min_volume",
    "match_iou": "lesion_match_iou", "match_inclusive": "lesion_match_inclusive",
    "empty": "lesion_empty", "sq_unmatched": "lesion_sq_unmatched",
    "hd95_penalty": "lesion_hd95_penalty", "hd95_both_empty": "lesion_hd95_both_empty",
    "surface": "lesion_surface",
}


def _expand_lesion_options(options: dict[str, Any]) -> None:
    """Lists to tuples; a preset's options into the lesion fields not given; numbers to
    float; ``lesion_empty`` resolved to ``empty`` when lesion metrics are asked for (so the
    per-case values, cached, carry their rule)."""
    if options.get("lesion_metrics") is not None:
        options["lesion_metrics"] = tuple(dict.fromkeys(options["lesion_metrics"]))
    preset = options.get("lesion_preset")
    if preset is not None:
        if preset not in LESION_PRESETS:
            raise UsageError("E_USAGE", f"--lesion-preset {preset!r} is not known",
                             hint=f"presets: {', '.join(LESION_PRESETS)}")
        for name, value in LESION_PRESETS[preset].items():
            options.setdefault(LESION_FIELDS[name], value)
    for name in ("lesion_min_volume", "lesion_match_iou", "lesion_sq_unmatched",
                 "lesion_hd95_penalty", "lesion_hd95_both_empty"):
        value = options.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            options[name] = float(value)
    if options.get("lesion_metrics") and options.get("lesion_empty") is None:
        options["lesion_empty"] = options.get("empty", "nan")


def _normalise_boundary_options(options: dict[str, Any]) -> None:
    """Lists to tuples, per-class tolerances to sorted pairs, numeric empty distances to
    float (``"7.5"`` from the CLI or a report)."""
    if options.get("boundary_metrics") is not None:
        options["boundary_metrics"] = tuple(dict.fromkeys(options["boundary_metrics"]))
    tolerances = options.get("nsd_tolerances")
    if isinstance(tolerances, Mapping):
        options["nsd_tolerances"] = tuple(sorted((str(k), float(v))
                                                 for k, v in tolerances.items()))
    if options.get("spacing") is not None:
        options["spacing"] = tuple(float(s) for s in options["spacing"])
    empty = options.get("empty_distance")
    if isinstance(empty, (int, float)) or (isinstance(empty, str)
                                           and empty not in EMPTY_DISTANCES):
        try:
            options["empty_distance"] = float(empty)
        except ValueError:
            pass  # validate() names it
