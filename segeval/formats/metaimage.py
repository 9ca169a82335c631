"""MetaImage (``.mha`` attached, ``.mhd`` detached), decoded by SimpleITK's ``MetaImageIO``.

Before ITK sees the file, the header is read as MetaIO reads it (line by line up to the
``ElementDataFile`` line, which ends it; a key is the text before the first ``=`` or ``:``,
leading white space ignored) and checked:

* the ``ElementDataFile`` line, in any spelling (any line whose letters spell it), must be
  ``ElementDataFile = LOCAL`` or name a plain file next to the header; ``LIST`` and
  ``%d`` patterns are refused;
* every line is ``key = value`` (MetaIO reads a key up to ``=`` or ``:``, across line
  ends: a line without one would join the next line's key and shift its framing);
* no key may be given twice (MetaIO uses the last ``NDims``, a check of the first one would
  check the wrong one), ``NDims`` is a whole number from 1 to 10 (MetaIO's limit; above it
  MetaIO writes on stdout and crashes), and ``DimSize`` holds ``NDims`` positive sizes.

With ``CompressedData = True`` SimpleITK returns whatever its buffer held when the zlib
stream is truncated or corrupt (five reads, five arrays).  :func:`read` therefore inflates
the payload itself and accepts ITK's array only if it holds exactly those bytes.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from segeval import errors
from segeval.errors import CaseError
from segeval.formats import itk
from segeval.formats.mask import Header, Mask
from segeval.formats.spec import Format, Limits

IO_NAME = "MetaImageIO"
MAX_NDIMS = 10  # MetaIO's own limit
LOCAL = ("LOCAL", "Local", "local")
INFLATE_CHUNK = 1 << 20


def _ends(line: bytes) -> str | None:
    return "after" if b"elementdatafile" in itk.normalized(line) else None


def check_header(path: Path) -> tuple[dict[str, str], int]:
    """The header's fields and the offset where its data begin (for ``LOCAL`` data);
    refuses a header that would make MetaIO read outside the folder or crash."""
    lines, end = itk.header_lines(path, _ends, "MetaImage")
    fields: dict[str, str] = {}
    for line in lines:
        text = line.decode("latin-1").lstrip()
        if not text:
            continue
        cut = min((i for i in (text.find("="), text.find(":")) if i >= 0), default=-1)
        if cut < 0:  # MetaIO reads a key up to '=' or ':' across line ends: refuse
            raise CaseError(errors.E_UNREADABLE,
                            f"cannot read: MetaImage header line {text[:60]!r} has no '=' "
                            "(MetaIO would join it to the next line's key)", path,
                            "write the header again")
        key, value = text[:cut].strip(), text[cut + 1:].strip()
        if key in fields:
            raise CaseError(errors.E_UNREADABLE, f"MetaImage header: {key!r} given twice", path,
                            "write the file again")
        fields[key] = value
    try:
        ndims = int(fields.get("NDims", ""))
        sizes = [int(v) for v in fields.get("DimSize", "").split()]
    except ValueError:
        ndims, sizes = -1, []
    if not 1 <= ndims <= MAX_NDIMS or len(sizes) != ndims or min(sizes, default=0) <= 0:
        raise CaseError(errors.E_BAD_DIMENSIONS,
                        "MetaImage header: NDims and DimSize are not a valid set of dimensions",
                        path, f"NDims from 1 to {MAX_NDIMS}, and as many positive DimSize values")
    if not lines or not _ends(lines[-1]):
        raise CaseError(errors.E_UNREADABLE, "MetaImage header names no ElementDataFile", path)
    name = fields.get("ElementDataFile", "")
    if list(fields).count("ElementDataFile") != 1 or not lines[-1].lstrip().startswith(
            b"ElementDataFile") or name == "":
        raise CaseError(errors.E_UNSAFE_PATH,
                        "the MetaImage header names its data file in a form segeval does not "
                        f"accept: {lines[-1][:80].decode('utf-8', 'replace')!r}", path,
                        "one line 'ElementDataFile = NAME' with NAME LOCAL or a file next to "
                        "the header")
    if name not in LOCAL:
        itk.check_data_file(path, name, "MetaImage")
        with open(path, "rb") as stream:  # a detached header: nothing may follow its end
            stream.seek(end)
            if b"elementdatafile" in itk.normalized(stream.read(itk.HEADER_LIMIT)):
                raise CaseError(errors.E_UNSAFE_PATH, "the MetaImage header names a data "
                                "file twice", path, "one ElementDataFile line")
    return fields, end


def probe(path: Path, head: bytes, limits: Limits) -> Header:
    check_header(path)
    return itk.probe(path, IO_NAME)


def read(path: Path) -> Mask:
    fields, end = check_header(path)
    mask = itk.read(path, IO_NAME)
    if fields.get("CompressedData", "False") not in ("False", "false", "FALSE"):
        # not only "True": MetaIO takes any value starting with T (the release fuzz run
        # scored "True\xff..." as compressed data from uninitialised memory)
        _check_payload(path, fields, end, mask.array.T)
    return mask


def _check_payload(path: Path, fields: dict[str, str], end: int, array: np.ndarray) -> None:
    """ITK's array (z, y, x) must be exactly the inflated payload: a truncated or corrupt
    zlib stream is refused instead of scored from uninitialised memory."""
    if "HeaderSize" in fields:
        raise CaseError(errors.E_UNREADABLE, "MetaImage header: HeaderSize with compressed data",
                        path, "write the file again")
    name = fields["ElementDataFile"]
    source, offset = (path, end) if name in LOCAL else (path.parent / name, 0)
    msb = fields.get("ElementByteOrderMSB", fields.get("BinaryDataByteOrderMSB", "False"))
    dtype = array.dtype.newbyteorder(">" if msb.lower() == "true" else "<")
    wanted = array.nbytes
    inflater = zlib.decompressobj(47)  # zlib or gzip wrapper, as MetaIO accepts
    pieces: list[bytes] = []
    produced = 0
    try:
        with open(source, "rb") as stream:
            stream.seek(offset)
            while produced <= wanted and not inflater.eof:
                block = stream.read(INFLATE_CHUNK)
                if not block:
                    break
                piece = inflater.decompress(block, wanted + 1 - produced)
                pieces.append(piece)
                produced += len(piece)
                while inflater.unconsumed_tail and produced <= wanted and not inflater.eof:
                    piece = inflater.decompress(inflater.unconsumed_tail, wanted + 1 - produced)
                    pieces.append(piece)
                    produced += len(piece)
    except zlib.error as exc:
        raise CaseError(errors.E_UNREADABLE, f"the compressed data are corrupt ({exc})", path,
                        "the file is damaged; write it again") from None
    data = b"".join(pieces)
    if not inflater.eof or len(data) != wanted:
        raise CaseError(errors.E_UNREADABLE,
                        f"the compressed data inflate to {len(data)}"
                        f"{'' if inflater.eof else ' (truncated stream)'} bytes, the header "
                        f"announces {wanted}", path, "the file is incomplete; write it again")
    if not np.array_equal(np.frombuffer(data, dtype=dtype).reshape(array.shape), array):
        raise CaseError(errors.E_UNREADABLE,
                        "SimpleITK's reading differs from the compressed data", path,
                        "the file is damaged; write it again")


def _magic(head: bytes, suffix: str) -> bool:
    return b"NDims" in head or head.startswith(b"ObjectType")


FORMAT = Format(name="MetaImage", suffixes=(".mha", ".mhd"), magic=_magic, probe=probe,
                read=read)
