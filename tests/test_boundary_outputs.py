"""Boundary (value) metrics through the shells: tables, CSV, compare, grade, schema, HTML.

The values are hand-computed: a square shifted by k voxels along one axis has HD = k·spacing
(every boundary voxel of the moved edge is k voxels from the nearest reference edge).
"""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest
from rich.console import Console

from segeval.api import evaluate


def square_pair(shift1: int, shift2: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Class 1: a 10x10 square shifted by ``shift1`` columns; class 2: a 6x6 square shifted
    by ``shift2`` columns (None: class 2 absent from both masks)."""
    reference = np.zeros((40, 40), np.uint8)
    reference[2:12, 2:12] = 1
    prediction = np.zeros_like(reference)
    prediction[2:12, 2 + shift1:12 + shift1] = 1
    if shift2 is not None:
        reference[20:26, 20:26] = 2
        prediction[20:26, 20 + shift2:26 + shift2] = 2
    return prediction, reference


def two_case_report(shifts=((1, 4), (3, None)), **options):
    """Case 0: class 1 HD 1, class 2 HD 4; case 1: class 1 HD 3, class 2 undefined."""
    pairs = [square_pair(*s) for s in shifts]
    return evaluate([p for p, _ in pairs], [r for _, r in pairs],
                    boundary_metrics=options.pop("boundary_metrics", ["hd", "nsd"]),
                    labels=[1, 2], spacing=(1.0, 1.0), **options)


def test_value_table_shows_mean_std_median_and_macro_over_classes():
    from segeval.outputs.tables import render

    console = Console(record=True, width=200, file=io.StringIO())
    render(two_case_report(), console, ("dice",), per_class=False, per_case=False)
    text = console.export_text()
    assert "hd (mm)" in text and "nsd (fraction)" in text
    # class 1: HD 1 and 3 -> mean 2, std 1 (ddof 0), median 2; both cases used
    assert "2.0000 ± 1.0000" in text and "median 2.0000" in text and "2/2" in text
    # class 2: only case 0 defined -> 4 ± 0, median 4, used 1/2
    assert "4.0000 ± 0.0000" in text and "median 4.0000" in text and "1/2" in text
    macro_line = next(line for line in text.splitlines() if "macro_imagewise" in line
                      and "(mm)" not in line and "mean over classes" not in line)
    assert "3.0000" in macro_line  # (2 + 4) / 2
    assert "—" in next(line for line in text.splitlines() if "macro, micro" in line)


def test_overlap_only_run_has_no_value_table():
    from segeval.outputs.tables import render

    pairs = [square_pair(1, 4)]
    console = Console(record=True, width=200, file=io.StringIO())
    render(evaluate(pairs[0][0], pairs[0][1]), console, ("dice",), per_class=True,
           per_case=False)
    assert "(mm)" not in console.export_text()


def test_csv_has_the_requested_value_columns():
    from segeval.outputs.tables import to_csv

    rows = list(csv.DictReader(io.StringIO(to_csv(two_case_report()))))
    by = {(r["case"], r["class"]): r for r in rows}
    assert float(by["case_000", "1"]["hd"]) == 1.0
    assert float(by["case_000", "2"]["hd"]) == 4.0
    assert float(by["case_001", "1"]["hd"]) == 3.0
    assert by["case_001", "2"]["hd"] == ""  # absent from both masks: undefined
    assert "masd" not in rows[0]  # only what was requested
    assert 0.0 <= float(by["case_000", "1"]["nsd"]) <= 1.0
    assert math.isclose(float(by["case_000", "1"]["dice"]), 2 * 90 / 200)
    overlap_only = to_csv(evaluate(*square_pair(1, 4)))
    assert overlap_only.splitlines()[0].endswith("specificity")
