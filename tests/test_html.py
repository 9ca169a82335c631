"""The HTML report: sections, numbers, escaping, no network, and a real headless Chromium.

Run as a script (``python -m tests.test_html docs/img``) to regenerate the pictures in
``docs/img/`` from ``sample_data/nifti3d``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

import segeval
from segeval.errors import UsageError
from segeval.verdicts.leaderboard import grade
from tests.conftest import write_png

pytest.importorskip("matplotlib")
from segeval.outputs.html import render_html, write_html  # noqa: E402
from segeval.outputs.overlays import write_overlays  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = "<script>alert('x')</script>"
HOSTILE_CASE = "c<b>2</b>"
HOSTILE_TEAM = "<img src=x onerror=alert(1)>"
SECTIONS = ("configuration", "summary", "per-class", "distributions", "sweep", "invalid",
            "cases")
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium"
                                        if Path("/usr/bin/chromium").exists() else None)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                  "--enable-logging=stderr", "--v=0"]


class Page(HTMLParser):
    """Every tag with its attributes, the text, and the ids of sections."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    @property
    def content(self) -> str:
        return " ".join(self.text)

    def ids(self, tag: str) -> list[str]:
        return [a["id"] for t, a in self.tags if t == tag and a.get("id")]


@pytest.fixture(scope="module")
def report() -> dict:
    rng = np.random.default_rng(8)
    references = {f"c{i}": (rng.random((12, 10)) < 0.4).astype(np.uint8) for i in range(5)}
    references[HOSTILE_CASE] = references.pop("c2")
    predictions = {k: np.clip(v * 0.4 + rng.random(v.shape) * 0.6, 0, 1).astype(np.float32)
                   for k, v in references.items()}
    predictions["c4"][0, 0] = np.nan  # an invalid case
    return segeval.evaluate(predictions, references, sweep=[0.3, 0.5, 0.7],
                            label_names={1: HOSTILE}, workers=1).to_dict()


@pytest.fixture(scope="module")
def leaderboard(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("grade")
    reference = np.zeros((6, 6), np.uint8)
    reference[1:4, 1:4] = 1
    for case in ("a", "b", "c"):
        write_png(root / "gt" / f"{case}.png", np.roll(reference, ord(case) % 3, axis=0))
    for team, shift in (("exact", 0), ("off", 1), (HOSTILE_TEAM, 2)):
        for case in ("a", "b", "c"):
            labels = np.roll(reference, ord(case) % 3, axis=0)
            write_png(root / "subs" / team / f"{case}.png",
                      np.roll(labels, shift if case != "a" else 0, axis=1))
    board = grade(root / "subs", root / "gt", root / "out", bootstrap=50, seed=1, workers=1)
    return json.loads(board.to_json())


def test_sections_numbers_and_escaping(report):
    text = render_html(report)
    page = Page(text)
    assert set(SECTIONS) <= set(page.ids("section"))
    content = page.content
    summary = report["summary"]
    for name in ("macro", "macro_imagewise", "micro"):
        for metric in ("dice", "iou", "fbeta", "precision", "recall", "specificity"):
            assert f"{summary[name][metric]:.4f}" in content
    block = report["per_class"]["1"]
    assert f"{block['mean']['dice']:.4f} ± {block['std']['dice']:.4f}" in content
    assert f"{block['n_used']['dice']}/{block['n_cases']}" in content
    for key, value in report["config"].items():
        assert key in content and (json.dumps(value) in content or str(value) in content)
    best = report["sweep"]["summary"]["macro"]["best"]
    assert f"{best['value']:.4f}" in content and f"{best['threshold']:g}" in content
    assert "E_NAN" in content and "holds NaN" in content  # the invalid case and its message
    # hostile strings arrive as text, never as markup
    assert HOSTILE in content and HOSTILE_CASE in content
    assert HOSTILE not in text and HOSTILE_CASE not in text
    assert not [t for t, _ in page.tags if t in ("script", "b", "iframe", "object", "embed")]
    assert all(not name.startswith("on") for _, attrs in page.tags for name in attrs)


def test_no_network_resources(report, tmp_path):
    reference = np.zeros((5, 5), np.uint8)
    reference[1:4, 1:4] = 1
    write_png(tmp_path / "gt" / "x.png", reference)
    write_png(tmp_path / "pred" / "x.png", np.roll(reference, 1, axis=1))
    small = segeval.evaluate(tmp_path / "pred", tmp_path / "gt", workers=1).to_dict()
    overlays = write_overlays(small, tmp_path / "overlays")
    for text in (render_html(report), render_html(small, overlays=overlays)):
        assert "http://" not in text and "https://" not in text and "//" not in re.sub(
            r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text).replace("</", "")
        page = Page(text)
        for _, attrs in page.tags:
            for name in ("src", "href", "xlink:href", "action", "srcset"):
                value = attrs.get(name)
                assert value is None or value.startswith(("#", "data:image/png;base64,"))
        assert "url(" not in text.replace("url(#", "")  # only references inside an SVG
    assert sum(1 for t, a in Page(render_html(small, overlays=overlays)).tags
               if t == "img" and a["src"].startswith("data:image/png")) == 1


def test_points_carry_their_case_ids(report):
    text = render_html(report)
    scored = [case["id"] for case in report["cases"]
              if case.get("metrics", {}).get("1", {}).get("dice") is not None]
    titles = re.findall(r'<g id="dist-0-\d+">\s*<title>([^<]*)</title>', text)
    assert len(titles) == len(scored) == 4
    page = Page("".join(f"<p>{t}</p>" for t in titles))
    assert sorted(p.split(":")[0] for p in page.text) == sorted(scored)


def test_leaderboard_with_intervals_and_stability(leaderboard):
    text = render_html(None, leaderboard=leaderboard)
    page = Page(text)
    assert page.ids("section") == ["leaderboard"]
    content = page.content
    for team in leaderboard["teams"]:
        assert team["team"] in content
        assert f"{team['score']:.4f}" in content
        assert f"{team['ci_low']:.4f} – {team['ci_high']:.4f}" in content
        assert f"{team['rank_stability']:.4f}" in content
    assert HOSTILE_TEAM not in text
    assert not [t for t, _ in page.tags if t == "img"]
    assert len(re.findall(r'<g id="interval-\d+">', text)) == 3
    assert len(re.findall(r'<g id="stability-\d+">', text)) == 3


def test_write_html_is_atomic_and_matplotlib_is_required(report, tmp_path, monkeypatch):
    target = tmp_path / "out" / "report.html"
    write_html(target, report)
    assert target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in target.parent.iterdir()] == ["report.html"]
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib → ImportError
    with pytest.raises(UsageError) as error:
        render_html(report)
    assert "needs matplotlib" in error.value.message
    assert "segeval[report]" in error.value.hint
    with pytest.raises(UsageError):
        render_html(None)


