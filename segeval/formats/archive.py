"""Safe extraction of submitted archives (zip, tar, tar.gz) into a private folder.

Submissions from strangers arrive as ``.zip``, ``.tar``, ``.tar.gz`` or ``.tgz``.  An archive
is recognised by its first bytes, never by its name alone (:func:`is_archive`), and unpacked
by :func:`extract_submission` in two steps:

1. **The listing is checked before anything is written.**  Every rule that can be checked
   from the zip central directory or from the tar headers is checked for every member:

   * names: no NUL byte or control character, valid UTF-8, no absolute path, no drive
     letter or other colon, no ``..`` component, no component over 255 bytes; a backslash
     counts as a folder separator;
   * types: regular files and folders only (no symbolic or hard link, device, FIFO, socket,
     sparse file or other tar type);
   * zip: no encrypted member, no compression method but stored (0) and deflated (8), no
     two members whose data overlap (the "overlapping files" bomb), a stored member's two
     sizes agree;
   * tar: only uncompressed or gzip-compressed tar; pax / GNU metadata headers of at most
     1 MiB each (64 KiB for GNU long names), at most 4 in a row, and together at most
     8 MiB + 2 KiB per allowed member; no pax ``GNU.sparse`` keys; a pax global header may
     not set ``path``, ``linkpath`` or ``size``;
   * caps (:class:`ArchiveLimits`): member count (for zip first from the end record, and
     a central directory of at most 1 KiB per allowed member, before :mod:`zipfile` parses
     it); declared size of each member and of all
     members together, whether or not a member is extracted; for zip, each member's ratio
     of expanded to compressed size; for tar.gz, the ratio of the expanded tar stream to
     the archive's file size, checked at each header against where the stream will end;
   * content: nested archives by name; duplicate case ids; mask files in sub-folders.

2. **Members are then streamed** in 1 MiB chunks into files created with
   ``O_CREAT | O_EXCL`` and mode ``0o600`` directly in ``destination``.  Declared sizes are
   never trusted: zip members are inflated by segeval itself (not by :mod:`zipfile`), every
   cap is checked again on the bytes actually produced, a member that produces more bytes
   than its directory entry declares is stopped at once, and the CRC-32 and size are checked
   at the end.  The first 512 bytes of each mask file are checked for the magic bytes of
   another archive (zip, gzip outside ``.nii.gz``, bzip2, xz, 7z, rar, zstd, tar).  Tar is
   read by a small parser in this module (ustar, GNU and pax formats), so the headers that
   were checked are the headers that are extracted; the second pass compares every header
   with the first and refuses an archive that changed in between.  A gzip stream is
   inflated to its end once (within the caps), so that its CRC-32 is checked.

On any refusal every file written so far is removed: ``destination`` is left empty.

Rules where the issue was silent, chosen here:

* **Flat submissions.**  A submission is a flat set of mask files, optionally all inside
  one common top folder, which is stripped.  The top folder is found among the files that
  are extracted (junk and ignored files do not count).  A mask file in any deeper folder is
  refused (``E_ARCHIVE_NOT_FLAT``): silently flattening could merge two folders' cases.
  Files are written flat, so ``root`` is ``destination`` itself.
* **Junk is listed, not extracted**: anything under ``__MACOSX/``, ``.DS_Store``, ``._*``
  AppleDouble files, ``desktop.ini``, ``Thumbs.db``, and any hidden file or folder.  Junk
  must still pass the name, type, encryption, method and size rules: a hostile name is a
  hostile archive, whatever the file is for.
* **Other files** (``notes.txt``) are listed in ``ignored``.  MetaImage / NRRD data files
  (``.raw``, ``.zraw``, ``.raw.gz``, ``.gz``) are extracted when a ``.mhd`` / ``.nhdr`` of the
  same case id is in the archive; a ``.gz`` file without such a header is a nested archive.
* **Case ids ignore letter case and Unicode normalisation**: ``A.png`` next to ``a.png``
  (or ``é`` written as one or as two code points) is a duplicate, because the two files
  would collide on Windows and macOS file systems.
* **An archive without any mask file is refused** (``E_ARCHIVE_NO_MASKS``): it is almost
  always the wrong folder zipped.
* **Small members are not ratio-checked**: a member (tar.gz: a stream) that expands to at
  most ``ratio_floor_bytes`` (1 MiB) cannot be a bomb, whatever its ratio.  Note that
  deflate cannot exceed about 1032×, so the default ratio of 1100 lets even (near-)constant
  data through (a large all-background mask saved uncompressed and then deflated); it
  catches members whose declared sizes lie, and the size caps bound everything else.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import re
import stat
import struct
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from segeval.errors import (  # the codes live with every other code, in one registry
    E_ARCHIVE_BOMB,
    E_ARCHIVE_DUPLICATE_CASE,
    E_ARCHIVE_ENCRYPTED,
    E_ARCHIVE_NESTED,
    E_ARCHIVE_NO_MASKS,
    E_ARCHIVE_NOT_FLAT,
    E_ARCHIVE_TOO_MANY_MEMBERS,
    E_ARCHIVE_UNREADABLE,
    E_ARCHIVE_UNSAFE_MEMBER,
    E_ARCHIVE_UNSUPPORTED_METHOD,
    ERROR_CODES,
    CaseError,
    UsageError,
)
from segeval.formats import SUFFIXES, case_id, format_suffix

ARCHIVE_ERROR_CODES: dict[str, str] = {
    code: text for code, text in ERROR_CODES.items() if code.startswith("E_ARCHIVE_")
}

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30

_CHUNK = MiB  # bytes read, inflated and written at a time
_MAX_NAME_BYTES = 255  # per path component, the limit of common file systems
_MAX_PAX_BYTES = MiB  # one pax extended header (macOS tar stores xattrs there)
_MAX_LONGNAME_BYTES = 64 * KiB  # one GNU long name / long link header
_MAX_METADATA_IN_ROW = 4  # metadata headers before one member
_ZIP_DIRECTORY_BYTES_PER_MEMBER = KiB  # bounds the central directory zipfile will parse
_MAGIC_BYTES = 512

_ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".bz2", ".tbz", ".tbz2", ".xz",
                     ".txz", ".7z", ".rar", ".zst")  # and .gz, unless it is a data file
_DATA_FILE_SUFFIXES = (".raw.gz", ".raw", ".zraw", ".gz")  # MetaImage / detached NRRD data
_HEADER_SUFFIXES = (".mhd", ".nhdr")
_ARCHIVE_MAGIC = ((b"PK\x03\x04", "zip"), (b"PK\x05\x06", "zip"), (b"PK\x07\x08", "zip"),
                  (b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"),
                  (b"7z\xbc\xaf\x27\x1c", "7z"), (b"Rar!\x1a\x07", "rar"),
                  (b"\x28\xb5\x2f\xfd", "zstd"))
_ZIP_METHODS = {0: "stored", 8: "deflated", 9: "deflate64", 12: "bzip2", 14: "lzma",
                93: "zstd", 95: "xz", 98: "ppmd", 99: "AES-encrypted"}
_TAR_TYPES = {b"1": "a hard link", b"2": "a symbolic link", b"3": "a character device",
              b"4": "a block device", b"6": "a FIFO (named pipe)"}
_TAR_REGULAR = (b"0", b"\x00", b"7")
_TAR_DIRECTORY = b"5"
_TAR_METADATA = (b"x", b"g", b"L", b"K")

_HINT_REPACK = ("re-create the archive from the folder of mask files, with relative names "
                "and no links")
_HINT_UPLOAD = "is the upload complete? re-create the archive and upload it again"
_HINT_SIZE = ("save masks compressed (.nii.gz, .png); if the submission is genuine, ask for "
              "larger limits")

# Exceptions that the standard library's zip, gzip and struct code raises on malformed input.
_READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, OSError,
                ValueError, struct.error, OverflowError, NotImplementedError)


class ArchiveError(CaseError):
    """A submitted archive was refused.

    ``code`` is one of :data:`ARCHIVE_ERROR_CODES`, ``path`` the archive and ``member`` the
    offending member's name as stored (``None`` when the problem is the whole archive).
    The message is one line: ``archive: member 'name': problem (what to do)``.
    """

    def __init__(self, code: str, problem: str, path: str | Path | None = None,
                 hint: str = "", member: str | None = None) -> None:
        self.member = member
        if member is not None:
            problem = f"member {_show(member)}: {problem}"
        super().__init__(code, problem, path, hint)


@dataclass(frozen=True)
class ArchiveLimits:
    """Caps on what an archive may expand to.

    ``max_ratio`` is expanded / compressed size of each zip member, and for tar.gz of the
    whole tar stream (expanded bytes / archive file size).  Members (tar.gz: streams) that
    expand to at most ``ratio_floor_bytes`` are not ratio-checked; ``max_ratio=math.inf``
    turns the ratio check off.  The default, 1100, sits just above what deflate can reach
    (about 1032:1): an honest upload of mostly-background uncompressed masks (.nii, .npy) can
    come close to that, so a lower cap would refuse real submissions; what deflate cannot
    produce is a member whose declared sizes lie, and the size caps bound everything else.
    """

    max_members: int = 10_000
    max_total_bytes: int = 8 * GiB
    max_member_bytes: int = 2 * GiB
    max_ratio: float = 1100.0
    ratio_floor_bytes: int = MiB

    def __post_init__(self) -> None:
        for name in ("max_members", "max_total_bytes", "max_member_bytes", "max_ratio"):
            value = getattr(self, name)
            if not value > 0:
                raise UsageError("E_USAGE", f"ArchiveLimits.{name} must be positive "
                                 f"(got {value!r})")
        if not self.ratio_floor_bytes >= 0:
            raise UsageError("E_USAGE", "ArchiveLimits.ratio_floor_bytes must be >= 0 "
                             f"(got {self.ratio_floor_bytes!r})")

    @property
    def max_metadata_bytes(self) -> int:
        """The most bytes of tar pax / GNU long-name headers, all members together."""
        return 8 * MiB + 2 * KiB * self.max_members


@dataclass(frozen=True)
class ExtractedSubmission:
    """What :func:`extract_submission` wrote.

    ``root`` is the folder holding the mask files (``destination``: members are written
    flat, the common top folder is stripped by never creating it); ``files`` every file
    written (mask files and their ``.raw`` / ``.zraw`` / ``.gz`` data files), sorted;
    ``ignored`` one ``"member: reason"`` line per file member that was skipped.
    """

    root: Path
    files: list[Path]
    ignored: list[str]


def archive_format(path: str | Path) -> str | None:
    """``"zip"``, ``"tar"``, ``"tar.gz"``, ``"tar.bz2"``, ``"tar.xz"`` or None, by content.

    Zip by its local-header or empty-archive signature; tar by a valid first header
    (checksum included), after inflating at most 512 bytes for the compressed forms; so a
    ``.nii.gz`` is not a tar.gz.  Never raises: an unreadable path is None.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None  # a folder, device or FIFO (opening a FIFO would block)
        with open(path, "rb") as handle:
            head = handle.read(64 * KiB)
    except (OSError, ValueError):
        return None
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    compressed: tuple[tuple[bytes, str, Callable[[], _Decompressor]], ...] = (
        (b"\x1f\x8b", "tar.gz", lambda: zlib.decompressobj(16 + zlib.MAX_WBITS)),
        (b"BZh", "tar.bz2", bz2.BZ2Decompressor),
        (b"\xfd7zXZ\x00", "tar.xz", lzma.LZMADecompressor),
    )
    for magic, kind, decompressor in compressed:
        if head.startswith(magic):
            try:
                block = decompressor().decompress(head, _MAGIC_BYTES)
            except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError):
                return None
            return kind if _is_tar_header(block) else None
    return "tar" if _is_tar_header(head[:512]) else None


