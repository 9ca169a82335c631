"""Minimal reproducers of the kinds of input the fuzz run of issue 13 found, one test each.

Every hostile header here points at a decoy file outside the evaluated folder; a
:class:`~tests.corpus.DecoyWatch` (inotify) asserts that no process ever opened it.  The
decoy holds valid voxels, so a header that reached it would otherwise load and score.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segeval import errors
from segeval.errors import CaseError
from segeval.formats import load_mask
from tests.corpus import DecoyWatch, labels

NRRD_TOP = "NRRD0004\ntype: uint8\ndimension: 3\nsizes: 6 5 4\nencoding: raw\n"
SMALL = (6, 5, 4)
META_TOP = "ObjectType = Image\nNDims = 3\nDimSize = 6 5 4\nElementType = MET_UCHAR\n"
PADDING = "# " + "x" * 70_000 + "\n"  # pushes a line past the first 64 KiB
META_PADDING = "".join(f"Comment{i} = {'x' * 900}\n" for i in range(80))


@pytest.fixture
def decoy(tmp_path):
    """(folder, decoy path, watch): a folder to evaluate, a decoy next to it."""
    folder, outside = tmp_path / "pred", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    secret = outside / "secret.raw"
    secret.write_bytes(labels(29, SMALL).tobytes("F"))
    watch = DecoyWatch(secret)
    yield folder, secret, watch
    watch.close()


def test_the_decoy_watch_sees_an_open(decoy):
    """The harness itself: a read of the decoy is seen, and only once."""
    _, secret, watch = decoy
    assert not watch.opened()
    secret.read_bytes()
    assert watch.opened()
    assert not watch.opened()


def hostile_headers(secret: Path) -> dict[str, str]:
    """Header text → file name; each names the decoy in a way some check once missed."""
    absolute, parent = str(secret), "../outside/secret.raw"
    headers = {}
    for ref, where in ((absolute, "abs"), (parent, "parent")):
        for suffix in (".nrrd", ".nhdr"):
            headers[f"far_{where}{suffix}"] = NRRD_TOP + PADDING + f"data file: {ref}\n\n"
            headers[f"cr_{where}{suffix}"] = (NRRD_TOP + f"data file: {ref}\n\n").replace(
                "\n", "\r")
            headers[f"upper_{where}{suffix}"] = NRRD_TOP + f"DATAFILE: {ref}\n\n"
            headers[f"space_{where}{suffix}"] = NRRD_TOP + f" data file: {ref}\n\n"
            headers[f"list_{where}{suffix}"] = NRRD_TOP + f"data file: LIST\n{ref}\n"
            headers[f"twice_{where}{suffix}"] = (NRRD_TOP + "data file: ok.raw\n"
                                                 + f"data file: {ref}\n\n")
        for suffix in (".mha", ".mhd"):
            headers[f"space_{where}{suffix}"] = META_TOP + f" ElementDataFile = {ref}\n"
            headers[f"tab_{where}{suffix}"] = META_TOP + f"\tElementDataFile = {ref}\n"
            headers[f"colon_{where}{suffix}"] = META_TOP + f"ElementDataFile : {ref}\n"
            headers[f"far_{where}{suffix}"] = META_TOP + META_PADDING + \
                f"ElementDataFile = {ref}\n"
            headers[f"cr_{where}{suffix}"] = (META_TOP + f"ElementDataFile = {ref}\n"
                                              ).replace("\n", "\r")
            headers[f"list_{where}{suffix}"] = META_TOP + f"ElementDataFile = LIST\n{ref}\n"
    return headers


def test_no_header_reaches_a_data_file_outside_the_folder(decoy):
    """Issue 13 item 1: past 64 KiB, after leading white space, with CR-only line endings,
    in another key spelling, as a LIST, or given twice: never read, always refused."""
    folder, secret, watch = decoy
    (folder / "ok.raw").write_bytes(labels(29, SMALL).tobytes("F"))
    outcomes = {}
    for name, text in hostile_headers(secret).items():
        path = folder / name
        path.write_bytes(text.encode())
        try:
            load_mask(path, root=folder)
            outcomes[name] = "loaded"
        except CaseError as error:
            outcomes[name] = error.code
        assert not watch.opened(), f"{name}: the decoy outside the folder was opened"
    wrong = {name: code for name, code in outcomes.items()
             if code not in (errors.E_UNSAFE_PATH, errors.E_UNREADABLE)}
    assert not wrong, wrong
    # the ones that are not merely unreadable are named as unsafe
    assert outcomes["far_abs.nhdr"] == outcomes["space_abs.mha"] == errors.E_UNSAFE_PATH
    assert outcomes["cr_abs.nrrd"] == errors.E_UNREADABLE


@pytest.mark.parametrize("header,suffix", [
    (NRRD_TOP + "data file: data.raw\n", ".nhdr"),
    (NRRD_TOP + "datafile: data.raw\n\n", ".nrrd"),
    (NRRD_TOP.replace("\n", "\r\n") + "data file: data.raw\r\n", ".nhdr"),
    (META_TOP + "ElementDataFile = data.raw\n", ".mhd"),
    (META_TOP + "  ElementDataFile = data.raw\n", ".mha"),
])
def test_a_plain_data_file_next_to_the_header_is_read(tmp_path, header, suffix):
    """The control: the accepted forms still load, with the voxels of the data file."""
    volume = labels(29, SMALL)
    (tmp_path / "data.raw").write_bytes(volume.tobytes("F"))
    path = tmp_path / f"case{suffix}"
    path.write_bytes(header.encode())
    mask = load_mask(path, root=tmp_path)
    assert mask.array.shape == SMALL
    assert np.array_equal(mask.array, volume)
