"""--fail-under bars and the CI outputs (Markdown, JUnit XML, GitHub annotations).

The report is built with ``segeval.evaluate`` on the two 4x4 cases of test_api.py, plus an
invalid case ``c`` (wrong shape).  Classes 1 "organ" and 2 "tumour"; counts by hand:

    case a  reference   prediction        case b  reference   prediction
            1 1 0 0     1 0 0 0                   1 0 0 0     1 0 0 0
            1 1 0 0     1 1 0 0                   0 0 0 0     0 0 0 0
            0 0 2 2     0 0 2 0                   0 0 0 0     0 0 0 0
            0 0 2 2     0 0 0 0                   0 0 0 0     0 0 0 1

    class 1: a TP 3 FP 0 FN 1 (dice 6/7, iou 3/4);  b TP 1 FP 1 FN 0 (dice 2/3, iou 1/2)
    class 2: a TP 1 FP 0 FN 3 (dice 2/5, iou 1/4);  b empty (undefined)
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import numpy as np
import pytest

import segeval
from segeval.errors import UsageError
from segeval.outputs.ci import (
    annotation,
    append_step_summary,
    bars_table,
    escape_data,
    escape_property,
    github_annotations,
    to_junit,
    to_markdown,
    write_report_outputs,
)
from segeval.verdicts.gates import Bar, check_bars, parse_bar, parse_bars
from tests.test_api import PRED_A, PRED_B, REF_A, REF_B

NAMES = {1: "organ", 2: "tumour"}

# Worked by hand from the counts in the module docstring.
DICE_1_POOLED = 2 * 4 / (2 * 4 + 1 + 1)            # TP 4 FP 1 FN 1 → 0.8
DICE_2_POOLED = 2 * 1 / (2 * 1 + 0 + 3)            # TP 1 FP 0 FN 3 → 0.4
DICE_1_MEAN = (6 / 7 + 2 / 3) / 2                  # 16/21 ≈ 0.7619
DICE_2_MEAN = 2 / 5                                # case b undefined, left out
DICE_MACRO = (DICE_1_POOLED + DICE_2_POOLED) / 2   # 0.6
DICE_MICRO = 2 * 5 / (2 * 5 + 1 + 4)               # TP 5 FP 1 FN 4 → 2/3
DICE_MACRO_IMAGEWISE = (DICE_1_MEAN + DICE_2_MEAN) / 2   # ≈ 0.5810
IOU_MACRO = (4 / 6 + 1 / 4) / 2                    # 11/24
IOU_MICRO = 5 / (5 + 1 + 4)                        # 0.5
IOU_1_MEAN = (3 / 4 + 1 / 2) / 2                   # 0.625


def build_report(invalid: bool = True, **options) -> dict:
    preds = {"a": PRED_A, "b": PRED_B}
    refs = {"a": REF_A, "b": REF_B}
    if invalid:
        preds["c"], refs["c"] = np.ones((3, 3), int), REF_A
    return segeval.evaluate(preds, refs, label_names=NAMES, **options).to_dict()


@pytest.fixture(scope="module")
def report() -> dict:
    return build_report()


# --- parsing ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("0.85", Bar("0.85", 0.85)),
    (" 0.85 ", Bar("0.85", 0.85)),
    ("dice=0.85", Bar("dice=0.85", 0.85, "dice")),
    ("Dice=0.5", Bar("Dice=0.5", 0.5, "dice")),
    ("iou:micro=0.7", Bar("iou:micro=0.7", 0.7, "iou", reduction="micro")),
    ("dice:macro=0.7", Bar("dice:macro=0.7", 0.7, "dice", reduction="macro")),
    ("dice:macro_imagewise=0.8",
     Bar("dice:macro_imagewise=0.8", 0.8, "dice", reduction="macro_imagewise")),
    ("dice:tumour=0.6", Bar("dice:tumour=0.6", 0.6, "dice", class_ref="tumour")),
    ("dice:2=0.6", Bar("dice:2=0.6", 0.6, "dice", class_ref="2")),
    ("dice:2:mean=0.6", Bar("dice:2:mean=0.6", 0.6, "dice", class_ref="2", statistic="mean")),
    ("recall:tumour:pooled=1", Bar("recall:tumour:pooled=1", 1.0, "recall",
                                   class_ref="tumour")),
    ("dice:whole tumour=0", Bar("dice:whole tumour=0", 0.0, "dice",
                                class_ref="whole tumour")),
])
def test_parse_every_form(text, expected):
    assert parse_bar(text) == expected


@pytest.mark.parametrize("text, says", [
    ("", "not a number"),
    ("abc", "not a number"),
    ("dice=", "not a number"),
    ("dice=85", "not in [0, 1]"),
    ("dice=-0.1", "not in [0, 1]"),
    ("dice=nan", "not in [0, 1]"),
    ("=0.5", "unknown metric"),
    ("hd95=0.5", "lower-is-better: its bar is an upper bound"),
    ("bogus=0.5", "unknown metric"),
    ("lesion_dice:micro=0.5", "micro does not exist for lesion_dice"),
    ("lesion_dice:2:pooled=0.5", "pooled does not exist for lesion_dice"),
    ("dice:=0.5", "nothing after ':'"),
    ("dice::mean=0.5", "no class"),
    ("dice:macro:mean=0.5", "after the reduction"),
])
def test_parse_errors_name_the_problem(text, says):
    with pytest.raises(UsageError) as caught:
        parse_bar(text)
    assert says in caught.value.message
    assert "--fail-under" in caught.value.message


def test_unknown_metric_lists_the_metrics():
    with pytest.raises(UsageError) as caught:
        parse_bar("bogus=0.5")
    assert "dice, iou, fbeta, precision, recall, specificity" in caught.value.message


# --- checking against a report ---------------------------------------------------------

@pytest.mark.parametrize("text, value, passed", [
    ("0.6", DICE_MACRO, True),                      # headline: dice (macro) = 0.6, met exactly
    ("0.61", DICE_MACRO, False),
    ("dice=0.59", DICE_MACRO, True),                # headline reduction (macro)
    ("dice=0.61", DICE_MACRO, False),
    ("iou=0.45", IOU_MACRO, True),                  # 11/24 = 0.4583
    ("iou=0.46", IOU_MACRO, False),
    ("iou:micro=0.5", IOU_MICRO, True),
    ("iou:micro=0.51", IOU_MICRO, False),
    ("dice:micro=0.66", DICE_MICRO, True),
    ("dice:macro_imagewise=0.58", DICE_MACRO_IMAGEWISE, True),
    ("dice:macro_imagewise=0.59", DICE_MACRO_IMAGEWISE, False),
    ("dice:tumour=0.4", DICE_2_POOLED, True),       # by name
    ("dice:2=0.41", DICE_2_POOLED, False),          # by key
    ("dice:organ=0.8", DICE_1_POOLED, True),
    ("dice:organ:mean=0.76", DICE_1_MEAN, True),    # 16/21 = 0.7619
    ("dice:1:mean=0.77", DICE_1_MEAN, False),
    ("iou:1:mean=0.625", IOU_1_MEAN, True),
])
def test_check_every_form(report, text, value, passed):
    (result,) = check_bars(report, [text])
    assert result.value == pytest.approx(value)
    assert result.passed is passed
    assert result.bar == text
    assert result.threshold == float(text.rpartition("=")[2])


def test_result_fields_say_what_was_measured(report):
    headline, by_name, micro = check_bars(report, parse_bars(
        ["0.6", "dice:tumour:mean=0.5", "iou:micro=0.7"]))
    assert (headline.metric, headline.scope, headline.class_key) == ("dice", "macro", None)
    assert (by_name.scope, by_name.class_key, by_name.class_name, by_name.statistic) == \
        ("class", "2", "tumour", "mean")
    assert by_name.target == "dice of class 2 tumour (mean)"
    assert by_name.verdict == "dice of class 2 tumour (mean) = 0.4000 < 0.5"
    assert (micro.metric, micro.scope, micro.passed) == ("iou", "micro", False)
    assert micro.to_dict()["value"] == pytest.approx(0.5)


def test_headline_bar_follows_the_configured_headline():
    data = build_report(invalid=False, headline="micro", headline_metric="iou")
    plain, metric_only = check_bars(data, ["0.5", "dice=0.66"])
    assert (plain.metric, plain.scope, plain.value) == ("iou", "micro", pytest.approx(0.5))
    assert (metric_only.scope, metric_only.value) == ("micro", pytest.approx(DICE_MICRO))


def test_undefined_value_fails():
    # Class 3 is declared but in no mask: its Dice is undefined everywhere.
    data = segeval.evaluate({"a": PRED_A}, {"a": REF_A}, labels=[1, 2, 3]).to_dict()
    (result,) = check_bars(data, ["dice:3=0"])
    assert result.value is None and not result.passed
    assert "undefined" in result.verdict


def test_unknown_class_names_the_choices(report):
    with pytest.raises(UsageError) as caught:
        check_bars(report, ["dice:spleen=0.5"])
    message = caught.value.message
    assert "'spleen'" in message
    assert "1 organ" in message and "2 tumour" in message
    assert "macro, micro, macro_imagewise" in message


def test_ambiguous_class_name():
    data = segeval.evaluate({"a": PRED_A}, {"a": REF_A}, label_names={1: "x", 2: "x"}).to_dict()
    with pytest.raises(UsageError, match="used by classes 1, 2"):
        check_bars(data, ["dice:x=0.5"])
    assert check_bars(data, ["dice:1=0.5"])[0].class_key == "1"


def test_bars_table_renders(report):
    from rich.console import Console

    console = Console(width=120, record=True, color_system=None)
    console.print(bars_table(check_bars(report, ["0.6", "dice:2=0.41"])))
    text = console.export_text()
    assert "0.6000" in text and "0.4000" in text and "pass" in text and "FAIL" in text


# --- renderers -------------------------------------------------------------------------

BARS = ["0.6", "dice:tumour=0.41", "iou:micro=0.5", "dice:1:mean=0.77"]


def test_markdown_holds_the_numbers(report):
    text = to_markdown(report, check_bars(report, BARS))
    assert text.startswith("### segeval: dice (macro) = 0.6000 · ❌ 2 bar(s) missed")
    assert "| 1 organ | 0.8000 | 0.7619 ± 0.0952 | 2/2 | 0 |" in text  # std |6/7-2/3|/2
    assert "| 2 tumour | 0.4000 | 0.4000 ± 0.0000 | 1/2 | 1 |" in text
    assert "| **macro** | 0.6000 |" in text
    assert "| **macro_imagewise** |  | 0.5810 |" in text
    assert "| **micro** | 0.6667 |" in text
    assert "| `dice:tumour=0.41` | dice of class 2 tumour (pooled) | 0.4000 | ❌ |" in text
    assert "| `iou:micro=0.5` | iou (micro) | 0.5000 | ✅ |" in text
    assert "**1 invalid case(s)**" in text and "| c | `E_SHAPE_MISMATCH` |" in text
    assert "3 cases (2 scored, 1 invalid, 0 missing)" in text


def test_markdown_without_bars_or_invalid_cases():
    data = build_report(invalid=False)
    text = to_markdown(data)
    assert "bar" not in text and "invalid case" not in text
    assert text.startswith("### segeval: dice (macro) = 0.6000\n")


def test_markdown_escapes_pipes(report):
    data = {**report, "cases": [{**report["cases"][2], "message": "a | b\nc"}]}
    text = to_markdown(data)
    assert "a \\| b c" in text


def test_junit_parses_back(report):
    results = check_bars(report, BARS)
    root = ET.fromstring(to_junit(report, results))
    suite = root.find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert len(cases) == len(BARS) + 1  # one per bar, one per invalid case
    assert root.get("tests") == suite.get("tests") == "5"
    assert suite.get("failures") == "2" and suite.get("errors") == "1"
    failed = [case.get("name") for case in cases if case.find("failure") is not None]
    assert failed == ["dice:tumour=0.41", "dice:1:mean=0.77"]
    failure = cases[1].find("failure")
    assert failure is not None
    assert failure.get("message") == "dice of class 2 tumour (pooled) = 0.4000 < 0.41"
    error = cases[-1].find("error")
    assert error is not None and cases[-1].get("name") == "c"
    assert error.get("type") == "E_SHAPE_MISMATCH"
    assert cases[0].findtext("system-out") == "dice (macro) = 0.6000 >= 0.6"
    # class names are a contract CI dashboards group by (not module paths)
    assert {case.get("classname") for case in cases} == {"segeval.bars", "segeval.cases"}
    assert suite.get("name") == "segeval"


def test_junit_survives_control_characters(report):
    data = {**report, "cases": [{**report["cases"][2], "id": "bad\x00id",
                                 "message": "bell\x07"}]}
    root = ET.fromstring(to_junit(data))
    (case,) = root.iter("testcase")
    assert case.get("name") == "bad\ufffdid"


def test_github_annotations(report):
    lines = github_annotations(report, check_bars(report, BARS))
    assert lines == [
        "::error title=segeval%3A bar dice%3Atumour=0.41 not met::"
        "dice of class 2 tumour (pooled) = 0.4000 < 0.41",
        "::error title=segeval%3A bar dice%3A1%3Amean=0.77 not met::"
        "dice of class 1 organ (mean) = 0.7619 < 0.77",
        "::error file=prediction['c'],title=E_SHAPE_MISMATCH::c: "
        + report["cases"][2]["message"],
    ]


def test_github_escaping():
    assert escape_data("50% a\r\nb: c, d") == "50%25 a%0D%0Ab: c, d"
    assert escape_property("50% a\r\nb: c, d") == "50%25 a%0D%0Ab%3A c%2C d"
    line = annotation("t:1,2", "m\n100%", file="dir/a,b:c.png")
    assert line == "::error file=dir/a%2Cb%3Ac.png,title=t%3A1%2C2::m%0A100%25"


def test_github_file_is_the_file_the_message_names(report):
    case = {**report["cases"][2], "message": "reference['c']: unreadable\r\n"}
    (line,) = github_annotations({**report, "cases": [case]})
    assert line.startswith("::error file=reference['c'],title=E_SHAPE_MISMATCH::")
    assert line.endswith("unreadable%0D%0A")
    missing = {**case, "prediction": None, "message": "no prediction"}
    assert "file=reference['c']," in github_annotations({**report, "cases": [missing]})[0]


def test_step_summary_appends(tmp_path):
    target = tmp_path / "summary.md"
    assert append_step_summary("one", environ={}) is None
    append_step_summary("one", environ={"GITHUB_STEP_SUMMARY": str(target)})
    append_step_summary("two\n", environ={"GITHUB_STEP_SUMMARY": str(target)})
    assert target.read_text() == "one\n\ntwo\n\n"


def test_write_report_outputs(tmp_path, report, monkeypatch):
    results = check_bars(report, BARS)
    md, xml, summary = tmp_path / "s.md", tmp_path / "bars.xml", tmp_path / "step.md"
    stream = io.StringIO()
    write_report_outputs(report, results, markdown_path=str(md), junit_path=str(xml),
                         github=False, stream=stream)
    assert md.read_text() == to_markdown(report, results)
    assert xml.read_text() == to_junit(report, results)
    assert stream.getvalue() == "" and not summary.exists()
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    write_report_outputs(report, results, github=True, stream=stream)
    assert stream.getvalue().splitlines() == github_annotations(report, results)
    assert summary.read_text().startswith(to_markdown(report, results).rstrip("\n"))