def is_archive(path: str | Path) -> bool:
    """Whether ``path`` is a zip or a (plain, gzip, bzip2 or xz-compressed) tar archive.

    Decided by content, not by name: a zip renamed ``.png`` is an archive, a ``.nii.gz`` is
    not.  bzip2 and xz tars count as archives so that :func:`extract_submission` can refuse
    them with a clear message rather than have them read as masks.
    """
    return archive_format(path) is not None


def extract_submission(path: str | Path, destination: str | Path,
                       limits: ArchiveLimits = ArchiveLimits()) -> ExtractedSubmission:  # noqa: B008
    """Check an archive and unpack its mask files flat into ``destination``.

    ``destination`` must be an existing, empty folder private to the caller (for example
    from :func:`tempfile.mkdtemp`); nothing is ever written anywhere else.  Raises
    :class:`ArchiveError` for anything wrong with the archive (``destination`` is then
    empty again) and :class:`UsageError` for a missing archive, a bad ``destination`` or a
    failure to write there.  See the module docstring for every rule.
    """
    archive = Path(path)
    if not archive.is_file():
        raise UsageError("E_USAGE", "no such archive file", archive)
    extraction = _Extraction(archive, _private_folder(destination), limits)
    kind = archive_format(archive)
    if kind is None:
        raise ArchiveError(E_ARCHIVE_UNREADABLE, "not a zip, tar or tar.gz archive", archive,
                           "submit a .zip, .tar, .tar.gz or .tgz file")
    if kind not in ("zip", "tar", "tar.gz"):
        raise ArchiveError(E_ARCHIVE_UNSUPPORTED_METHOD, f"{kind} archives are not accepted",
                           archive, "re-create it as .zip or .tar.gz")
    try:
        with open(archive, "rb") as handle:
            if kind == "zip":
                _extract_zip(extraction, handle)
            else:
                _extract_tar(extraction, handle, gz=kind == "tar.gz")
    except BaseException as exc:
        extraction.remove_written()
        if isinstance(exc, _READ_ERRORS):
            detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise ArchiveError(E_ARCHIVE_UNREADABLE,
                               f"cannot read the archive ({type(exc).__name__}: {detail})",
                               archive, _HINT_UPLOAD) from None
        raise
    return ExtractedSubmission(extraction.destination, sorted(extraction.written),
                               extraction.ignored)


