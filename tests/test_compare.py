"""segeval.verdicts.regression and the ``compare`` command: deltas, regressions,
comparability, and the paired tests (Wilcoxon signed-rank, bootstrap) against
hand-enumerated distributions and textbook values.

Reports come from ``segeval.evaluate`` on test_gates.py's two 4x4 cases (baseline: class 1
pooled Dice 0.8, class 2 0.4, macro 0.6, micro 2/3, macro_imagewise (16/21 + 0.4)/2) and on
perfect predictions (every defined Dice 1; class 2 of case b stays undefined).
"""

from __future__ import annotations

import itertools
import json
import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import segeval
from segeval.commands.compare import register
from segeval.errors import UsageError
from segeval.outputs.ci import comparison_annotations, comparison_junit, comparison_markdown
from segeval.verdicts.regression import (
    NotComparable,
    average_ranks,
    compare_reports,
    load_report,
    paired_bootstrap,
    wilcoxon_signed_rank,
)
from tests.test_api import PRED_A, PRED_B, REF_A, REF_B
from tests.test_gates import DICE_MACRO_IMAGEWISE, NAMES

runner = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "160"})


def make_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """segeval (test app)"""

    register(app)
    return app


APP = make_app()


def invoke(*args, env=None):
    return runner.invoke(APP, ["compare", *map(str, args)], env=env)


def evaluate(pred_a=PRED_A, pred_b=PRED_B, **options) -> dict:
    return segeval.evaluate({"a": pred_a, "b": pred_b}, {"a": REF_A, "b": REF_B},
                            label_names=NAMES, **options).to_dict()


@pytest.fixture(scope="module")
def flawed() -> dict:
    return evaluate()


@pytest.fixture(scope="module")
def perfect() -> dict:
    return evaluate(REF_A, REF_B)


def write(tmp_path, name, data) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


# --- comparison ------------------------------------------------------------------------

def test_improvement_rows(flawed, perfect):
    comparison = compare_reports(flawed, perfect)
    one, two = comparison.classes
    assert (one.key, one.name, one.baseline, one.current) == ("1", "organ", 0.8, 1.0)
    assert one.delta == pytest.approx(0.2)
    assert two.delta == pytest.approx(0.6)
    macro, micro, imagewise = comparison.summary
    assert (macro.key, micro.key, imagewise.key) == ("macro", "micro", "macro_imagewise")
    assert macro.delta == pytest.approx(0.4)
    assert micro.delta == pytest.approx(1 - 2 / 3)
    assert imagewise.delta == pytest.approx(1 - DICE_MACRO_IMAGEWISE)
    assert not comparison.regressed and comparison.statistic == "pooled"
    assert comparison.verdict == "ok: no dice value dropped by more than 0.01"


def test_regression_rows(flawed, perfect):
    comparison = compare_reports(perfect, flawed, max_drop=0.05)
    assert comparison.regressed
    assert [row.key for row in comparison.regressions] == \
        ["1", "2", "macro", "micro", "macro_imagewise"]
    assert comparison.classes[0].delta == pytest.approx(-0.2)
    assert comparison.classes[0].status == "REGRESSED"
    assert comparison.verdict.startswith("REGRESSED: 5 dice value(s) dropped by more than 0.05")


def test_max_drop_is_a_tolerance(perfect, flawed):
    # Class 1 drops by exactly 0.2 (1.0 → 0.8): not beyond a max drop of 0.2.
    assert not compare_reports(perfect, flawed, max_drop=0.2).classes[0].regressed
    assert compare_reports(perfect, flawed, max_drop=0.19).classes[0].regressed
    assert not compare_reports(perfect, flawed, max_drop=1).regressed


def test_reduction_picks_the_per_class_statistic(flawed, perfect):
    comparison = compare_reports(flawed, perfect, reduction="macro_imagewise")
    assert comparison.statistic == "mean" and comparison.reduction == "macro_imagewise"
    assert comparison.classes[0].baseline == pytest.approx((6 / 7 + 2 / 3) / 2)
    assert compare_reports(flawed, perfect, reduction="micro").statistic == "pooled"
    # default: the baseline's headline reduction
    imagewise = evaluate(headline="macro_imagewise")
    assert compare_reports(imagewise, perfect).statistic == "mean"


def test_other_metric(flawed, perfect):
    comparison = compare_reports(flawed, perfect, metric="iou")
    assert comparison.classes[0].baseline == pytest.approx(4 / 6)   # TP 4 FP 1 FN 1
    assert comparison.summary[1].baseline == pytest.approx(0.5)     # micro TP 5 FP 1 FN 4


