"""The command line end to end, through real files and its exit codes.

Numbers for the ``png_folders`` fixture are worked by hand in test_api.py's docstring:
class 1 pooled Dice 8/10, class 2 pooled Dice 2/5, macro 0.6, micro 10/15.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from segeval.commands.app import app
from tests.conftest import write_png

runner = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "120"})
REPO = Path(__file__).resolve().parents[1]


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_dice_per_class_table_and_exit_0(png_folders):
    pred, gt = png_folders
    result = invoke("dice", pred, gt, "--per-class")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "0.8000" in out and "0.4000" in out  # pooled class 1 and 2
    assert "dice (macro) = 0.6000" in out
    assert "0.6667" in out  # micro 10/15


def test_json_report_to_file_matches_printed_numbers(png_folders, tmp_path, validate):
    pred, gt = png_folders
    target = tmp_path / "out" / "report.json"
    result = invoke("evaluate", pred, gt, "--json", target, "--beta", "2")
    assert result.exit_code == 0, result.stderr
    data = validate(target.read_text())
    assert data["config"]["beta"] == 2.0
    assert data["summary"]["macro"]["dice"] == pytest.approx(0.6)
    assert f"{data['summary']['micro']['iou']:.4f}" in result.stdout
    assert data["cases"][0]["prediction"].endswith("a.png")


def test_json_to_stdout_is_pure_json(png_folders, validate):
    pred, gt = png_folders
    result = invoke("iou", pred, gt, "--json", "-")
    assert result.exit_code == 0
    data = validate(result.stdout)
    assert data["headline"]["metric"] == "iou"
    assert data["headline"]["value"] == pytest.approx((4 / 6 + 1 / 4) / 2)


def test_csv_rows_per_case_and_class(png_folders, tmp_path):
    pred, gt = png_folders
    target = tmp_path / "rows.csv"
    assert invoke("dice", pred, gt, "--csv", target, "-q").exit_code == 0
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert [(r["case"], r["class"]) for r in rows] == [("a", "1"), ("a", "2"), ("b", "1"),
                                                      ("b", "2")]
    assert (rows[0]["tp"], rows[0]["fp"], rows[0]["fn"], rows[0]["tn"]) == ("3", "0", "1", "12")
    assert float(rows[0]["dice"]) == pytest.approx(6 / 7)
    assert rows[3]["dice"] == ""  # empty class: null


def test_fail_under_exit_1(png_folders):
    pred, gt = png_folders
    result = invoke("dice", pred, gt, "--fail-under", "0.61")
    assert result.exit_code == 1
    assert "FAIL" in result.stderr and "0.6000" in result.stderr
    assert invoke("dice", pred, gt, "--fail-under", "0.59").exit_code == 0


def test_fail_under_on_micro(png_folders):
    pred, gt = png_folders
    assert invoke("dice", pred, gt, "--headline", "micro", "--fail-under", "0.66").exit_code == 0
    assert invoke("dice", pred, gt, "--headline", "micro", "--fail-under", "0.67").exit_code == 1


@pytest.mark.parametrize("args", [
    ["--empty", "bogus"], ["--labels", "1,x"], ["--threshold", "2"], ["--device", "tpu"],
    ["--region", "broken"], ["--label-names", "liver"],
])
def test_usage_errors_exit_2_with_one_line(png_folders, args):
    pred, gt = png_folders
    result = invoke("dice", pred, gt, *args)
    assert result.exit_code == 2
    assert result.stderr.startswith("segeval: error:")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_missing_folder_exit_2(tmp_path, png_folders):
    pred, _ = png_folders
    result = invoke("dice", pred, tmp_path / "nowhere")
    assert result.exit_code == 2
    assert "does not exist" in result.stderr


def test_invalid_case_exit_3_and_report_still_written(png_folders, tmp_path, validate):
    pred, gt = png_folders
    write_png(gt / "c.png", np.zeros((5, 5)))
    write_png(pred / "c.png", np.zeros((4, 4)))  # wrong shape
    target = tmp_path / "r.json"
    result = invoke("dice", pred, gt, "--json", target)
    assert result.exit_code == 3
    assert "E_SHAPE_MISMATCH" in result.stderr and "c.png" in result.stderr
    data = validate(target.read_text())
    status = {c["id"]: (c["status"], c["error_code"]) for c in data["cases"]}
    assert status == {"a": ("ok", None), "b": ("ok", None), "c": ("error", "E_SHAPE_MISMATCH")}
    assert data["summary"]["macro"]["dice"] == pytest.approx(0.6)  # the good cases are intact


def test_missing_prediction_rules_and_exit_codes(png_folders):
    pred, gt = png_folders
    (pred / "b.png").unlink()
    result = invoke("dice", pred, gt)
    assert result.exit_code == 3
    assert "E_MISSING_PREDICTION" in result.stderr and "b" in result.stderr
    assert invoke("dice", pred, gt, "--missing", "skip").exit_code == 0
    result = invoke("dice", pred, gt, "--missing", "empty", "--json", "-", "-q")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    # b scored as empty: class 1 adds FN 1 → pooled TP 3 FP 0 FN 2
    assert data["per_class"]["1"]["pooled"]["dice"] == pytest.approx(6 / 8)


def test_label_names_from_nnunet_dataset_json(png_folders, tmp_path):
    pred, gt = png_folders
    dataset = tmp_path / "dataset.json"
    dataset.write_text(json.dumps({"labels": {"background": 0, "liver": 1, "tumour": 2}}))
    result = invoke("dice", pred, gt, "--label-names", dataset, "--per-class")
    assert result.exit_code == 0
    assert "1 liver" in result.stdout and "2 tumour" in result.stdout


def test_region_option(png_folders):
    pred, gt = png_folders
    result = invoke("dice", pred, gt, "--region", "any=1,2", "--json", "-", "-q")
    data = json.loads(result.stdout)
    assert list(data["per_class"]) == ["any"]
    # a: TP 4 FN 4; b: TP 1 FP 1 → pooled 10/(10 + 1 + 4)
    assert data["per_class"]["any"]["pooled"]["dice"] == pytest.approx(10 / 15)


def test_per_case_table(png_folders):
    pred, gt = png_folders
    result = invoke("dice", pred, gt, "--per-case")
    assert result.exit_code == 0
    assert "0.8571" in result.stdout and "0.6667" in result.stdout and "—" in result.stdout


def test_sample_data_quickstart_runs():
    result = invoke("dice", REPO / "sample_data/nifti3d/pred", REPO / "sample_data/nifti3d/gt",
                    "--per-class", "--label-names", REPO / "sample_data/nifti3d/labels.json")
    assert result.exit_code == 0, result.stderr
    assert "liver" in result.stdout and "kidney" in result.stdout


def run_process(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "NO_COLOR": "1", **env}, timeout=120)


def test_python_m_segeval_and_no_torch_on_cpu_runs(png_folders):
    pred, gt = png_folders
    code = (
        "import sys, runpy\n"
        f"sys.argv = ['segeval', 'dice', {str(pred)!r}, {str(gt)!r}, '-q']\n"
        "try:\n    runpy.run_module('segeval', run_name='__main__')\n"
        "except SystemExit as e:\n    code = e.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('exit', code)\n"
    )
    result = run_process("-c", code)
    assert result.returncode == 0, result.stderr
    assert "exit 0" in result.stdout


def test_import_segeval_does_not_import_torch():
    result = run_process("-c", "import sys, segeval, segeval.commands.app; "
                         "assert 'torch' not in sys.modules; print('ok')")
    assert result.stdout.strip() == "ok", result.stderr


def test_help_lists_exit_codes():
    result = run_process("-m", "segeval", "dice", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())  # rich wraps lines
    assert "Exit codes: 0 success; 1 a --fail-under bar not met" in text
    assert "3 one or more cases had invalid input" in text


@pytest.mark.parametrize("args", [
    ["evaluate", "--help"], ["dice", "-h"], ["grade", "--help"], ["compare", "--help"],
    ["evaluate"], ["iou", "a", "b", "--bogus"], ["fbeta", "a", "b", "--beta", "x"],
    ["evaluate", "{pred}", "{gt}", "--json", "-", "-q"], ["dice", "{pred}", "{gt}"],
    ["evaluate", "{pred}", "{gt}", "--labels", "1,7"],
], ids=lambda args: "-".join(a.strip("-{}") for a in args))
def test_single_command_app_behaves_like_the_full_app(png_folders, args):
    """main() builds only the command named by the first argument (start-up time); its
    output and exit code must be the full app's."""
    from segeval.commands.app import app_for

    pred, gt = png_folders
    argv = [a.format(pred=pred, gt=gt) for a in args]
    single = app_for(argv)
    assert single is not app and len(single.registered_commands) == 1
    full_result = runner.invoke(app, argv)
    single_result = runner.invoke(single, argv)
    assert single_result.exit_code == full_result.exit_code
    assert single_result.stderr == full_result.stderr
    if argv[-2:] == ["-", "-q"]:  # a JSON report: the same but for when and how long
        reports = [json.loads(r.stdout) for r in (single_result, full_result)]
        for report in reports:
            assert report["run"].pop("seconds") >= 0 and report["run"].pop("created")
        assert reports[0] == reports[1]
    else:
        assert single_result.stdout == full_result.stdout