# ---------------------------------------------------------------------------------------
# Format-independent rules


class _Decompressor(Protocol):
    def decompress(self, data: bytes, max_length: int = ..., /) -> bytes: ...


@dataclass(frozen=True)
class _Entry:
    """One member as listed: name as stored, path components, declared sizes."""

    index: int
    name: str
    parts: tuple[str, ...]
    is_dir: bool
    size: int
    packed: int | None  # zip: compressed size, for the per-member ratio; tar: None


class _Extraction:
    """The state of one extraction: limits, running totals, files written so far."""

    def __init__(self, archive: Path, destination: Path, limits: ArchiveLimits) -> None:
        self.archive = archive
        self.destination = destination
        self.limits = limits
        self.written: list[Path] = []
        self.ignored: list[str] = []
        self.declared_total = 0
        self.written_total = 0

    def refuse(self, code: str, problem: str, hint: str = "",
               member: str | None = None) -> ArchiveError:
        return ArchiveError(code, problem, self.archive, hint, member)

    def count(self, index: int) -> None:
        """Refuse the member at ``index`` (0-based) when it is one too many."""
        if index >= self.limits.max_members:
            raise self.refuse(E_ARCHIVE_TOO_MANY_MEMBERS,
                              f"more than {self.limits.max_members} members",
                              "submit the mask files only, at most that many")

    def parts(self, name: str) -> tuple[str, ...]:
        """The safe path components of a member name, or refuse it."""

        def unsafe(problem: str) -> ArchiveError:
            return self.refuse(E_ARCHIVE_UNSAFE_MEMBER, problem, _HINT_REPACK, name)

        if "\0" in name:
            raise unsafe("the name contains a NUL byte")
        if any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise unsafe("the name contains a control character")
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise unsafe("the name is not valid UTF-8") from None
        path = name.replace("\\", "/")  # a separator on Windows, so treated as one here
        if path.startswith("/"):
            raise unsafe("absolute path")
        if re.match(r"[A-Za-z]:", path):
            raise unsafe("the name starts with a drive letter")
        if ":" in path:
            raise unsafe("the name contains a colon (a drive or stream name on Windows)")
        parts = tuple(part for part in path.split("/") if part not in ("", "."))
        if ".." in parts:
            raise unsafe("the name has a '..' component, which points outside the folder")
        if any(len(part.encode("utf-8")) > _MAX_NAME_BYTES for part in parts):
            raise unsafe(f"a name component is longer than {_MAX_NAME_BYTES} bytes")
        return parts

    def admit(self, entry: _Entry) -> None:
        """Check an entry's declared sizes against the caps and add it to the total."""
        limits = self.limits
        if entry.size > limits.max_member_bytes:
            raise self.refuse(E_ARCHIVE_BOMB, f"expands to {_size(entry.size)}, more than the "
                              f"{_size(limits.max_member_bytes)} allowed per file",
                              _HINT_SIZE, entry.name)
        self.declared_total += entry.size
        if self.declared_total > limits.max_total_bytes:
            raise self.refuse(E_ARCHIVE_BOMB, f"the members expand to more than the "
                              f"{_size(limits.max_total_bytes)} allowed in total",
                              _HINT_SIZE, entry.name)
        if entry.packed is not None:
            self.check_ratio(entry, entry.size)

    def check_ratio(self, entry: _Entry, expanded: int) -> None:
        limits, packed = self.limits, max(entry.packed or 0, 1)
        if expanded > limits.ratio_floor_bytes and expanded > limits.max_ratio * packed:
            raise self.refuse(E_ARCHIVE_BOMB, f"{_size(packed)} expand to {_size(expanded)}, "
                              f"{expanded / packed:.0f}× (limit {limits.max_ratio:g}×)",
                              _HINT_SIZE, entry.name)

    def plan(self, entries: list[_Entry]) -> dict[int, str]:
        """Which entries to write, under which flat name; fills ``ignored``."""
        masks: list[_Entry] = []
        data_files: list[tuple[_Entry, str]] = []
        for entry in entries:
            if entry.is_dir:
                continue
            base = entry.parts[-1]
            reason = _junk_reason(entry.parts)
            if reason is not None:
                self.ignored.append(f"{entry.name}: {reason}")
            elif format_suffix(base) is not None:
                masks.append(entry)
            elif base.lower().endswith(_ARCHIVE_SUFFIXES):
                raise self.nested(entry, "by its name")
            elif (stem := _data_file_stem(base)) is not None:
                data_files.append((entry, stem))
            else:
                self.ignored.append(f"{entry.name}: not a mask file")
        headers = {_key(case_id(m.parts[-1])) for m in masks
                   if format_suffix(m.parts[-1]) in _HEADER_SUFFIXES}
        kept = list(masks)
        for entry, stem in data_files:
            if _key(stem) in headers:
                kept.append(entry)
            elif entry.parts[-1].lower().endswith(".gz"):
                raise self.nested(entry, "by its name (no .nhdr of the same case id)")
            else:
                self.ignored.append(f"{entry.name}: a data file with no .mhd or .nhdr header "
                                    "of the same case id")
        if not masks:
            raise self.refuse(E_ARCHIVE_NO_MASKS, "the archive holds no mask file",
                              f"segeval reads {', '.join(SUFFIXES)}; "
                              f"{len(self.ignored)} other file(s) were found")
        names = self._flatten(kept)
        self._check_duplicates(kept, names)
        return names

    def _flatten(self, kept: list[_Entry]) -> dict[int, str]:
        tops = {entry.parts[0] for entry in kept}
        strip = len(tops) == 1 and all(len(entry.parts) > 1 for entry in kept)
        names = {}
        for entry in kept:
            relative = entry.parts[1:] if strip else entry.parts
            if len(relative) > 1:
                folder = "/".join(entry.parts[:-1])
                raise self.refuse(E_ARCHIVE_NOT_FLAT, f"is in the sub-folder {_show(folder)}; "
                                  "a submission is a flat set of mask files, optionally inside "
                                  "one top folder",
                                  "put every mask file directly in the archive or in one "
                                  "folder", entry.name)
            names[entry.index] = relative[0]
        return names

    def _check_duplicates(self, kept: list[_Entry], names: dict[int, str]) -> None:
        cases: dict[str, _Entry] = {}
        files: dict[str, _Entry] = {}
        for entry in kept:
            name = names[entry.index]
            is_mask = format_suffix(name) is not None
            seen = cases if is_mask else files
            key = _key(case_id(name) if is_mask else name)
            if key in seen:
                what = f"case id {_show(case_id(name))}" if is_mask else "file name"
                raise self.refuse(E_ARCHIVE_DUPLICATE_CASE, f"its {what} is also given by "
                                  f"member {_show(seen[key].name)}",
                                  "keep one file per case; ids that differ only in letter "
                                  "case count as the same case (they collide on Windows and "
                                  "macOS)", entry.name)
            seen[key] = entry

    def nested(self, entry: _Entry, how: str) -> ArchiveError:
        return self.refuse(E_ARCHIVE_NESTED, f"is an archive inside the archive ({how})",
                           "put the mask files themselves in the archive", entry.name)

    def open_file(self, entry: _Entry, name: str) -> _MemberWriter:
        return _MemberWriter(self, entry, name)

    def remove_written(self) -> None:
        for path in self.written:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        self.written.clear()