def test_value_that_becomes_undefined_regresses(flawed):
    current = json.loads(json.dumps(flawed))
    current["per_class"]["2"]["pooled"]["dice"] = None
    row = compare_reports(flawed, current).classes[1]
    assert row.regressed and row.delta is None and row.status == "REGRESSED (undefined)"
    back = compare_reports(current, flawed).classes[1]
    assert not back.regressed and back.delta is None


def test_headline_choice_does_not_block(flawed):
    other = evaluate(headline="micro", headline_metric="iou")
    assert not compare_reports(flawed, other).regressed


def test_different_classes_not_comparable(flawed):
    only_one = evaluate(labels=[1])
    with pytest.raises(NotComparable) as caught:
        compare_reports(flawed, only_one)
    message = caught.value.message
    assert "classes differ (only in baseline: 2; only in current: none)" in message
    assert "config.labels differs (baseline null, current [1])" in message
    assert caught.value.exit_code == 2


def test_different_smooth_not_comparable(flawed):
    with pytest.raises(NotComparable) as caught:
        compare_reports(flawed, evaluate(smooth=1.0))
    assert caught.value.message.count("differs") == 1
    assert "config.smooth differs (baseline 0.0, current 1.0)" in caught.value.message


def test_every_config_difference_is_named(flawed):
    current = json.loads(json.dumps(flawed))
    current["config"].update(beta=2.0, empty="one")
    del current["config"]["threshold"]
    with pytest.raises(NotComparable) as caught:
        compare_reports(flawed, current)
    for part in ("config.beta", "config.empty", 'config.threshold differs (baseline 0.5, '
                 'current "absent")'):
        assert part in caught.value.message


@pytest.mark.parametrize("options, says", [
    ({"metric": "hd95"}, "--metric"), ({"max_drop": -1}, "--max-drop"),
    ({"reduction": "median"}, "--reduction"), ({"test": "ttest"}, "--test"),
    ({"n_boot": 0}, "--n-boot"),
])
def test_bad_options(flawed, options, says):
    with pytest.raises(UsageError, match=says):
        compare_reports(flawed, flawed, **options)


def test_case_sets_may_differ(flawed):
    three = segeval.evaluate({"a": PRED_A, "b": PRED_B, "z": PRED_A},
                             {"a": REF_A, "b": REF_B, "z": REF_A}, label_names=NAMES).to_dict()
    comparison = compare_reports(flawed, three, test="wilcoxon")
    assert comparison.cases_only_in_current == ["z"] and comparison.n_paired_cases == 2
    assert "1 case(s) only in the current report: z" in comparison_markdown(comparison)


# --- paired tests through compare_reports ----------------------------------------------

def shifted_cases(shifts: list[int]) -> dict:
    """One 8x8 case per shift: a 4x4 square of label 1, predicted shifted right by ``s``."""
    refs, preds = {}, {}
    for index, shift in enumerate(shifts):
        ref = np.zeros((8, 8), int)
        ref[2:6, 2:6] = 1
        refs[f"c{index}"], preds[f"c{index}"] = ref, np.roll(ref, shift, axis=1)
    return segeval.evaluate(preds, refs).to_dict()


def test_wilcoxon_through_compare():
    baseline = shifted_cases([1, 1, 1, 1, 1, 2])
    current = shifted_cases([0, 0, 0, 0, 2, 1])
    comparison = compare_reports(baseline, current, test="wilcoxon")
    # Per case Dice: a shift of s columns keeps 4(4-s) of 16 pixels: 1 - s/4.
    differences = [0.25, 0.25, 0.25, 0.25, -0.25, 0.25]
    expected = wilcoxon_signed_rank(differences)
    (row,) = comparison.classes
    assert row.test is not None and row.test.n == 6
    assert row.test.p_value == pytest.approx(expected.p_value)
    # six tied |d| of rank 3.5; W+ = 17.5: 2·P(W+ ≥ 17.5) = 2·(1 + 6)/64
    assert row.test.p_value == pytest.approx(14 / 64)
    assert row.test.statistic == 17.5 and row.test.mean_difference == pytest.approx(1 / 6)
    assert comparison.case_test is not None and comparison.case_test.p_value == \
        pytest.approx(14 / 64)
    assert "p=0.2188 (exact, n=6)" in comparison_markdown(comparison)


