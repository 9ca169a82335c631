"""NRRD (``.nrrd`` attached, ``.nhdr`` detached), decoded by SimpleITK's ``NrrdImageIO``.

Before ITK sees the file, the header is read as teem's NrrdIO reads it (to its first blank
line, or the whole ``.nhdr``) and checked:

* a ``data file`` field, in any spelling (``datafile``, ``DATA FILE``, a ``key:=value``
  pair, a comment: any line whose letters spell it), must be the one line
  ``data file: NAME`` with NAME a plain file name next to the header; ``LIST`` and
  ``%d`` patterns are refused, and a ``.nhdr`` must name one;
* ``encoding`` must be ``raw``, ``gzip``/``gz`` or ``bzip2``/``bz2``: the text and hex
  encodings are refused (teem aborts on a text encoding over binary bytes, taking the
  process with it), and a label mask is never written that way;
* a field given twice is refused (which one the library uses is not for segeval to guess).
"""

from __future__ import annotations

import re
from pathlib import Path

from segeval import errors
from segeval.errors import CaseError
from segeval.formats import itk
from segeval.formats.mask import Header, Mask
from segeval.formats.spec import Format, Limits

IO_NAME = "NrrdImageIO"
DATA_FILE = re.compile(rb"data ?file: ?(.*)", re.IGNORECASE)
ENCODINGS = {b"raw", b"gzip", b"gz", b"bzip2", b"bz2"}


def check_header(path: Path) -> None:
    """Refuse a header that would make NrrdIO read outside the folder or crash."""
    lines, _ = itk.header_lines(path, lambda line: "before" if not line else None, "NRRD")
    fields: dict[bytes, bytes] = {}
    for line in lines[1:]:  # the first line is the magic NRRD000x
        if line.startswith(b"#") or b":=" in line.split(b": ", 1)[0]:
            continue
        key, _, value = line.partition(b":")
        key = key.strip().lower()
        if key in fields:
            raise CaseError(errors.E_UNREADABLE,
                            f"NRRD header: field {key.decode('latin-1')!r} given twice", path,
                            "write the file again")
        fields[key] = value.strip()
    encoding = fields.get(b"encoding", b"raw").lower()
    if encoding not in ENCODINGS:
        raise CaseError(errors.E_UNREADABLE,
                        f"NRRD encoding {encoding.decode('latin-1')!r} is not read (raw, gzip "
                        "or bzip2 only)", path, "write the mask with raw or gzip encoding")
    named = itk.mentions(lines, b"datafile")
    if not named:
        if path.name.lower().endswith(".nhdr"):
            raise CaseError(errors.E_UNREADABLE, "detached header names no data file", path)
        return
    match = DATA_FILE.fullmatch(named[0])
    if len(named) > 1 or match is None:
        shown = b" / ".join(line[:80] for line in named).decode("utf-8", "replace")
        raise CaseError(errors.E_UNSAFE_PATH,
                        f"the NRRD header names its data file in a form segeval does not "
                        f"accept: {shown!r}", path,
                        "one line 'data file: NAME' with NAME a file next to the header")
    itk.check_data_file(path, match.group(1).strip(b" \t").decode("utf-8", "replace"), "NRRD")


def probe(path: Path, head: bytes, limits: Limits) -> Header:
    check_header(path)
    return itk.probe(path, IO_NAME)


def read(path: Path) -> Mask:
    check_header(path)
    return itk.read(path, IO_NAME)


FORMAT = Format(name="NRRD", suffixes=(".nrrd", ".nhdr"),
                magic=lambda head, suffix: head.startswith(b"NRRD"), probe=probe, read=read)