class _MemberWriter:
    """One output file: counts bytes against the caps before writing them."""

    def __init__(self, extraction: _Extraction, entry: _Entry, name: str) -> None:
        self.extraction, self.entry = extraction, entry
        folder = extraction.destination
        self.path = folder / name
        # name is one component without separators, '.' or '..'; check anyway
        if name in ("", ".", "..") or os.path.dirname(os.path.realpath(self.path)) != str(folder):
            raise AssertionError(f"extraction target {self.path!r} escapes {folder!r}")
        flags = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                 | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
        try:
            self._fd = os.open(self.path, flags, 0o600)
        except OSError as exc:
            raise _write_error(self.path, exc) from None
        extraction.written.append(self.path)
        self.count = 0
        self._head = b""
        self._check_magic = format_suffix(name) is not None
        self.crc = 0

    def write(self, data: bytes) -> None:
        if not data:
            return
        extraction, entry, limits = self.extraction, self.entry, self.extraction.limits
        self.count += len(data)
        extraction.written_total += len(data)
        if self.count > entry.size:
            raise extraction.refuse(E_ARCHIVE_BOMB, "expands to more than the "
                                    f"{_size(entry.size)} its header declares; stopped",
                                    _HINT_UPLOAD, entry.name)
        if (self.count > limits.max_member_bytes
                or extraction.written_total > limits.max_total_bytes):
            raise extraction.refuse(E_ARCHIVE_BOMB, "expands beyond the size limits; stopped",
                                    _HINT_SIZE, entry.name)
        if entry.packed is not None:
            extraction.check_ratio(entry, self.count)
        if self._check_magic and len(self._head) < _MAGIC_BYTES:
            self._head += data[:_MAGIC_BYTES - len(self._head)]
            if len(self._head) == _MAGIC_BYTES:
                self._refuse_archive_content()
        self.crc = zlib.crc32(data, self.crc)
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            raise _write_error(self.path, exc) from None

    def _refuse_archive_content(self) -> None:
        self._check_magic = False
        head, suffix = self._head, format_suffix(self.path.name)
        kind = next((kind for magic, kind in _ARCHIVE_MAGIC if head.startswith(magic)), None)
        if kind == "gzip" and suffix == ".nii.gz":
            kind = None
        if kind is None and _is_tar_header(head):
            kind = "tar"
        if kind is not None:
            raise self.extraction.nested(self.entry, f"its content is {kind}")

    def close(self) -> None:
        """Close the file and check it is complete."""
        os.close(self._fd)
        if self._check_magic:
            self._refuse_archive_content()
        if self.count != self.entry.size:
            raise self.extraction.refuse(
                E_ARCHIVE_UNREADABLE, f"holds {_size(self.count)}, not the "
                f"{_size(self.entry.size)} its header declares", _HINT_UPLOAD, self.entry.name)

    def discard(self) -> None:
        try:
            os.close(self._fd)
        except OSError:
            pass