# ----------------------------------------------------------------------------- Chromium

def run_chromium(args: list[str], page: Path, profile: Path) -> subprocess.CompletedProcess:
    assert CHROMIUM is not None
    return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args,
                           page.as_uri()], capture_output=True, text=True, timeout=90)


def console_errors(stderr: str) -> list[str]:
    """Lines of Chromium's log that report the page's console or a script error."""
    return [line for line in stderr.splitlines()
            if re.search(r"CONSOLE|Uncaught|Refused to|Content Security Policy", line)]


def screenshot(page: Path, png: Path, profile: Path, height: int = 2000) -> list[str]:
    done = run_chromium([f"--screenshot={png}", f"--window-size=1280,{height}"], page, profile)
    assert png.exists(), done.stderr[-2000:]
    return console_errors(done.stderr)


def sample_report(out: Path) -> tuple[dict, dict]:
    data = ROOT / "sample_data" / "nifti3d"
    names = json.loads((data / "labels.json").read_text())
    labels = {int(v): k for k, v in names["labels"].items() if int(v) > 0} \
        if "labels" in names else {int(k): v for k, v in names.items()}
    report = segeval.evaluate(data / "pred", data / "gt", label_names=labels,
                              workers=1).to_dict()
    return report, write_overlays(report, out / "overlays", worst=1)


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (chromium, /usr/bin/chromium)"
                    "; install it with: apt-get install -y chromium")
def test_opens_in_headless_chromium(report, leaderboard, tmp_path):
    sample, overlays = sample_report(tmp_path)
    page = tmp_path / "report.html"
    write_html(page, sample, overlays=overlays, leaderboard=None)
    swept = tmp_path / "swept.html"
    write_html(swept, report, leaderboard=leaderboard)

    dom = run_chromium(["--dump-dom"], swept, tmp_path / "profile")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert console_errors(dom.stderr) == []
    rendered = Page(dom.stdout)
    assert set(SECTIONS) | {"leaderboard"} <= set(rendered.ids("section"))
    content = rendered.content
    assert f"{report['summary']['macro']['dice']:.4f}" in content
    assert HOSTILE in content and HOSTILE_TEAM in content
    assert not [t for t, _ in rendered.tags if t in ("script", "b")]
    assert len(re.findall(r"<svg\b", dom.stdout)) == 4  # distribution, sweep, 2 grading

    dom = run_chromium(["--dump-dom"], page, tmp_path / "profile")
    assert console_errors(dom.stderr) == []
    rendered = Page(dom.stdout)
    assert "worst-cases" in rendered.ids("section")
    assert sum(t == "img" for t, _ in rendered.tags) == sum(map(len, overlays.values()))
    assert f"{sample['headline']['value']:.4f}" in rendered.content

    png = tmp_path / "report.png"  # kept as a test artefact under tmp_path
    assert screenshot(page, png, tmp_path / "profile") == []
    from PIL import Image

    with Image.open(png) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape == (2000, 1280, 3)
    assert (pixels < 250).any(axis=2).mean() > 0.02  # not blank: text, tables, plots
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50

    # the console check can fail: a page with a script error is caught
    broken = tmp_path / "broken.html"
    broken.write_text("<!DOCTYPE html><p>x</p><script>undefinedFunction()</script>")
    assert console_errors(run_chromium(["--dump-dom"], broken, tmp_path / "profile").stderr)


def make_docs_pictures(destination: Path) -> None:
    """docs/img/report.png (the top of the HTML report of sample_data/nifti3d) and
    docs/img/overlay.png (its worst liver case, axial), as small palette PNGs."""
    import tempfile

    from PIL import Image

    destination.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        sample, overlays = sample_report(work)
        page = work / "report.html"
        write_html(page, sample, overlays=overlays)
        screenshot(page, work / "full.png", work / "profile", height=1800)
        with Image.open(work / "full.png") as image:
            image.convert("RGB").quantize(64).save(destination / "report.png", optimize=True)
        first = next(iter(overlays.values()))[0][1]
        with Image.open(first) as image:
            image.convert("RGB").quantize(32).save(destination / "overlay.png", optimize=True)


if __name__ == "__main__":
    make_docs_pictures(Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "docs" / "img"))