def test_bootstrap_through_compare():
    baseline = shifted_cases([1, 1, 1, 1, 1, 2])
    current = shifted_cases([0, 0, 0, 0, 2, 1])
    first = compare_reports(baseline, current, test="bootstrap", seed=7, n_boot=2000)
    again = compare_reports(baseline, current, test="bootstrap", seed=7, n_boot=2000)
    assert first.to_dict() == again.to_dict()
    test = first.classes[0].test
    assert test is not None and test.ci_low is not None and test.ci_high is not None
    assert test.ci_low <= 1 / 6 <= test.ci_high
    assert test.n_boot == 2000 and test.seed == 7


def test_no_test_by_default(flawed, perfect):
    comparison = compare_reports(flawed, perfect)
    assert comparison.case_test is None and all(row.test is None for row in comparison.rows)


# --- Wilcoxon signed-rank --------------------------------------------------------------

def enumerated_p(differences) -> float:
    """Oracle: all 2^n sign patterns of the average ranks of the non-zero |d|."""
    nonzero = [d for d in differences if d != 0]
    ranks = average_ranks(np.abs(np.array(nonzero, dtype=float)))
    observed = sum(r for r, d in zip(ranks, nonzero, strict=True) if d > 0)
    sums = [sum(r for r, s in zip(ranks, signs, strict=True) if s)
            for signs in itertools.product([0, 1], repeat=len(ranks))]
    lower = sum(s <= observed + 1e-9 for s in sums) / len(sums)
    upper = sum(s >= observed - 1e-9 for s in sums) / len(sums)
    return min(1.0, 2 * min(lower, upper))


def test_average_ranks():
    assert average_ranks(np.array([3.0, 1.0, 1.0, 2.0, 3.0, 3.0])).tolist() == \
        [5.0, 1.5, 1.5, 3.0, 5.0, 5.0]


def test_wilcoxon_tiny_sample_by_hand():
    # |d| ranks: 0.1→1, 0.2→2, 0.3→3, 0.4→4; W+ = 1+2+4 = 7.  Of the 16 subsets of {1,2,3,4}
    # five have a sum >= 7 (7: {3,4} {1,2,4}; 8: {1,3,4}; 9: {2,3,4}; 10: {1,2,3,4}) and
    # thirteen a sum <= 7, so p = 2·min(5, 13)/16.
    result = wilcoxon_signed_rank([0.1, -0.3, 0.2, 0.4])
    assert (result.w_plus, result.w_minus, result.n, result.exact) == (7, 3, 4, True)
    assert result.p_value == 10 / 16 == enumerated_p([0.1, -0.3, 0.2, 0.4])


def test_wilcoxon_ties_and_zeros_exact():
    differences = [0, 0, 1, -1, 2, 2, -3]
    result = wilcoxon_signed_rank(differences)
    assert (result.n, result.n_zero) == (5, 2)          # zeros dropped
    assert result.w_plus == 1.5 + 3.5 + 3.5             # ranks 1.5 1.5 3.5 3.5 5
    assert result.p_value == pytest.approx(enumerated_p(differences))


def test_wilcoxon_textbook_n10():
    # Tables of the signed-rank test: n = 10, two-sided α = 0.05, critical T = 8.
    # P(T <= 8) = 25/1024 (subsets of {1..10} with sum <= 8), P(T <= 9) = 33/1024.
    at_critical = [-1, 2, 3, 4, 5, 6, -7, 8, 9, 10]   # W- = 1 + 7 = 8
    above = [-2, 1, 3, 4, 5, 6, -7, 8, 9, 10]         # W- = 2 + 7 = 9
    assert wilcoxon_signed_rank(at_critical).p_value == 2 * 25 / 1024
    assert wilcoxon_signed_rank(above).p_value == 2 * 33 / 1024


def test_wilcoxon_darwin_zea_mays():
    # Darwin's paired heights (Fisher, The Design of Experiments), n = 15: W- = 10 + 14 = 24;
    # exact two-sided p = 2·676/32768 = 0.041259765625 (SciPy's documented value).
    differences = [6, 8, 14, 16, 23, 24, 28, 29, 41, -48, 49, 56, 60, -67, 75]
    result = wilcoxon_signed_rank(differences)
    assert (result.w_plus, result.w_minus) == (96, 24)
    assert result.p_value == 0.041259765625