def _write_error(path: Path, exc: OSError) -> UsageError:
    return UsageError("E_USAGE", f"cannot write an extracted file: {exc.strerror or exc}", path)


def _private_folder(destination: str | Path) -> Path:
    folder = Path(destination)
    if folder.is_symlink() or not folder.is_dir():
        raise UsageError("E_USAGE", "the extraction folder must be an existing folder, not a "
                         "link", folder, "create one with tempfile.mkdtemp()")
    if any(folder.iterdir()):
        raise UsageError("E_USAGE", "the extraction folder must be empty", folder,
                         "create a fresh one with tempfile.mkdtemp()")
    return Path(os.path.realpath(folder))


def _junk_reason(parts: tuple[str, ...]) -> str | None:
    base = parts[-1]
    if any(part.lower() == "__macosx" for part in parts):
        return "macOS metadata folder __MACOSX"
    if base.lower() == ".ds_store":
        return "macOS folder metadata"
    if base.startswith("._"):
        return "macOS AppleDouble metadata"
    if base.lower() in ("desktop.ini", "thumbs.db"):
        return "Windows folder metadata"
    if any(part.startswith(".") for part in parts):
        return "hidden file"
    return None


def _data_file_stem(name: str) -> str | None:
    lower = name.lower()
    suffix = next((s for s in _DATA_FILE_SUFFIXES if lower.endswith(s)), None)
    return name[: len(name) - len(suffix)] if suffix else None


def _key(text: str) -> str:
    """What makes two names the same on Windows and macOS file systems."""
    return unicodedata.normalize("NFC", text).casefold()


def _show(name: str, limit: int = 120) -> str:
    """A member name for a one-line message: quoted, control characters escaped."""
    text = "".join(c if c.isprintable() and not 0xD800 <= ord(c) <= 0xDFFF
                   else f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}"
                   for c in name[: limit + 1])
    return f"'{text[:limit]}…'" if len(text) > limit else f"'{text}'"


def _size(n: float) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} bytes"


# ---------------------------------------------------------------------------------------
# Zip


def _extract_zip(extraction: _Extraction, handle: BinaryIO) -> None:
    file_size = os.fstat(handle.fileno()).st_size
    _check_zip_directory(extraction, handle, file_size)
    with zipfile.ZipFile(handle) as archive:
        infos = archive.infolist()
    if infos:
        extraction.count(len(infos) - 1)
    entries = [_zip_entry(extraction, index, info, file_size)
               for index, info in enumerate(infos)]
    _check_zip_overlaps(extraction, infos)
    names = extraction.plan(entries)
    for index, name in names.items():
        _copy_zip_member(extraction, handle, infos[index], entries[index], name, file_size)


