"""Safe extraction of submitted archives (segeval.formats.archive).

Every archive is built here with zipfile / tarfile (no committed binaries).  Each refusal is
checked for its code, the key words of its one-line message, that nothing was written
outside the extraction folder (a snapshot of the whole test folder before and after), and
that the extraction folder is empty again.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import tarfile
import tempfile
import unicodedata
import zipfile
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segeval.errors import CaseError, ExitCode, UsageError
from segeval.formats.archive import (
    ARCHIVE_ERROR_CODES,
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
    ArchiveError,
    ArchiveLimits,
    archive_format,
    extract_submission,
    is_archive,
)

MiB = 1 << 20
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 2  # masks need only look like masks here
NII_GZ = gzip.compress(b"\x5c\x01\x00\x00" + bytes(600))
JUNK = ["__MACOSX/sub/._case1.png", "sub/.DS_Store", "sub/desktop.ini"]


# --- builders ------------------------------------------------------------------------------
def make_zip(path: Path, members: list, compression: int = zipfile.ZIP_DEFLATED) -> Path:
    """members: (name or ZipInfo, bytes); a name ending in '/' is a folder entry."""
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return path


def tar_info(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, **fields) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, size
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def make_tar(path: Path, members: list, mode: str = "w:gz",
             format: int = tarfile.PAX_FORMAT) -> Path:
    """members: (name, bytes) for files, or a TarInfo (with no data unless it is a file)."""
    with tarfile.open(path, mode, format=format) as archive:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                archive.addfile(member)
            else:
                name, data = member
                archive.addfile(tar_info(name, size=len(data)), io.BytesIO(data))
    return path


class Zeros(io.RawIOBase):
    """A file of ``size`` zero bytes that is never held in memory."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def zip_directory(data: bytes):
    """(offset of each central directory entry, its name) for a plain (non-zip64) zip."""
    end = data.rfind(b"PK\x05\x06")
    entries, _, offset = struct.unpack("<10xHLL", data[end:end + 20])
    for _ in range(entries):
        name_length, extra_length, comment_length = struct.unpack(
            "<HHH", data[offset + 28:offset + 34])
        yield offset, data[offset + 46:offset + 46 + name_length].decode()
        offset += 46 + name_length + extra_length + comment_length


def patch_zip(data: bytes, name: str, *, flags: int = 0, file_size: int | None = None) -> bytes:
    """Set general-purpose flag bits and/or the expanded size of a member, in both the
    central directory and the local header (the way a hostile tool would write them)."""
    patched = bytearray(data)
    for entry, entry_name in zip_directory(data):
        if entry_name != name:
            continue
        (local,) = struct.unpack("<L", data[entry + 42:entry + 46])
        for flag_at, size_at in ((entry + 8, entry + 24), (local + 6, local + 22)):
            (old,) = struct.unpack("<H", patched[flag_at:flag_at + 2])
            patched[flag_at:flag_at + 2] = struct.pack("<H", old | flags)
            if file_size is not None:
                patched[size_at:size_at + 4] = struct.pack("<L", file_size)
    return bytes(patched)


# --- checking a refusal --------------------------------------------------------------------
def snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): (p.lstat().st_size if not p.is_dir() else -1)
            for p in folder.rglob("*")}


def refuse(archive: Path, code: str, *words: str, limits: ArchiveLimits | None = None
           ) -> ArchiveError:
    """Extract into a fresh folder next to the archive; assert the refusal and no trace."""
    root = archive.parent
    destination = root / "out" / "dest"
    destination.mkdir(parents=True, mode=0o700)
    before = snapshot(root)
    with pytest.raises(ArchiveError) as caught:
        extract_submission(archive, destination, limits or ArchiveLimits())
    error = caught.value
    assert error.code == code, error.message
    message = error.message
    assert "\n" not in message and message.startswith(f"{archive}: ")
    for word in words:
        assert word.lower() in message.lower(), message
    assert snapshot(root) == before, "something was written outside the extraction folder"
    assert list(destination.iterdir()) == []
    shutil.rmtree(root / "out")
    return error


