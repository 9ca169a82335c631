"""A class that is one lesion per side: its lesion-wise HD95 reads the class's own boundary
distances (``engines.distances.ClassDistances``), which the boundary metrics of the same case
read too, so ``--metrics hd95,lesions`` computes each class's two boundaries and queries once.

Hand-built case, shape (10, 10, 16), spacing (2, 1, 1) mm, label 1: the reference is the cube
[2:6, 2:6, 2:6], the prediction the same cube moved one voxel along axis 0, [3:7, 2:6, 2:6].
Each boundary (voxel convention) has 56 voxels (64 - the 8 interior ones).  Prediction to
reference: the 36 voxels of the side walls at x = 3, 4, 5 lie on the reference's walls (0 mm);
the 4 inner voxels of the bottom face x = 3 are 1 mm (axis 1) from the reference's wall and
2 mm from its face x = 2; the 16 voxels of the top face x = 6 are 2 mm (one step of axis 0)
from the reference's face x = 5.  The other direction is the mirror image (16 × 2 mm, 4 × 1 mm,
36 × 0).  Sorted, positions 52 and 53 of 0..55 (0.95 · 55 = 52.25) are both 2 mm:
HD95 = 2.0 mm, for the class and for its one lesion.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from segeval.commands.app import app

runner = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "160"})
SPACING = (2.0, 1.0, 1.0)


def cube_case() -> tuple[np.ndarray, np.ndarray]:
    reference = np.zeros((10, 10, 16), np.uint8)
    prediction = np.zeros_like(reference)
    reference[2:6, 2:6, 2:6] = 1
    prediction[3:7, 2:6, 2:6] = 1
    return reference, prediction


def two_lesion_case() -> tuple[np.ndarray, np.ndarray]:
    """Label 1 as in :func:`cube_case`; label 2: two reference lesions 9 voxels apart (apart
    after BraTS's 3 dilations too), so its lesion HD95 is per lesion (not the class's)."""
    reference, prediction = cube_case()
    reference[7:9, 7:9, 0:2] = 2
    reference[7:9, 7:9, 11:14] = 2
    prediction[7:9, 7:9, 0:4] = 2
    prediction[7:9, 7:9, 11:14] = 2
    return reference, prediction


def run(tmp_path: Path, case: tuple[np.ndarray, np.ndarray], *options: str) -> dict:
    import nibabel as nib

    reference, prediction = case
    affine = np.diag([*SPACING, 1.0])
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for folder, volume in ((gt, reference), (pred, prediction)):
        folder.mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(volume, affine), folder / "c.nii.gz")
    out = tmp_path / f"r{len(list(tmp_path.glob('r*.json')))}.json"
    result = runner.invoke(app, ["evaluate", str(pred), str(gt), "-q", "--workers", "1",
                                 "--json", str(out), *options])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


def test_lone_lesion_hd95_equals_the_class_hd95_by_hand(tmp_path):
    both = run(tmp_path, cube_case(), "--metrics", "hd95,lesions")["cases"][0]["metrics"]["1"]
    assert both["hd95"] == 2.0 and both["lesion_hd95"] == 2.0
    alone = run(tmp_path, cube_case(), "--metrics", "lesions")["cases"][0]["metrics"]["1"]
    assert alone["lesion_hd95"] == 2.0
    assert run(tmp_path, cube_case(), "--metrics", "hd95")["cases"][0]["metrics"]["1"][
        "hd95"] == 2.0


@pytest.mark.parametrize("options", [
    ("--metrics", "hd95,lesions"),
    ("--metrics", "hd95,lesions", "--surface", "surfel", "--lesion-preset", "brats2023-gli"),
    ("--metrics", "hd95,lesions", "--lesion-dilation", "2", "--hd-percentile-mode", "pooled"),
])
def test_shared_distances_give_the_per_lesion_path_values(tmp_path, options):
    """Every lesion HD95 of the run equals the core's per-lesion path (each lesion's own
    masks, no class distances given), computed here from the same masks."""
    from segeval.config import EvalConfig
    from segeval.core import lesions as core
    from segeval.engines.lesions import options_of

    reference, prediction = two_lesion_case()
    data = run(tmp_path, (reference, prediction), *options)
    config = EvalConfig.create(**{key: (tuple(v) if isinstance(v, list) else v)
                                  for key, v in data["config"].items()
                                  if key in EvalConfig.__dataclass_fields__
                                  and key.startswith(("lesion_", "connectivity", "hd_",
                                                      "surface"))})
    lesion_options = options_of(config)
    assert lesion_options.surface == ("surfel" if "surfel" in options else "voxel")
    for label in (1, 2):
        ref, pred = reference == label, prediction == label
        labels = core.lesion_labels(ref, pred, lesion_options)
        table = core.lesion_table(ref, pred, SPACING, lesion_options, labels)
        want = core.lesion_hd95(labels, table, lesion_options)[0]
        got = data["cases"][0]["metrics"][str(label)]["lesion_hd95"]
        assert got == pytest.approx(want, rel=1e-12, abs=0), label
    metrics = data["cases"][0]["metrics"]
    # label 1 is one lesion per side: its lesion HD95 is the class's own HD95, bit for bit,
    # under the lesion surface (the class uses --surface: the same here)
    assert metrics["1"]["lesion_hd95"] == metrics["1"]["hd95"]
    assert not math.isclose(metrics["2"]["lesion_hd95"], metrics["2"]["hd95"])


def test_one_set_of_boundaries_and_queries_per_class(monkeypatch):
    """The runner's per-case step: the boundary metrics and the lone lesion's HD95 read one
    ClassDistances, which builds each class's two boundaries once; the core's per-lesion path
    is not taken for a lone lesion."""
    from segeval.config import EvalConfig
    from segeval.core import boundary
    from segeval.engines import distances
    from segeval.engines.lesions import lesions_of

    built: list[int] = []
    real = distances.boundary_of

    def counting(mask, *args, **kwargs):
        built.append(int(mask.sum()))
        return real(mask, *args, **kwargs)

    def per_lesion(*args, **kwargs):
        raise AssertionError("the per-lesion path ran for a lone lesion")

    monkeypatch.setattr(distances, "boundary_of", counting)
    monkeypatch.setattr(boundary, "surface_distances", per_lesion)
    reference, prediction = cube_case()
    config = EvalConfig.create(boundary_metrics=["hd95"], lesion_metrics=["lesion_hd95"],
                               spacing=SPACING)
    maps = distances.CaseMaps(reference, prediction, None, SPACING)
    kept = distances.ClassDistances(maps)
    values, _ = lesions_of(maps, config, kept)
    assert values["1"]["lesion_hd95"] == 2.0
    assert distances.distances_of(maps, config, distances=kept)["1"]["hd95"] == 2.0
    assert built == [64, 64]  # the reference cube's and the prediction's, once each