def _check_zip_directory(extraction: _Extraction, handle: BinaryIO, file_size: int) -> None:
    """Refuse a central directory too large for the member cap before zipfile parses it."""
    tail_size = min(file_size, 22 + 0xFFFF)
    handle.seek(file_size - tail_size)
    tail = handle.read(tail_size)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return  # zipfile reports the missing end record
    entries, directory_size = struct.unpack("<10xHL6x", tail[at:at + 22])
    if (entries == 0xFFFF or directory_size == 0xFFFFFFFF) and at >= 20 \
            and tail[at - 20:at - 16] == b"PK\x06\x07":
        (record_offset,) = struct.unpack("<8xQ4x", tail[at - 20:at])
        handle.seek(record_offset)
        record = handle.read(56)
        if len(record) == 56 and record[:4] == b"PK\x06\x06":
            entries, directory_size = struct.unpack("<32xQQ8x", record)
    limits = extraction.limits
    if entries > limits.max_members:
        extraction.count(entries - 1)
    if directory_size > _ZIP_DIRECTORY_BYTES_PER_MEMBER * limits.max_members + 64 * KiB:
        raise extraction.refuse(E_ARCHIVE_TOO_MANY_MEMBERS,
                                f"the central directory takes {_size(directory_size)}, more "
                                f"than {limits.max_members} members can need",
                                "submit the mask files only")


def _zip_entry(extraction: _Extraction, index: int, info: zipfile.ZipInfo,
               file_size: int) -> _Entry:
    name = info.orig_filename  # before zipfile cuts it at a NUL byte
    parts = extraction.parts(name)
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        what = {stat.S_IFLNK: "a symbolic link", stat.S_IFCHR: "a character device",
                stat.S_IFBLK: "a block device", stat.S_IFIFO: "a FIFO (named pipe)",
                stat.S_IFSOCK: "a socket"}.get(kind, "not a regular file")
        raise extraction.refuse(E_ARCHIVE_UNSAFE_MEMBER, f"is {what}", _HINT_REPACK, name)
    if info.flag_bits & 0x41:
        raise extraction.refuse(E_ARCHIVE_ENCRYPTED, "is encrypted",
                                "create the archive without a password", name)
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        method = _ZIP_METHODS.get(info.compress_type, f"method {info.compress_type}")
        raise extraction.refuse(E_ARCHIVE_UNSUPPORTED_METHOD, f"is compressed with {method}; "
                                "only stored and deflated are accepted",
                                "re-create the archive with the default zip settings", name)
    if info.header_offset + info.compress_size > file_size:
        raise extraction.refuse(E_ARCHIVE_UNREADABLE, "extends past the end of the archive",
                                _HINT_UPLOAD, name)
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise extraction.refuse(E_ARCHIVE_UNREADABLE, "is stored uncompressed but declares "
                                "two different sizes", _HINT_UPLOAD, name)
    is_dir = name.endswith(("/", "\\")) or kind == stat.S_IFDIR or not parts
    entry = _Entry(index, name, parts, is_dir, info.file_size, info.compress_size)
    extraction.admit(entry)
    return entry


def _zip_name_bytes(info: zipfile.ZipInfo) -> bytes:
    return info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437")


def _check_zip_overlaps(extraction: _Extraction, infos: list[zipfile.ZipInfo]) -> None:
    """Refuse members whose data overlap: the way small zips expand to petabytes."""
    ordered = sorted(infos, key=lambda info: info.header_offset)
    for first, second in zip(ordered, ordered[1:], strict=False):
        end = first.header_offset + 30 + len(_zip_name_bytes(first)) + first.compress_size
        if end > second.header_offset:
            raise extraction.refuse(E_ARCHIVE_BOMB, "overlaps the data of member "
                                    f"{_show(first.orig_filename)} (a zip bomb construction)",
                                    _HINT_REPACK, second.orig_filename)


def _copy_zip_member(extraction: _Extraction, handle: BinaryIO, info: zipfile.ZipInfo,
                     entry: _Entry, name: str, file_size: int) -> None:
    def damaged(problem: str) -> ArchiveError:
        return extraction.refuse(E_ARCHIVE_UNREADABLE, problem, _HINT_UPLOAD, entry.name)

    handle.seek(info.header_offset)
    local = handle.read(30)
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        raise damaged("its local header is missing")
    flags, method, name_length, extra_length = struct.unpack("<6xHH16xHH", local)
    if handle.read(name_length) != _zip_name_bytes(info) or method != info.compress_type:
        raise damaged("its local header disagrees with the central directory")
    if flags & 0x41:
        raise extraction.refuse(E_ARCHIVE_ENCRYPTED, "is encrypted",
                                "create the archive without a password", entry.name)
    start = info.header_offset + 30 + name_length + extra_length
    if start + info.compress_size > file_size:
        raise damaged("extends past the end of the archive")
    handle.seek(start)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS) if method == zipfile.ZIP_DEFLATED else None
    writer = extraction.open_file(entry, name)
    try:
        remaining = info.compress_size
        while remaining and not (inflater is not None and inflater.eof):
            chunk = handle.read(min(_CHUNK, remaining))
            if not chunk:
                raise damaged("its data is cut short")
            remaining -= len(chunk)
            if inflater is None:
                writer.write(chunk)
                continue
            writer.write(inflater.decompress(chunk, _CHUNK))
            while inflater.unconsumed_tail and not inflater.eof:
                writer.write(inflater.decompress(inflater.unconsumed_tail, _CHUNK))
        while inflater is not None and not inflater.eof:
            data = inflater.decompress(b"", _CHUNK)
            if not data:
                raise damaged("its deflate stream is cut short")
            writer.write(data)
    except BaseException:
        writer.discard()
        raise
    writer.close()
    if writer.crc != info.CRC:
        raise damaged("its CRC-32 does not match: the data are damaged")


# ---------------------------------------------------------------------------------------
# Tar


@dataclass(frozen=True)
class _TarHeader:
    name: str
    type: bytes
    size: int