def test_wilcoxon_normal_approximation_by_hand():
    # n = 30, ranks 1..10 negative: W+ = 465 - 55 = 410; E = 30·31/4 = 232.5;
    # Var = 30·31·61/24 = 2363.75; z = 177.5/√2363.75 = 3.65088; p = erfc(z/√2).
    differences = [-(i + 1) if i < 10 else i + 1 for i in range(30)]
    result = wilcoxon_signed_rank(differences)
    assert not result.exact and result.w_plus == 410
    assert result.z == pytest.approx(3.6508802354937036)
    assert result.p_value == pytest.approx(2.613430922667159e-4)


def test_wilcoxon_tie_corrected_variance_by_hand():
    # |d| = 1 1 1 2 3 → ranks 2 2 2 4 5; W+ = 2+2+4+5 = 13; E = 7.5;
    # Var = 5·6·11/24 - (3³-3)/48 = 13.75 - 0.5 = 13.25; z = 5.5/√13.25 = 1.51097.
    result = wilcoxon_signed_rank([1, 1, -1, 2, 3], method="approx")
    assert result.z == pytest.approx(5.5 / math.sqrt(13.25))
    assert result.p_value == pytest.approx(math.erfc(5.5 / math.sqrt(13.25) / math.sqrt(2)))
    assert result.p_value == pytest.approx(0.130797, abs=1e-6)


def test_wilcoxon_switches_to_normal_beyond_25():
    base = list(range(1, 27))
    assert wilcoxon_signed_rank([-x if x <= 12 else x for x in base[:25]]).exact
    assert not wilcoxon_signed_rank([-x if x <= 12 else x for x in base]).exact
    twenty_five = [-x if x <= 13 else x for x in base[:25]]    # W- = 91, p near 0.05
    exact = wilcoxon_signed_rank(twenty_five).p_value
    approx = wilcoxon_signed_rank(twenty_five, method="approx").p_value
    assert 0.02 < exact < 0.1 and abs(exact - approx) < 0.005


def test_wilcoxon_all_zero_and_float_ties():
    assert wilcoxon_signed_rank([0.0, 0.0]).p_value == 1.0
    assert wilcoxon_signed_rank([]).p_value == 1.0
    # 0.3 - 0.1 and 0.2 differ in the last bit; rounding makes them a tie.
    result = wilcoxon_signed_rank([0.3 - 0.1, -0.2])
    assert result.w_plus == result.w_minus == 1.5


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-4, 4), min_size=0, max_size=10))
def test_wilcoxon_exact_matches_enumeration(values):
    assert wilcoxon_signed_rank(values).p_value == pytest.approx(enumerated_p(values))


# --- bootstrap -------------------------------------------------------------------------

def test_bootstrap_reproducible_and_contains_the_mean():
    differences = np.array([0.02, -0.01, 0.05, 0.03, 0.0, 0.04, -0.02, 0.01])
    first = paired_bootstrap(differences, n_boot=5000, seed=3)
    assert first == paired_bootstrap(differences, n_boot=5000, seed=3)
    assert first != paired_bootstrap(differences, n_boot=5000, seed=4)
    mean, low, high = first
    assert mean == pytest.approx(differences.mean())
    assert low <= mean <= high and low < high


def test_bootstrap_by_hand():
    # Two differences 0 and 1: a resample's mean is 0, 0.5 or 1 with chances 1/4, 1/2, 1/4,
    # so the 2.5 % and 97.5 % percentiles are 0 and 1.
    assert paired_bootstrap([0.0, 1.0], n_boot=4000, seed=0) == (0.5, 0.0, 1.0)
    assert paired_bootstrap([0.25] * 5, n_boot=100) == (0.25, 0.25, 0.25)


def test_bootstrap_blocks_do_not_depend_on_n_boot_size():
    # Many cases force several blocks of draws; still reproducible.
    differences = np.linspace(-0.1, 0.2, 3000)
    assert paired_bootstrap(differences, n_boot=700, seed=1) == \
        paired_bootstrap(differences, n_boot=700, seed=1)


# --- renderers -------------------------------------------------------------------------

def test_junit_and_annotations(perfect, flawed):
    comparison = compare_reports(perfect, flawed, max_drop=0.35)
    root = ET.fromstring(comparison_junit(comparison))
    cases = root.findall("testsuite/testcase")
    assert [case.get("name") for case in cases] == \
        ["dice:1", "dice:2", "dice:macro", "dice:micro", "dice:macro_imagewise"]
    failed = [case.get("name") for case in cases if case.find("failure") is not None]
    # drops: class 1 .2, class 2 .6, macro .4, micro 1/3, macro_imagewise .419
    assert failed == ["dice:2", "dice:macro", "dice:macro_imagewise"]
    assert root.get("failures") == "3"
    assert [case.get("classname") for case in cases] == ["segeval.compare.class"] * 2 + [
        "segeval.compare.summary"] * 3
    assert root.find("testsuite").get("name") == "segeval.compare"
    lines = comparison_annotations(comparison)
    assert lines[0] == ("::error title=segeval%3A dice 2 tumour regressed::dice 2 tumour "
                        "(pooled): 1.0000 → 0.4000 (-0.6000; max drop 0.35)")
    assert len(lines) == 3