def good_members() -> list[tuple[str, bytes]]:
    return [("sub/case1.png", PNG), ("sub/case2.nii.gz", NII_GZ), ("sub/notes.txt", b"hi"),
            *((name, b"junk") for name in JUNK)]


def check_good(archive: Path, tmp_path: Path) -> None:
    destination = tmp_path / "dest"
    destination.mkdir(mode=0o700)
    result = extract_submission(archive, destination)
    assert result.root == destination.resolve()
    assert [p.name for p in result.files] == ["case1.png", "case2.nii.gz"]
    assert sorted(p.name for p in destination.iterdir()) == ["case1.png", "case2.nii.gz"]
    assert (destination / "case1.png").read_bytes() == PNG
    assert (destination / "case2.nii.gz").read_bytes() == NII_GZ
    for path in result.files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    ignored = "\n".join(result.ignored)
    for name in [*JUNK, "sub/notes.txt"]:
        assert name in ignored
    assert "macOS" in ignored and "Windows" in ignored and "not a mask file" in ignored


# --- accepted archives ---------------------------------------------------------------------
def test_good_zip_strips_the_top_folder_and_ignores_junk(tmp_path):
    members = [("sub/", b""), *good_members()]
    check_good(make_zip(tmp_path / "team.zip", members), tmp_path)


@pytest.mark.parametrize("format", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT,
                                    tarfile.USTAR_FORMAT])
@pytest.mark.parametrize("mode", ["w:gz", "w"])
def test_good_tar_strips_the_top_folder_and_ignores_junk(tmp_path, format, mode):
    members = [tar_info("./", tarfile.DIRTYPE), tar_info("sub", tarfile.DIRTYPE),
               *good_members()]
    check_good(make_tar(tmp_path / "team.tgz", members, mode, format), tmp_path)


@pytest.mark.parametrize("format", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT,
                                    tarfile.USTAR_FORMAT])
def test_long_names_in_every_tar_format(tmp_path, format):
    """171 characters: a ustar prefix, a GNU long-name header or a pax path."""
    name = "t" * 90 + "/" + "c" * 76 + ".png"
    archive = make_tar(tmp_path / "team.tar.gz", [(name, PNG)], format=format)
    destination = tmp_path / "dest"
    destination.mkdir()
    result = extract_submission(archive, destination)
    assert [p.name for p in result.files] == ["c" * 76 + ".png"]


def test_metaimage_data_files_come_along_and_orphans_are_listed(tmp_path):
    archive = make_zip(tmp_path / "team.zip", [
        ("case3.mhd", b"ObjectType = Image\nElementDataFile = case3.raw\n"),
        ("case3.raw", bytes(64)), ("case4.nhdr", b"NRRD0004\n"), ("case4.raw.gz", NII_GZ),
        ("orphan.raw", bytes(8))])
    destination = tmp_path / "dest"
    destination.mkdir()
    result = extract_submission(archive, destination)
    assert [p.name for p in result.files] == ["case3.mhd", "case3.raw", "case4.nhdr",
                                              "case4.raw.gz"]
    assert any("orphan.raw" in line and ".mhd" in line for line in result.ignored)