@dataclass(frozen=True)
class _TarMember:
    index: int
    name: str
    type: bytes
    size: int


def _tar_number(field: bytes) -> int:
    """A numeric header field: octal text, or GNU base-256 when the top bit is set."""
    if field[:1] in (b"\x80", b"\xff"):
        value = int.from_bytes(field[1:], "big")
        return value - 256 ** (len(field) - 1) if field[0] == 0xFF else value
    return int(field.split(b"\0", 1)[0].strip(b" ") or b"0", 8)


def _tar_text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _parse_tar_header(block: bytes) -> _TarHeader:
    """One 512-byte header; ValueError when it is not one (checksum included)."""
    if len(block) != 512:
        raise ValueError("short header")
    stored = _tar_number(block[148:156])
    unsigned = 256 + sum(block[:148]) + sum(block[156:])
    signed = 256 + sum(struct.unpack("148b", block[:148])) + sum(struct.unpack("356b", block[156:]))
    if stored not in (unsigned, signed):
        raise ValueError("bad header checksum")
    name = _tar_text(block[:100])
    if block[257:265] == b"ustar\x0000" and block[345] != 0:
        name = _tar_text(block[345:500]) + "/" + name
    kind = block[156:157]
    if kind in (b"0", b"\x00") and name.endswith("/"):
        kind = _TAR_DIRECTORY  # old tars mark folders with a trailing slash
    return _TarHeader(name, kind, _tar_number(block[124:136]))


def _is_tar_header(block: bytes) -> bool:
    if len(block) < 512 or not any(block[:512]):
        return False
    try:
        _parse_tar_header(block[:512])
    except ValueError:
        return False
    return True


def _pax_records(payload: bytes) -> Iterator[tuple[str, str]]:
    """The ``length key=value\\n`` records of a pax extended header."""
    position = 0
    while position < len(payload) and payload[position] != 0:
        space = payload.index(b" ", position)
        length = int(payload[position:space])
        end = position + length
        if length <= 0 or end > len(payload) or payload[end - 1] != 0x0A:
            raise ValueError("malformed pax record")
        key, equals, value = payload[space + 1:end - 1].partition(b"=")
        if not equals:
            raise ValueError("malformed pax record")
        yield key.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape")
        position = end


class _TarStream:
    """The expanded tar stream, read forward only; checks every position against the caps."""

    def __init__(self, extraction: _Extraction, handle: BinaryIO, gz: bool) -> None:
        handle.seek(0)
        self.extraction = extraction
        self.file_size = os.fstat(handle.fileno()).st_size
        self._handle = handle
        self._source: BinaryIO | gzip.GzipFile = (
            gzip.GzipFile(fileobj=handle, mode="rb") if gz else handle)
        self._gz = gz
        self.position = 0
        limits = extraction.limits
        self.ratio_cap = (max(limits.ratio_floor_bytes, limits.max_ratio * self.file_size)
                          if gz else float("inf"))
        self.size_cap = (limits.max_total_bytes + limits.max_metadata_bytes
                         + 3 * KiB * limits.max_members + MiB)
        self.metadata_bytes = 0

    def reserve(self, end: int, member: str | None = None) -> None:
        """Refuse when the stream would have to expand to ``end`` bytes."""
        if end > self.ratio_cap:
            raise self.extraction.refuse(
                E_ARCHIVE_BOMB, f"the tar stream expands to at least {_size(end)}, "
                f"{end / max(self.file_size, 1):.0f}× the archive's {_size(self.file_size)} "
                f"(limit {self.extraction.limits.max_ratio:g}×)", _HINT_SIZE, member)
        if end > self.size_cap:
            raise self.extraction.refuse(E_ARCHIVE_BOMB, "the tar stream expands to at least "
                                         f"{_size(end)}, beyond the size limits", _HINT_SIZE,
                                         member)

    def read(self, size: int) -> bytes:
        self.reserve(self.position + size)
        data = self._source.read(size)
        self.position += len(data)
        return data

    def drain(self) -> None:
        """Inflate a gzip stream to its end, so that gzip checks its CRC-32 and length."""
        while self._gz:
            data = self._source.read(_CHUNK)
            if not data:
                return
            self.position += len(data)
            self.reserve(self.position)  # checks the bytes produced, not a chunk ahead

    def skip(self, size: int, member: str | None = None) -> None:
        self.reserve(self.position + size, member)
        if not self._gz:
            if self.position + size > self.file_size:
                raise self.extraction.refuse(E_ARCHIVE_UNREADABLE, "the archive is cut short",
                                             _HINT_UPLOAD, member)
            self._handle.seek(size, os.SEEK_CUR)
            self.position += size
            return
        while size:
            data = self.read(min(_CHUNK, size))
            if not data:
                raise self.extraction.refuse(E_ARCHIVE_UNREADABLE, "the archive is cut short",
                                             _HINT_UPLOAD, member)
            size -= len(data)


