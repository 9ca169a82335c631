"""Every command-line option, declared once, and the parsers that turn its text into values.

``evaluate`` (and ``dice``/``iou``/``fbeta``) and ``grade`` share these declarations, so an
option has one name, one type, one help text and one parser everywhere; where grading needs
another default (a missing or broken case scores as an empty prediction there), the
declaration is made by the same function with that default.  Help is grouped into panels.

The values are validated once, at the edge: here for the syntax of a flag's text, and in
:meth:`segeval.config.EvalConfig.create` for everything that can be checked on the values.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer

from segeval.config import (
    EMPTY_RULES,
    GEOMETRY_RULES,
    HEADLINES,
    INVALID_RULES,
    LOGITS,
    METRICS,
    MISSING_RULES,
    UNEXPECTED_RULES,
)
from segeval.errors import UsageError

INPUTS, CLASSES, PROBABILITIES, SCORES = "Inputs", "Classes", "Probabilities", "Scores"
OUTPUTS, CI, PERFORMANCE = "Outputs", "CI", "Performance"


def choice(values: tuple[str, ...]) -> str:
    return "|".join(values)


# --- arguments -----------------------------------------------------------------------------
PredArg = Annotated[Path, typer.Argument(help="Prediction file or folder.", show_default=False)]
RefArg = Annotated[Path, typer.Argument(help="Reference (ground-truth) file or folder.",
                                        show_default=False)]

# --- classes ---------------------------------------------------------------------------------
Labels = Annotated[str | None, typer.Option(
    help="Labels to evaluate, e.g. 1,2,3 (default: every label found except 0).",
    rich_help_panel=CLASSES)]
IncludeBackground = Annotated[bool, typer.Option(
    "--include-background", help="Evaluate label 0 as a class too.", rich_help_panel=CLASSES)]
IgnoreIndex = Annotated[int | None, typer.Option(
    help="Voxels whose reference has this value are not evaluated.", rich_help_panel=CLASSES)]
LabelNames = Annotated[str | None, typer.Option(
    help="1=liver,2=tumour or a JSON file ({\"1\": \"liver\"} or nnU-Net dataset.json).",
    rich_help_panel=CLASSES)]
Region = Annotated[list[str] | None, typer.Option(
    help="NAME=1,2,3: evaluate the union of labels as one class (repeatable).",
    rich_help_panel=CLASSES)]

Binary = Annotated[bool, typer.Option(
    "--binary", help="Every non-zero label is foreground, on both sides (0/1 vs 0/255 masks).",
    rich_help_panel=CLASSES)]
MapLabels = Annotated[list[str] | None, typer.Option(
    "--map", help="FROM=TO: relabel before scoring, e.g. 255=1 (both sides), reference:4=3 or "
    "prediction:2=0 (repeatable).", rich_help_panel=CLASSES)]
UnexpectedLabels = Annotated[str, typer.Option(
    help=f"{choice(UNEXPECTED_RULES)}: labels outside --labels/--region count as negatives "
    "with a warning (as scikit-learn's labels=), or make the case invalid.",
    rich_help_panel=CLASSES)]

# --- probabilities -------------------------------------------------------------------------
ProbabilityScale = Annotated[int | None, typer.Option(
    help="Integer predictions are probabilities v/SCALE (255 for 8-bit, 65535 for 16-bit), "
    "thresholded exactly.", rich_help_panel=PROBABILITIES)]
PredictionAxes = Annotated[str | None, typer.Option(
    help="The prediction's axes in the reference's terms: c (channels), 0,1,2 or _ (drop a "
    "size-1 axis); nnU-Net v2 .npz against NIfTI: c,2,1,0.", rich_help_panel=PROBABILITIES)]
Threshold = Annotated[str, typer.Option(
    help="Probability maps: foreground where p > threshold. A list (0.3,0.5,0.7) or range "
    "(0.1:0.9:0.05) adds a sweep: every reduction at every threshold, in one pass; the main "
    "results stay at 0.5.", rich_help_panel=PROBABILITIES)]
Soft = Annotated[bool, typer.Option(
    "--soft", help="Sum probabilities instead of thresholding.", rich_help_panel=PROBABILITIES)]
LogitsOpt = Annotated[str, typer.Option(
    "--logits", help=f"{choice(LOGITS)}: apply sigmoid/softmax to predictions first.",
    rich_help_panel=PROBABILITIES)]
ChannelAxis = Annotated[int | None, typer.Option(
    help="Axis of the prediction that holds classes (one-hot, probabilities).",
    rich_help_panel=PROBABILITIES)]
Multilabel = Annotated[bool, typer.Option(
    "--multilabel", help="With --channel-axis: channels are independent classes.",
    rich_help_panel=PROBABILITIES)]

# --- scores --------------------------------------------------------------------------------
Beta = Annotated[float, typer.Option(help="β of F-beta.", rich_help_panel=SCORES)]
Smooth = Annotated[float, typer.Option(
    help="Add S to numerator and denominator: (num+S)/(den+S).", rich_help_panel=SCORES)]
Empty = Annotated[str, typer.Option(
    help=f"{choice(EMPTY_RULES)}: value when a metric's denominator is 0 (class absent from "
    "reference and prediction).", rich_help_panel=SCORES)]
Metric = Annotated[str, typer.Option(
    help=f"{choice(METRICS)}: the headline metric (evaluate only; one overlap metric). "
    "--metrics lists further metrics to compute.", rich_help_panel=SCORES)]
BOUNDARY = "Boundary metrics"
Metrics = Annotated[str | None, typer.Option(
    "--metrics", help="Comma-separated metrics to compute: overlap metrics are always "
    "computed; boundary metrics hd, hd95 (any hdNN), assd, masd, nsd and lesion-wise metrics "
    "(lesion_f1, lesion_dice, pq, rq, sq, ...; see the README) only when listed; "
    "'all' = every boundary metric, 'lesions' = every lesion metric (e.g. dice,hd95,lesion_f1).",
    rich_help_panel=BOUNDARY)]
LESIONS = "Lesion-wise metrics"
LesionPreset = Annotated[str | None, typer.Option(
    "--lesion-preset", help="brats2023-gli | brats2023-met | isles22 | autopet | panoptica: the "
    "official evaluation's lesion options (recorded expanded in the report's config); "
    "options given explicitly win.", rich_help_panel=LESIONS)]
ConnectivityOpt = Annotated[str | None, typer.Option(
    "--connectivity", help="face | 18 | full: lesions are connected components under this "
    "connectivity (full = 8 in 2-D, 26 in 3-D; default full).", rich_help_panel=LESIONS)]
LesionDilation = Annotated[int | None, typer.Option(
    "--lesion-dilation", help="Dilate reference lesions N times for matching (BraTS).",
    rich_help_panel=LESIONS)]
LesionMinVolume = Annotated[float | None, typer.Option(
    "--lesion-min-volume", help="Drop reference lesions of at most this volume in mm³ "
    "(BraTS).", rich_help_panel=LESIONS)]
LesionsPath = Annotated[str | None, typer.Option(
    "--lesions", help="Write one CSV row per lesion (case, class, side, lesion id, volume, "
    "touching ids, status, Dice, PQ match and IoU) to PATH; needs lesion metrics.",
    rich_help_panel=LESIONS)]
NsdTolerance = Annotated[str, typer.Option(
    "--nsd-tolerance", help="NSD tolerance τ in mm: one number, or per class "
    "'1.5,2=3.0' (class key=τ).", rich_help_panel=BOUNDARY)]
SurfaceOpt = Annotated[str, typer.Option(
    "--surface", help="voxel | surfel: boundary voxels, or DeepMind's surface elements "
    "weighted by area (MSD/KiTS/FLARE).", rich_help_panel=BOUNDARY)]
HdMode = Annotated[str, typer.Option(
    "--hd-percentile-mode", help="directed | pooled: hdNN is the max of the two directed "
    "percentiles, or the percentile of both together (MedPy).", rich_help_panel=BOUNDARY)]
EmptyDistance = Annotated[str, typer.Option(
    "--empty-distance", help="diagonal | nan | inf | a number of mm: distances when exactly "
    "one mask is empty (diagonal = the image diagonal).", rich_help_panel=BOUNDARY)]
HeadlineOpt = Annotated[str, typer.Option(
    "--headline", help=f"{choice(HEADLINES)}: the reduction of the headline score.",
    rich_help_panel=SCORES)]

# --- inputs --------------------------------------------------------------------------------
PredictionSuffix = Annotated[str | None, typer.Option(
    help="Read only prediction files of this type, e.g. .npz (nnU-Net writes .nii.gz and .npz "
    "side by side).", rich_help_panel=INPUTS)]
Missing = Annotated[str, typer.Option(
    help=f"{choice(MISSING_RULES)}: a reference without prediction.", rich_help_panel=INPUTS)]
Invalid = Annotated[str, typer.Option(
    help=f"{choice(INVALID_RULES)}: a case whose prediction is invalid is excluded from the "
    "means, or scored as an empty prediction.", rich_help_panel=INPUTS)]
Geometry = Annotated[str, typer.Option(
    help=f"{choice(GEOMETRY_RULES)}: strict = shape, spacing, orientation and origin must "
    "agree; shape = voxel grids only.", rich_help_panel=INPUTS)]
GeometryTol = Annotated[float, typer.Option(
    help="Tolerance: relative for spacing, absolute for direction cosines, in voxels for the "
    "origin.", rich_help_panel=INPUTS)]
MaxVoxels = Annotated[int, typer.Option(
    help="Refuse files announcing more voxels than this (before reading them).",
    rich_help_panel=INPUTS)]

# --- outputs -------------------------------------------------------------------------------
PerClass = Annotated[bool, typer.Option("--per-class", help="Show a row per class.",
                                        rich_help_panel=OUTPUTS)]
PerCase = Annotated[bool, typer.Option("--per-case", help="Show a row per case.",
                                       rich_help_panel=OUTPUTS)]
JsonPaths = Annotated[list[str] | None, typer.Option(
    "--json", help="Write the JSON report here ('-' for stdout); repeatable.",
    rich_help_panel=OUTPUTS)]
CsvPaths = Annotated[list[str] | None, typer.Option(
    "--csv", help="Write one row per case × class here ('-' for stdout); repeatable.",
    rich_help_panel=OUTPUTS)]
Export = Annotated[list[str] | None, typer.Option(
    "--export", help="KIND=PATH: also write nnU-Net's summary.json (nnunet=PATH) or a Grand "
    "Challenge metrics.json (grand-challenge=PATH); repeatable.", rich_help_panel=OUTPUTS)]
HtmlPath = Annotated[str | None, typer.Option(
    "--html", help="Write a self-contained HTML report here (needs segeval\\[report]).",
    rich_help_panel=OUTPUTS)]
OverlaysDir = Annotated[Path | None, typer.Option(
    "--overlays", help="Write PNGs of the worst cases per class here (needs segeval\\[report]).",
    rich_help_panel=OUTPUTS)]
ImagesDir = Annotated[Path | None, typer.Option(
    "--images", help="Images to draw under the overlays, paired by case id.",
    rich_help_panel=OUTPUTS)]
Worst = Annotated[int, typer.Option(help="Cases per class for --overlays.",
                                    rich_help_panel=OUTPUTS)]
WorstBy = Annotated[str | None, typer.Option(
    "--worst-by", help="The per-case metric that picks --overlays' worst cases (default: "
    "--metric): any metric the run computes, e.g. lesion_f1, or hd95 (the highest values "
    "are the worst where lower is better).", rich_help_panel=OUTPUTS)]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress, no table.",
                                     rich_help_panel=OUTPUTS)]
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks.",
                                     rich_help_panel=OUTPUTS)]

# --- CI ------------------------------------------------------------------------------------
FailUnder = Annotated[list[str] | None, typer.Option(
    help="A bar, repeatable; exit 1 when any is missed: 0.85 (the headline score), dice=0.85, "
    "iou:micro=0.7, dice:tumour=0.6 (a class, pooled), dice:2:mean=0.6 (a class, case "
    "mean).", rich_help_panel=CI)]
MarkdownPath = Annotated[str | None, typer.Option(
    "--markdown", help="Write a Markdown summary (for a pull-request comment) here.",
    rich_help_panel=CI)]
JunitPath = Annotated[str | None, typer.Option(
    "--junit", help="Write JUnit XML here: one test per bar and per invalid case.",
    rich_help_panel=CI)]
Github = Annotated[bool, typer.Option(
    "--github", help="Emit ::error annotations for missed bars and invalid cases; append the "
    "Markdown to $GITHUB_STEP_SUMMARY when it is set.", rich_help_panel=CI)]
Strict = Annotated[bool, typer.Option(
    "--strict", help="Any run warning (W_...) is a failure: exit 3.", rich_help_panel=CI)]
OnError = Annotated[str, typer.Option(
    help="fail|continue: with invalid cases, exit 3 (fail) or 0 (continue); the report holds "
    "every case either way.", rich_help_panel=CI)]

# --- performance ---------------------------------------------------------------------------
Device = Annotated[str, typer.Option(
    help="auto|cpu|cuda|cuda:N|mps (auto: where the data is; CPU for files).",
    rich_help_panel=PERFORMANCE)]
CaseTimeout = Annotated[float | None, typer.Option(
    help="Seconds one case may take (files on the CPU); a case past it is stopped and "
    "recorded as E_TIMEOUT. Default: 120 s plus 10 s per MiB of the largest case's files, "
    "generous for honest volumes: it exists to end hangs. The value used is in the "
    "report's run.case_timeout.",
    rich_help_panel=PERFORMANCE)]
Workers = Annotated[int | None, typer.Option(
    help="Parallel workers (default: usable cores, at most 8); results do not depend on it.",
    rich_help_panel=PERFORMANCE)]
Scheduler = Annotated[str | None, typer.Option(
    help="Address of a Dask distributed scheduler to count cases on (needs segeval\\[dask] and "
    "paths the workers can read); results are identical.", rich_help_panel=PERFORMANCE)]


# --- parsers -------------------------------------------------------------------------------
def parse_labels(text: str | None) -> list[int] | None:
    """``1,2,3`` → [1, 2, 3]; None stays None (every label found)."""
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError("E_USAGE", f"--labels {text!r}: expected integers such as 1,2,3") \
            from None


def parse_threshold(text: str) -> tuple[float, list[float]]:
    """``0.5`` → (0.5, []); ``0.3,0.5`` or ``0.1:0.9:0.05`` → (0.5, the sweep)."""
    try:
        if ":" in text:
            start, stop, step = (float(x) for x in text.split(":"))
            if not step > 0:
                raise ValueError
            count = math.floor((stop - start) / step + 1e-9) + 1
            values = [round(start + i * step, 12) for i in range(max(count, 0))]
        elif "," in text:
            values = [float(x) for x in text.split(",") if x.strip()]
        else:
            return float(text), []
    except ValueError:
        raise UsageError("E_USAGE", f"--threshold {text!r}: expected a number, a list "
                         "such as 0.3,0.5,0.7 or a range START:STOP:STEP") from None
    if not values:
        raise UsageError("E_USAGE", f"--threshold {text!r}: the sweep is empty")
    return 0.5, values


def parse_regions(items: list[str]) -> dict[str, list[int]]:
    """Repeated ``NAME=1,2,3`` → {name: labels}."""
    regions = {}
    for item in items:
        name, _, members = item.partition("=")
        try:
            regions[name.strip()] = [int(x) for x in members.split(",") if x.strip()]
        except ValueError:
            raise UsageError("E_USAGE", f"--region {item!r}: expected NAME=1,2,3") from None
        if not name.strip() or not regions[name.strip()]:
            raise UsageError("E_USAGE", f"--region {item!r}: expected NAME=1,2,3")
    return regions


def parse_label_names(text: str | None) -> tuple[dict[int, str], dict[str, list[int]]]:
    """``1=liver,2=tumour``, or a JSON file: ``{"1": "liver"}`` or a dataset.json whose
    ``labels`` maps names to labels (nnU-Net; a list value is a region)."""
    if text is None:
        return {}, {}
    if not Path(text).is_file():
        if "=" not in text:  # not the inline form: a path that is not there
            raise UsageError("E_USAGE", f"--label-names {text!r}: file not found",
                             hint="give a JSON file that exists, or 1=liver,2=tumour")
        names = {}
        for item in text.split(","):
            key, sep, name = item.partition("=")
            if not sep or not key.strip().isdigit() or not name.strip():
                raise UsageError("E_USAGE", f"--label-names: {item!r} is not LABEL=NAME",
                                 hint="e.g. 1=liver,2=tumour, or a JSON file")
            names[int(key)] = name.strip()
        return names, {}
    try:
        data = json.loads(Path(text).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError("E_USAGE", f"cannot read label names: {exc}", text) from None
    if isinstance(data, dict) and isinstance(data.get("labels"), dict):
        data = data["labels"]
    if not isinstance(data, dict):
        raise UsageError("E_USAGE", "label names file must hold a JSON object", text)
    names, regions = {}, {}
    for key, value in data.items():
        if str(key).isdigit():
            names[int(key)] = str(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            if value != 0:
                names[value] = str(key)
        elif isinstance(value, list) and all(isinstance(v, int) for v in value):
            regions[str(key)] = value
        else:
            raise UsageError("E_USAGE", f"label names: cannot read entry {key!r}: {value!r}",
                             text)
    return names, regions


def parse_exports(items: list[str]) -> list[tuple[str, str]]:
    """Repeated ``KIND=PATH`` → [(kind, path)]; the kinds are checked by the exporter."""
    exports = []
    for item in items:
        kind, sep, path = item.partition("=")
        if not sep or not kind.strip() or not path:
            raise UsageError("E_USAGE", f"--export {item!r}: expected KIND=PATH",
                             hint="e.g. --export nnunet=summary.json")
        exports.append((kind.strip(), path))
    return exports


def parse_maps(items: list[str]) -> tuple[dict[int, int], dict[int, int]]:
    """Repeated ``--map`` → (reference pairs, prediction pairs); ``255=1`` goes to both."""
    from segeval.core.relabel import parse_mapping

    sides: dict[str, dict[int, int]] = {"reference": {}, "prediction": {}}
    for item in items:
        try:
            side, (source, target) = parse_mapping(item)
        except ValueError as exc:
            raise UsageError("E_USAGE", f"--map {exc}") from None
        for name in (("reference", "prediction") if side == "both" else (side,)):
            if source in sides[name]:
                raise UsageError("E_USAGE", f"--map: label {source} is mapped twice")
            sides[name][source] = target
    return sides["reference"], sides["prediction"]


def class_options(labels: str | None, label_names: str | None, region: list[str] | None,
                  binary: bool = False, map_labels: list[str] | None = None,
                  unexpected_labels: str = "warn") -> dict[str, object]:
    """The class-defining options of evaluate and grade, parsed the same way for both."""
    names, file_regions = parse_label_names(label_names)
    map_reference, map_prediction = parse_maps(map_labels or [])
    return {"labels": parse_labels(labels), "label_names": names,
            "regions": {**file_regions, **parse_regions(region or [])},
            "binary": binary, "map_reference": map_reference,
            "map_prediction": map_prediction, "unexpected_labels": unexpected_labels}


def regions_from(label_names: str | None) -> str:
    """How the regions were given, as run warnings name it."""
    return "dataset.json" if label_names is not None and Path(label_names).is_file() \
        else "--region"


def parse_metrics(text: str | None) -> list[str]:
    """The boundary and lesion metrics of ``--metrics`` (overlap names are accepted: always
    computed)."""
    from segeval.config import (
        BOUNDARY_METRICS,
        LESION_METRIC_NAMES,
        METRICS,
        is_boundary_metric,
        is_lesion_metric,
    )

    if not text:
        return []
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    if "all" in names:
        names = [n for n in names if n != "all"] + list(BOUNDARY_METRICS)
    if "lesions" in names:
        names = [n for n in names if n != "lesions"] + list(LESION_METRIC_NAMES)
    unknown = [n for n in names if n not in METRICS and not is_boundary_metric(n)
               and not is_lesion_metric(n)]
    if unknown:
        raise UsageError("E_USAGE", f"--metrics: {', '.join(unknown)} not known",
                         hint=f"overlap: {', '.join(METRICS)}; boundary: hd, hd95 (any "
                         "hdNN), assd, masd, nsd; or all; lesion: "
                         f"{', '.join(LESION_METRIC_NAMES)}; or lesions")
    return list(dict.fromkeys(n for n in names if n not in METRICS))


def boundary_options(metrics: str | None, nsd_tolerance: str, surface: str,
                     hd_percentile_mode: str, empty_distance: str,
                     also: tuple[str, ...] = ()) -> dict[str, Any]:
    """EvalConfig fields of the boundary-metric options (none when no boundary metric is
    asked for, so an overlap-only run keeps its config, cache key and comparability).
    ``also``: metrics needed anyway (grade's --rank-by)."""
    from segeval.config import is_lesion_metric

    boundary = [m for m in dict.fromkeys([*parse_metrics(metrics), *also])
                if not is_lesion_metric(m)]
    if not boundary:
        return {}
    tolerance, tolerances = parse_tolerance(nsd_tolerance)
    return {"boundary_metrics": boundary, "nsd_tolerance": tolerance,
            "nsd_tolerances": tolerances, "surface": surface,
            "hd_percentile_mode": hd_percentile_mode, "empty_distance": empty_distance}


def lesion_options(metrics: str | None, preset: str | None, connectivity: str | None,
                   dilation: int | None, min_volume: float | None,
                   also: tuple[str, ...] = ()) -> dict[str, Any]:
    """EvalConfig fields of the lesion options: none when no lesion metric is asked for (an
    overlap-only run keeps its config and cache key); only the options given, so that a
    preset fills the rest.  ``also``: metrics needed anyway (grade's --rank-by)."""
    from segeval.config import is_lesion_metric

    lesion = [m for m in dict.fromkeys([*parse_metrics(metrics), *also]) if is_lesion_metric(m)]
    given = {"lesion_preset": preset, "connectivity": connectivity,
             "lesion_dilation": dilation, "lesion_min_volume": min_volume}
    if not lesion:
        named = [f"--{k.replace('_', '-')}" for k, v in given.items() if v is not None]
        if named:
            raise UsageError("E_USAGE", f"{', '.join(named)}: no lesion metric is asked for",
                             hint="add e.g. --metrics lesion_f1,lesion_dice,pq (or lesions)")
        return {}
    return {"lesion_metrics": lesion, **{k: v for k, v in given.items() if v is not None}}


def boundary_rank_metric(rank_by: str) -> tuple[str, ...]:
    """The boundary or lesion metric of ``--rank-by hd95:...`` (it must be computed), else
    none."""
    from segeval.config import is_boundary_metric, is_lesion_metric

    metric = rank_by.partition(":")[0].strip().lower()
    return (metric,) if is_boundary_metric(metric) or is_lesion_metric(metric) else ()


def parse_tolerance(text: str) -> tuple[float, dict[str, float]]:
    """``--nsd-tolerance 1.5`` or ``1.5,2=3.0``: the global τ and per-class ones (mm)."""
    default, per_class = 1.0, {}
    try:
        for item in (part.strip() for part in text.split(",") if part.strip()):
            if "=" in item:
                key, value = item.split("=", 1)
                per_class[key.strip()] = float(value)
            else:
                default = float(item)
    except ValueError:
        raise UsageError("E_USAGE", f"--nsd-tolerance {text!r}: not a number of mm",
                         hint="e.g. --nsd-tolerance 1.5 or 1.5,2=3.0") from None
    return default, per_class