def test_a_zip_renamed_png_is_still_an_archive_and_nii_gz_is_not(tmp_path):
    zipped = make_zip(tmp_path / "looks_like.png", [("case1.png", PNG)])
    tarred = make_tar(tmp_path / "no_extension", [("case1.png", PNG)])
    plain = make_tar(tmp_path / "plain.tar", [("case1.png", PNG)], "w")
    bzipped = make_tar(tmp_path / "team.tar.bz2", [("case1.png", PNG)], "w:bz2")
    (tmp_path / "mask.nii.gz").write_bytes(NII_GZ)
    (tmp_path / "mask.png").write_bytes(PNG)
    (tmp_path / "empty.zip").write_bytes(b"")
    assert [archive_format(p) for p in (zipped, tarred, plain, bzipped)] == [
        "zip", "tar.gz", "tar", "tar.bz2"]
    os.mkfifo(tmp_path / "fifo")  # must not block
    for path in ("mask.nii.gz", "mask.png", "empty.zip", "missing.zip", ".", "fifo"):
        assert not is_archive(tmp_path / path)
    assert is_archive(zipped) and is_archive(bzipped)


def test_codes_messages_and_exit_code(tmp_path):
    error = refuse(make_zip(tmp_path / "team.zip", [("../evil.png", PNG)]),
                   E_ARCHIVE_UNSAFE_MEMBER)
    assert isinstance(error, CaseError) and error.exit_code == ExitCode.INVALID_INPUT
    assert error.member == "../evil.png" and "'../evil.png'" in error.message
    assert "(" in error.message  # the hint: what to do
    assert all(code.startswith("E_ARCHIVE_") and text for code, text in
               ARCHIVE_ERROR_CODES.items())
    assert len(ARCHIVE_ERROR_CODES) == 10


def test_destination_must_be_an_empty_folder(tmp_path):
    archive = make_zip(tmp_path / "team.zip", [("case1.png", PNG)])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_bytes(b"")
    with pytest.raises(UsageError, match="empty"):
        extract_submission(archive, tmp_path / "full")
    with pytest.raises(UsageError):
        extract_submission(archive, tmp_path / "missing")
    with pytest.raises(UsageError, match="no such archive"):
        extract_submission(tmp_path / "nope.zip", tmp_path / "full")
    with pytest.raises(UsageError):
        ArchiveLimits(max_ratio=0)


# --- unsafe names and types ----------------------------------------------------------------
@pytest.mark.parametrize("name, words", [
    ("../evil.png", ["'..'"]),
    ("sub/../../evil.png", ["'..'"]),
    ("sub\\..\\..\\evil.png", ["'..'"]),
    ("__MACOSX/../../evil.png", ["'..'"]),  # junk obeys the rules too
    ("/abs.png", ["absolute"]),
    ("\\\\server\\share\\x.png", ["absolute"]),
    ("C:\\x.png", ["drive letter"]),
    ("C:x.png", ["drive letter"]),
    ("case:1.png", ["colon"]),
    ("bad\nname.png", ["control character", "\\x0a"]),
    ("x" * 300 + ".png", ["longer than 255"]),
])
def test_unsafe_zip_names(tmp_path, name, words):
    archive = make_zip(tmp_path / "team.zip", [("case1.png", PNG), (name, PNG)])
    refuse(archive, E_ARCHIVE_UNSAFE_MEMBER, *words)


def test_nul_byte_in_a_zip_name(tmp_path):
    info = zipfile.ZipInfo("ab.png")
    info.filename = "a\0b.png"  # ZipInfo() itself would cut the name at the NUL
    archive = make_zip(tmp_path / "team.zip", [(info, PNG)])
    refuse(archive, E_ARCHIVE_UNSAFE_MEMBER, "NUL")


@pytest.mark.parametrize("name, words", [
    ("../evil.png", ["'..'"]), ("/abs.png", ["absolute"]), ("C:\\x.png", ["drive letter"]),
])
def test_unsafe_tar_names(tmp_path, name, words):
    refuse(make_tar(tmp_path / "team.tgz", [(name, PNG)]), E_ARCHIVE_UNSAFE_MEMBER, *words)