def _walk_tar(stream: _TarStream) -> Iterator[_TarMember]:
    """Every member in order, positioned at its data; skips what the caller did not read.

    Applies pax ``path`` / ``size`` and GNU long names; refuses oversized or sparse
    metadata.  Ends at the first all-zero block (or a clean end of file).
    """
    extraction = stream.extraction
    pending: dict[str, str] = {}
    in_row = 0
    index = 0
    while True:
        block = stream.read(512)
        if not block or block == bytes(512):
            return
        if len(block) < 512:
            raise extraction.refuse(E_ARCHIVE_UNREADABLE, "the archive is cut short",
                                    _HINT_UPLOAD)
        try:
            header = _parse_tar_header(block)
        except ValueError as exc:
            raise extraction.refuse(E_ARCHIVE_UNREADABLE, f"a damaged tar header ({exc}) after "
                                    f"{index} member(s)", _HINT_UPLOAD) from None
        if header.size < 0:
            raise extraction.refuse(E_ARCHIVE_UNREADABLE, "negative size", _HINT_UPLOAD,
                                    header.name)
        if header.type in _TAR_METADATA:
            in_row += 1
            pending.update(_tar_metadata(stream, header, in_row))
            continue
        name = pending.get("path", header.name)
        try:
            size = int(pending.get("size", header.size))
        except ValueError:
            raise extraction.refuse(E_ARCHIVE_UNREADABLE, "a bad pax size", _HINT_UPLOAD,
                                    name) from None
        if size < 0:
            raise extraction.refuse(E_ARCHIVE_UNREADABLE, "negative size", _HINT_UPLOAD, name)
        pending, in_row = {}, 0
        start = stream.position
        yield _TarMember(index, name, header.type, size)
        index += 1
        stream.skip(size - (stream.position - start) + (-size) % 512, name)


def _tar_metadata(stream: _TarStream, header: _TarHeader, in_row: int) -> dict[str, str]:
    """Read one pax or GNU long-name header; the keys it sets for the next member."""
    extraction = stream.extraction
    limit = _MAX_PAX_BYTES if header.type in (b"x", b"g") else _MAX_LONGNAME_BYTES
    stream.metadata_bytes += header.size
    if in_row > _MAX_METADATA_IN_ROW or header.size > limit \
            or stream.metadata_bytes > extraction.limits.max_metadata_bytes:
        raise extraction.refuse(E_ARCHIVE_BOMB, f"a tar metadata header of {_size(header.size)}"
                                f" ({in_row} in a row, {_size(stream.metadata_bytes)} in all) "
                                "is beyond the limits", _HINT_REPACK)
    payload = stream.read(header.size)
    if len(payload) < header.size:
        raise extraction.refuse(E_ARCHIVE_UNREADABLE, "the archive is cut short", _HINT_UPLOAD)
    stream.skip((-header.size) % 512)
    if header.type == b"L":
        return {"path": _tar_text(payload)}
    if header.type == b"K":
        return {"linkpath": _tar_text(payload)}
    try:
        records = dict(_pax_records(payload))
    except ValueError:
        raise extraction.refuse(E_ARCHIVE_UNREADABLE, "a damaged pax header",
                                _HINT_UPLOAD) from None
    if any(key.startswith("GNU.sparse") for key in records):
        raise extraction.refuse(E_ARCHIVE_UNSUPPORTED_METHOD, "a sparse file",
                                "re-create the archive without --sparse",
                                records.get("path"))
    wanted = {key: value for key, value in records.items()
              if key in ("path", "linkpath", "size")}
    if header.type == b"g" and wanted:
        raise extraction.refuse(E_ARCHIVE_UNSUPPORTED_METHOD, "a pax global header sets "
                                f"{', '.join(sorted(wanted))}", _HINT_REPACK)
    return wanted


def _tar_entry(extraction: _Extraction, member: _TarMember) -> _Entry:
    extraction.count(member.index)
    parts = extraction.parts(member.name)
    if member.type in _TAR_TYPES:
        raise extraction.refuse(E_ARCHIVE_UNSAFE_MEMBER, f"is {_TAR_TYPES[member.type]}",
                                _HINT_REPACK, member.name)
    if member.type == b"S":
        raise extraction.refuse(E_ARCHIVE_UNSUPPORTED_METHOD, "is a sparse file",
                                "re-create the archive without --sparse", member.name)
    if member.type not in _TAR_REGULAR and member.type != _TAR_DIRECTORY:
        raise extraction.refuse(E_ARCHIVE_UNSAFE_MEMBER, "is not a regular file or folder "
                                f"(tar type {member.type!r})", _HINT_REPACK, member.name)
    is_dir = member.type == _TAR_DIRECTORY or not parts
    if is_dir and member.size:
        raise extraction.refuse(E_ARCHIVE_UNREADABLE, "is a folder with data", _HINT_UPLOAD,
                                member.name)
    entry = _Entry(member.index, member.name, parts, is_dir, member.size, None)
    extraction.admit(entry)
    return entry


def _extract_tar(extraction: _Extraction, handle: BinaryIO, gz: bool) -> None:
    listing = _TarStream(extraction, handle, gz)
    members = [(member, _tar_entry(extraction, member)) for member in _walk_tar(listing)]
    listing.drain()
    names = extraction.plan([entry for _, entry in members])
    last = max(names)
    stream = _TarStream(extraction, handle, gz)
    for member in _walk_tar(stream):
        if member.index >= len(members) or members[member.index][0] != member:
            raise extraction.refuse(E_ARCHIVE_UNREADABLE, "the archive changed while it was "
                                    "read", _HINT_UPLOAD, member.name)
        if member.index in names:
            _copy_tar_member(stream, extraction.open_file(members[member.index][1],
                                                          names[member.index]))
        if member.index >= last:
            return


def _copy_tar_member(stream: _TarStream, writer: _MemberWriter) -> None:
    try:
        remaining = writer.entry.size
        while remaining:
            data = stream.read(min(_CHUNK, remaining))
            if not data:
                break  # close() reports the short file
            writer.write(data)
            remaining -= len(data)
    except BaseException:
        writer.discard()
        raise
    writer.close()