# --- the command -----------------------------------------------------------------------

def test_cli_improved_exit_0(tmp_path, flawed, perfect):
    result = invoke(write(tmp_path, "b.json", flawed), write(tmp_path, "c.json", perfect))
    assert result.exit_code == 0, result.stderr
    assert "+0.2000" in result.stdout and "+0.6000" in result.stdout and "✓" in result.stdout
    assert "ok: no dice value dropped by more than 0.01" in result.stdout


def test_cli_regressed_exit_1(tmp_path, flawed, perfect):
    result = invoke(write(tmp_path, "b.json", perfect), write(tmp_path, "c.json", flawed),
                    "--test", "wilcoxon")
    assert result.exit_code == 1
    assert "REGRESSED" in result.stdout and "-0.2000" in result.stdout
    assert "p=" in result.stdout


@pytest.mark.parametrize("options, says", [
    ({"labels": [1]}, "classes differ"),
    ({"smooth": 1.0}, "config.smooth differs (baseline 0.0, current 1.0)"),
])
def test_cli_not_comparable_exit_2(tmp_path, flawed, options, says):
    result = invoke(write(tmp_path, "b.json", flawed), write(tmp_path, "c.json",
                                                           evaluate(**options)))
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("segeval: error: the reports are not "
                                                   "comparable")
    assert says in lines[0]


@pytest.mark.parametrize("content, says", [
    (None, "cannot read the report: No such file"),
    ("{not json", "not a JSON report"),
    ('{"a": 1}', "not a segeval JSON report"),
])
def test_cli_unreadable_exit_2(tmp_path, flawed, content, says):
    current = tmp_path / "c.json"
    if content is not None:
        current.write_text(content)
    result = invoke(write(tmp_path, "b.json", flawed), current)
    assert result.exit_code == 2
    assert result.stderr.startswith("segeval: error: ") and says in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_bad_option_exit_2(tmp_path, flawed):
    path = write(tmp_path, "b.json", flawed)
    result = invoke(path, path, "--test", "ttest")
    assert result.exit_code == 2 and "--test: 'ttest'" in result.stderr


def test_cli_outputs(tmp_path, flawed, perfect):
    summary = tmp_path / "step_summary.md"
    md, junit, out = tmp_path / "c.md", tmp_path / "c.xml", tmp_path / "c.json"
    result = invoke(write(tmp_path, "b.json", perfect), write(tmp_path, "c.json", flawed),
                    "--max-drop", "0.3", "--markdown", md, "--junit", junit, "--json", out,
                    "--github", env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert result.exit_code == 1
    assert "::error title=segeval%3A dice 2 tumour regressed::" in result.stdout
    markdown = md.read_text()
    assert "| 2 tumour | 1.0000 | 0.4000 | -0.6000 | ❌ |" in markdown
    assert "| 1 organ | 1.0000 | 0.8000 | -0.2000 | ✅ |" in markdown
    assert summary.read_text().startswith(markdown.rstrip("\n"))
    assert len(ET.fromstring(junit.read_text()).findall("testsuite/testcase")) == 5
    data = json.loads(out.read_text())
    assert data["regressed"] is True and data["classes"][1]["delta"] == pytest.approx(-0.6)


def test_cli_json_to_stdout(tmp_path, flawed, perfect):
    result = invoke(write(tmp_path, "b.json", flawed), write(tmp_path, "c.json", perfect),
                    "--json", "-", "--test", "bootstrap", "--n-boot", "200")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["test"] == "bootstrap" and data["classes"][0]["test"]["n_boot"] == 200
    assert "ok: no dice value dropped" in result.stderr


def test_load_report_checks_the_schema_version(tmp_path, flawed):
    path = write(tmp_path, "r.json", {**flawed, "schema_version": 2})
    with pytest.raises(UsageError, match="unsupported schema_version 2"):
        load_report(path)
    assert load_report(write(tmp_path, "ok.json", flawed))["summary"] == flawed["summary"]