@pytest.mark.parametrize("kind, words", [
    (tarfile.SYMTYPE, ["symbolic link"]), (tarfile.LNKTYPE, ["hard link"]),
    (tarfile.CHRTYPE, ["character device"]), (tarfile.BLKTYPE, ["block device"]),
    (tarfile.FIFOTYPE, ["FIFO"]), (b"V", ["not a regular file"]),
])
def test_links_and_devices_in_tar(tmp_path, kind, words):
    member = tar_info("case2.png", kind, linkname="/etc/passwd")
    archive = make_tar(tmp_path / "team.tar.gz", [("case1.png", PNG), member])
    refuse(archive, E_ARCHIVE_UNSAFE_MEMBER, "case2.png", *words)


@pytest.mark.parametrize("mode, words", [(stat.S_IFLNK | 0o777, "symbolic link"),
                                         (stat.S_IFCHR | 0o600, "character device"),
                                         (stat.S_IFIFO | 0o600, "FIFO")])
def test_links_and_devices_in_zip(tmp_path, mode, words):
    info = zipfile.ZipInfo("case2.png")
    info.create_system, info.external_attr = 3, mode << 16
    archive = make_zip(tmp_path / "team.zip", [("case1.png", PNG), (info, b"/etc/passwd")])
    refuse(archive, E_ARCHIVE_UNSAFE_MEMBER, words)


# --- nested, encrypted, unsupported --------------------------------------------------------
def zip_bytes(members: list) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize("name, data, words", [
    ("inner.zip", None, ["by its name"]),
    ("case2.png", None, ["content is zip"]),
    ("case2.npy", gzip.compress(bytes(100)), ["content is gzip"]),
    ("inner.tar.gz", b"", ["by its name"]),
    ("case2.gz", b"", ["no .nhdr"]),
])
def test_nested_archives(tmp_path, name, data, words):
    data = zip_bytes([("x.png", PNG)]) if data is None else data
    refuse(make_zip(tmp_path / "team.zip", [("case1.png", PNG), (name, data)]),
           E_ARCHIVE_NESTED, name, *words)


def test_tar_hidden_in_a_mask_file(tmp_path):
    inner = make_tar(tmp_path / "inner.tar", [("x.png", PNG)], "w").read_bytes()
    (tmp_path / "inner.tar").unlink()
    archive = make_tar(tmp_path / "team.tgz", [("case1.png", PNG), ("case2.png", inner)])
    refuse(archive, E_ARCHIVE_NESTED, "content is tar")


def test_encrypted_zip_member(tmp_path):
    data = zip_bytes([("case1.png", PNG), ("case2.png", PNG)])
    archive = tmp_path / "team.zip"
    archive.write_bytes(patch_zip(data, "case2.png", flags=0x1))
    refuse(archive, E_ARCHIVE_ENCRYPTED, "case2.png", "encrypted", "password")


@pytest.mark.parametrize("compression, words", [(zipfile.ZIP_BZIP2, "bzip2"),
                                                (zipfile.ZIP_LZMA, "lzma")])
def test_zip_compression_methods_other_than_deflate(tmp_path, compression, words):
    archive = make_zip(tmp_path / "team.zip", [("case1.png", PNG)], compression)
    refuse(archive, E_ARCHIVE_UNSUPPORTED_METHOD, words, "stored and deflated")


def test_bzip2_tar(tmp_path):
    archive = make_tar(tmp_path / "team.tar.bz2", [("case1.png", PNG)], "w:bz2")
    refuse(archive, E_ARCHIVE_UNSUPPORTED_METHOD, "tar.bz2")


