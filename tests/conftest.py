"""Shared fixtures: small mask folders written with the real libraries."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segeval.results import report_schema

# The two hand-countable cases of test_api.py and the png_folders fixture.
REF_A = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 2, 2], [0, 0, 2, 2]])
PRED_A = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 2, 0], [0, 0, 0, 0]])
REF_B = np.zeros((4, 4), int)
REF_B[0, 0] = 1
PRED_B = REF_B.copy()
PRED_B[3, 3] = 1


def write_png(path: Path, labels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(labels.astype(np.uint8), mode="L").save(path)
    return path


@pytest.fixture(scope="session")
def schema() -> dict:
    return report_schema()


@pytest.fixture
def validate(schema):
    """Validate a report dict (or JSON text) against the shipped schema."""
    import jsonschema

    def check(report) -> dict:
        data = json.loads(report) if isinstance(report, str) else report
        jsonschema.validate(data, schema)
        return data

    return check


@pytest.fixture
def png_folders(tmp_path: Path) -> tuple[Path, Path]:
    """Two 4x4 cases with hand-countable overlaps (see test_cli for the numbers).

    case a: reference      prediction
            1 1 0 0        1 0 0 0
            1 1 0 0        1 1 0 0
            0 0 2 2        0 0 2 0
            0 0 2 2        0 0 0 0
    case b: reference all 0 except label 1 at (0,0); prediction label 1 at (0,0) and (3,3).
    """
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    write_png(gt / "a.png", REF_A)
    write_png(pred / "a.png", PRED_A)
    write_png(gt / "b.png", REF_B)
    write_png(pred / "b.png", PRED_B)
    return pred, gt