@pytest.mark.parametrize("args", [[], ["--help"], ["-h", "evaluate"], ["evaluat", "a", "b"]])
def test_full_app_without_a_command_name_first(args):
    from segeval.commands.app import app_for

    assert app_for(args) is app


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_interactive_run_in_a_terminal_shows_progress_and_the_table():
    """On a terminal (no -q) the run shows rich's progress bar on stderr: the path the
    CliRunner tests cannot take, because their output is not a terminal."""
    import pty
    import select

    command = [sys.executable, "-m", "segeval", "dice", str(REPO / "sample_data/png2d/pred"),
               str(REPO / "sample_data/png2d/gt"), "--label-names",
               str(REPO / "sample_data/png2d/labels.json")]
    pid, fd = pty.fork()
    if pid == 0:  # the child: stdin, stdout and stderr are the pseudo-terminal
        os.chdir(REPO)
        os.execvpe(command[0], command, {**os.environ, "COLUMNS": "120"})
    output = b""
    while True:
        ready, _, _ = select.select([fd], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    text = output.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "internal error" not in text
    assert "dice (macro) = 0.7443" in text  # the README's quickstart number


# --- the command-line paper cuts (issue 14, item 4) -------------------------------------

def test_version_prints_the_package_version():
    from segeval.version import __version__

    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"segeval {__version__}"


def test_repeated_json_and_csv_write_every_target(png_folders, tmp_path, validate):
    pred, gt = png_folders
    first, second, table = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.csv"
    result = invoke("dice", pred, gt, "--json", first, "--json", second, "--csv", table, "-q")
    assert result.exit_code == 0, result.stderr
    for path in (first, second):
        assert validate(path.read_text())["summary"]["macro"]["dice"] == pytest.approx(0.6)
    assert table.read_text().startswith("case,")


def test_two_outputs_to_stdout_is_a_usage_error(png_folders):
    pred, gt = png_folders
    result = invoke("dice", pred, gt, "--json", "-", "--csv", "-")
    assert result.exit_code == 2
    assert "only one of --json, --csv and --lesions can write to stdout" in result.stderr


def test_export_is_repeatable(png_folders, tmp_path):
    pred, gt = png_folders
    nnunet, challenge = tmp_path / "summary.json", tmp_path / "metrics.json"
    result = invoke("dice", pred, gt, "--export", f"nnunet={nnunet}",
                    "--export", f"grand-challenge={challenge}", "-q")
    assert result.exit_code == 0, result.stderr
    assert json.loads(nnunet.read_text())["foreground_mean"]["Dice"] == pytest.approx(
        json.loads(challenge.read_text())["aggregates"]["macro_imagewise"]["dice"])


@pytest.mark.parametrize(("bar", "words"), [
    ("dice:tumor=0.6", "no class named 'tumor'"),
    ("dice:macro_imagwise=0.5", "did you mean 'macro_imagewise'"),
    ("dice:7=0.5", "label 7 is not among --labels 1,2"),
])
def test_a_bar_naming_a_class_the_run_cannot_have_fails_before_reading(png_folders, tmp_path,
                                                                        bar, words):
    pred, gt = png_folders
    target = tmp_path / "report.json"
    result = invoke("dice", pred, gt, "--labels", "1,2", "--label-names", "1=organ,2=tumour",
                    "--fail-under", bar, "--json", target)
    assert result.exit_code == 2
    assert words in result.stderr
    assert not target.exists()  # refused before any case was read or report written


def test_label_names_path_that_does_not_exist(png_folders):
    pred, gt = png_folders
    result = invoke("dice", pred, gt, "--label-names", "labels/dataset.json")
    assert result.exit_code == 2
    assert "--label-names 'labels/dataset.json': file not found" in result.stderr


def test_help_is_grouped_into_panels_and_keeps_brackets():
    result = run_process("-m", "segeval", "evaluate", "--help")
    assert result.returncode == 0
    for panel in ("Inputs", "Classes", "Probabilities", "Outputs", "CI", "Performance"):
        assert f"─ {panel} ─" in result.stdout
    text = " ".join(result.stdout.split())
    assert "segeval[report]" in text and "segeval[dask]" in text
    assert "Examples:" in text