def test_sparse_and_oversized_tar_metadata(tmp_path):
    sparse = tar_info("case1.png", size=len(PNG))
    sparse.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                          "GNU.sparse.realsize": "1000000000"}
    with tarfile.open(tmp_path / "sparse.tgz", "w:gz", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(sparse, io.BytesIO(PNG))
    refuse(tmp_path / "sparse.tgz", E_ARCHIVE_UNSUPPORTED_METHOD, "sparse")
    big = tar_info("case1.png", size=len(PNG))
    big.pax_headers = {"comment": "x" * (2 * MiB)}
    with tarfile.open(tmp_path / "pax.tgz", "w:gz", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(big, io.BytesIO(PNG))
    refuse(tmp_path / "pax.tgz", E_ARCHIVE_BOMB, "metadata header")
    with tarfile.open(tmp_path / "global.tgz", "w:gz", format=tarfile.PAX_FORMAT,
                      pax_headers={"path": "evil.png"}) as tar:
        tar.addfile(tar_info("case1.png", size=len(PNG)), io.BytesIO(PNG))
    refuse(tmp_path / "global.tgz", E_ARCHIVE_UNSUPPORTED_METHOD, "global header", "path")


# --- bombs ---------------------------------------------------------------------------------
BOMB_BYTES = 200 * MiB


@pytest.fixture(scope="module")
def bomb_zip(tmp_path_factory) -> bytes:
    """200 MiB of zeros deflated (~200 KiB), streamed so the test never holds 200 MiB."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("case1.png", PNG)
        with archive.open("case2.npy", "w") as member:
            for _ in range(BOMB_BYTES // MiB):
                member.write(bytes(MiB))
    return path.read_bytes()


def test_zip_bomb_refused_from_the_directory_by_ratio_and_by_size(tmp_path, bomb_zip):
    archive = tmp_path / "team.zip"
    archive.write_bytes(bomb_zip)
    # zeros deflate at about 1030:1, just under the default cap of 1100: a stricter cap
    # refuses the bomb from the directory alone
    refuse(archive, E_ARCHIVE_BOMB, "case2.npy", "200.0 MiB", "limit 1000×",
           limits=ArchiveLimits(max_ratio=1000.0))
    refuse(archive, E_ARCHIVE_BOMB, "case2.npy", "allowed per file",
           limits=ArchiveLimits(max_ratio=float("inf"), max_member_bytes=100 * MiB))
    refuse(archive, E_ARCHIVE_BOMB, "in total",
           limits=ArchiveLimits(max_ratio=float("inf"), max_total_bytes=150 * MiB))


def test_zip_that_understates_its_size_is_stopped_while_streaming(tmp_path, bomb_zip):
    archive = tmp_path / "team.zip"
    archive.write_bytes(patch_zip(bomb_zip, "case2.npy", file_size=1000))
    refuse(archive, E_ARCHIVE_BOMB, "case2.npy", "more than the 1000 bytes", "stopped")


def test_overlapping_zip_members(tmp_path):
    data = zip_bytes([("case1.png", PNG)])
    end = data.rfind(b"PK\x05\x06")
    (entry, _), = zip_directory(data)
    record = data[entry:end]
    entries, size, offset = struct.unpack("<10xHLL", data[end:end + 20])
    tail = bytearray(data[end:])
    struct.pack_into("<HHLL", tail, 8, 2, 2, 2 * size, offset)
    archive = tmp_path / "team.zip"
    archive.write_bytes(data[:end] + record + bytes(tail))
    refuse(archive, E_ARCHIVE_BOMB, "overlaps")


def test_damaged_zip_member(tmp_path):
    data = bytearray(zip_bytes([("case1.png", PNG)]))
    data[40:44] = b"\xff\xff\xff\xff"  # inside the deflated data of the only member
    (tmp_path / "team.zip").write_bytes(bytes(data))
    refuse(tmp_path / "team.zip", E_ARCHIVE_UNREADABLE)


def test_tar_gz_bomb_refused_from_its_headers(tmp_path):
    archive = tmp_path / "team.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.addfile(tar_info("case1.png", size=len(PNG)), io.BytesIO(PNG))
        tar.addfile(tar_info("case2.npy", size=50 * MiB), Zeros(50 * MiB))
    assert archive.stat().st_size < MiB
    refuse(archive, E_ARCHIVE_BOMB, "case2.npy", "the archive's", "limit 100×",
           limits=ArchiveLimits(max_ratio=100))
    refuse(archive, E_ARCHIVE_BOMB, "case2.npy", "allowed per file",
           limits=ArchiveLimits(max_member_bytes=10 * MiB, max_ratio=float("inf")))


def test_truncated_tar_gz(tmp_path):
    archive = make_tar(tmp_path / "team.tgz", [("case1.png", os.urandom(50_000))])
    archive.write_bytes(archive.read_bytes()[:30_000])
    refuse(archive, E_ARCHIVE_UNREADABLE)


@pytest.mark.parametrize("case, ratio, expected", [
    ("bomb", "1000", E_ARCHIVE_BOMB),  # refused from the directory
    ("bomb", "inf", None),  # ratio check off: all 200 MiB inflated and written
    ("understated", "1000", E_ARCHIVE_BOMB),  # stopped while streaming
])
def test_peak_memory_of_the_bomb_cases(tmp_path, bomb_zip, case, ratio, expected):
    """Peak resident memory of a fresh interpreter extracting the archive."""
    data = bomb_zip if case == "bomb" else patch_zip(bomb_zip, "case2.npy", file_size=1000)
    archive = tmp_path / "team.zip"
    archive.write_bytes(data)
    (tmp_path / "dest").mkdir()
    script = (
        "import json, resource, sys\n"
        "from segeval.formats.archive import ArchiveError, ArchiveLimits, extract_submission\n"
        "def rss():  # VmHWM: ru_maxrss would include the forked pytest process\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM:'):\n"
        "            return int(line.split()[1]) * 1024\n"
        "    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024\n"
        "before, code = rss(), None\n"
        "try:\n"
        "    limits = ArchiveLimits(max_ratio=float(sys.argv[3]))\n"
        "    extract_submission(sys.argv[1], sys.argv[2], limits)\n"
        "except ArchiveError as exc:\n"
        "    code = exc.code\n"
        "print(json.dumps({'code': code, 'before': before, 'peak': rss()}))\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(archive), str(tmp_path / "dest"),
                             ratio], capture_output=True, text=True, check=True, timeout=60)
    shutil.rmtree(tmp_path / "dest")  # up to 200 MiB; pytest keeps old tmp folders
    numbers = json.loads(result.stdout)
    print(f"\n{case} (max_ratio {ratio}): peak RSS {numbers['peak'] / MiB:.1f} MiB, of which "
          f"interpreter and imports {numbers['before'] / MiB:.1f} MiB; code {numbers['code']}")
    assert numbers["code"] == expected
    assert numbers["peak"] < 100 * MiB
    assert numbers["peak"] - numbers["before"] < 16 * MiB


# --- counts, duplicates, layout ------------------------------------------------------------
def test_too_many_members(tmp_path):
    members = [(f"case{i}.png", PNG) for i in range(6)]
    limits = ArchiveLimits(max_members=5)
    refuse(make_zip(tmp_path / "team.zip", members), E_ARCHIVE_TOO_MANY_MEMBERS,
           "more than 5", limits=limits)
    refuse(make_tar(tmp_path / "team.tgz", members), E_ARCHIVE_TOO_MANY_MEMBERS,
           "more than 5", limits=limits)


@pytest.mark.parametrize("names", [
    ["case1.nii.gz", "case1.nrrd"],
    ["A.png", "a.png"],
    ["sub/B.NII.GZ", "sub/b.png"],
    [unicodedata.normalize("NFC", "é.png"), unicodedata.normalize("NFD", "é.npy")],
])
def test_duplicate_case_ids(tmp_path, names):
    members = [(name, PNG) for name in names]
    refuse(make_zip(tmp_path / "team.zip", members), E_ARCHIVE_DUPLICATE_CASE,
           "case id", "letter case")
    refuse(make_tar(tmp_path / "team.tgz", members), E_ARCHIVE_DUPLICATE_CASE, "case id")


@pytest.mark.parametrize("names", [
    ["top/case1.png", "top/sub/case2.png"],
    ["case1.png", "sub/case2.png"],
    ["top/sub/case1.png"],
])
def test_mask_files_in_sub_folders(tmp_path, names):
    members = [(name, PNG) for name in names]
    refuse(make_zip(tmp_path / "team.zip", members), E_ARCHIVE_NOT_FLAT, "sub-folder")
    refuse(make_tar(tmp_path / "team.tgz", members), E_ARCHIVE_NOT_FLAT, "sub-folder")


def test_archive_without_masks(tmp_path):
    refuse(make_zip(tmp_path / "team.zip", [("readme.txt", b"x"), (".DS_Store", b"")]),
           E_ARCHIVE_NO_MASKS, "no mask file", "2 other file(s)")


def test_not_an_archive(tmp_path):
    (tmp_path / "team.zip").write_bytes(b"this is text, not a zip")
    refuse(tmp_path / "team.zip", E_ARCHIVE_UNREADABLE, "not a zip")


# --- fuzzing -------------------------------------------------------------------------------
@cache
def valid_archives() -> dict[str, bytes]:
    members = [("sub/case1.png", PNG), ("sub/case2.nii.gz", NII_GZ), ("sub/readme.txt", b"x"),
               ("__MACOSX/sub/._case1.png", b"j")]
    folder = Path(tempfile.mkdtemp())
    try:
        plain = make_tar(folder / "a.tar", members, "w").read_bytes()
        used = -(-len(plain.rstrip(b"\0")) // 512) * 512  # drop the record padding
        return {"tar": plain[:used + 1024],
                "tgz": make_tar(folder / "a.tgz", members).read_bytes(),
                "zip": make_zip(folder / "a.zip", members).read_bytes()}
    finally:
        shutil.rmtree(folder)


def mutated(kind: str):
    size = len(valid_archives()[kind.removesuffix("+sum")])
    edits = st.lists(st.tuples(st.integers(0, size - 1), st.integers(0, 255)), min_size=1,
                     max_size=6)
    return st.tuples(edits, st.one_of(st.none(), st.integers(0, size)))


def tar_header_offsets(data: bytes) -> list[int]:
    offsets = []
    for at in range(0, len(data) - 511, 512):
        try:
            tarfile.TarInfo.frombuf(data[at:at + 512], "utf-8", "surrogateescape")
        except tarfile.HeaderError:
            continue
        offsets.append(at)
    return offsets


def extract_mutation(kind: str, edits, cut) -> None:
    """Edit bytes (for "tar+sum" then recompute each header's checksum, to get past it)."""
    original = valid_archives()[kind.removesuffix("+sum")]
    data = bytearray(original)
    for position, value in edits:
        data[position] = value
    if kind == "tar+sum":
        for at in tar_header_offsets(original):
            data[at + 148:at + 156] = b" " * 8
            data[at + 148:at + 156] = b"%06o\0 " % sum(data[at:at + 512])
    folder = Path(tempfile.mkdtemp())
    try:
        archive = folder / "team.bin"
        archive.write_bytes(bytes(data[:cut]))
        destination = folder / "dest"
        destination.mkdir()
        is_archive(archive)
        try:
            result = extract_submission(archive, destination)
        except ArchiveError:
            assert list(destination.iterdir()) == []
        else:
            assert all(p.parent == destination.resolve() for p in result.files)
        assert sorted(p.name for p in folder.iterdir()) == ["dest", "team.bin"]
    finally:
        shutil.rmtree(folder)


@pytest.mark.parametrize("kind", ["zip", "tar", "tar+sum", "tgz"])
@settings(max_examples=150, deadline=2000, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_archives_are_extracted_or_refused(kind, data):
    """Never another exception, never a hang, never a file outside the folder."""
    extract_mutation(kind, *data.draw(mutated(kind)))
