"""Exception types, stable error codes and process exit codes.

Errors are raised where a problem is found and turned into one line of text and an
exit code in exactly one place (``segeval.commands.app``).  A problem with one case's files is a
:class:`CaseError`: it is recorded in the report against that case and never stops the
other cases.  A problem with the request as a whole (bad option, unreadable folder) is a
:class:`UsageError` and stops the run before any case is read.
"""

from __future__ import annotations

from enum import IntEnum
from pathlib import Path


class ExitCode(IntEnum):
    """Process exit codes, documented in the README and in ``segeval --help``."""

    OK = 0
    BAR_NOT_MET = 1  # a --fail-under bar was missed (or the headline score is undefined)
    USAGE = 2  # bad option, unreadable folder, nothing to evaluate
    INVALID_INPUT = 3  # one or more cases could not be evaluated; the report holds every case
    INTERNAL = 4  # a bug in segeval: please report it
    INTERRUPTED = 130  # Ctrl-C; the report holds the finished cases


class SegevalError(Exception):
    """Base class: a problem with a file (optional), a description and a hint."""

    exit_code: ExitCode = ExitCode.INTERNAL

    def __init__(
        self, code: str, problem: str, path: str | Path | None = None, hint: str = ""
    ) -> None:
        self.code = code
        self.problem = problem
        self.path = None if path is None else str(path)
        self.hint = hint
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """One line: ``path: problem (hint)``."""
        text = self.problem if self.path is None else f"{self.path}: {self.problem}"
        return f"{text} ({self.hint})" if self.hint else text


class UsageError(SegevalError):
    """The request itself is wrong: an option, a folder, an empty selection."""

    exit_code = ExitCode.USAGE


class CaseError(SegevalError):
    """One case's files cannot be evaluated; the rest of the run goes on."""

    exit_code = ExitCode.INVALID_INPUT


# Stable codes written to the report's ``error_code``.  Add new codes, never rename.
E_MISSING_PREDICTION = "E_MISSING_PREDICTION"
E_DUPLICATE_CASE = "E_DUPLICATE_CASE"
E_UNREADABLE = "E_UNREADABLE"
E_UNSUPPORTED_FORMAT = "E_UNSUPPORTED_FORMAT"
E_RGB_MASK = "E_RGB_MASK"
E_SHAPE_MISMATCH = "E_SHAPE_MISMATCH"
E_BAD_DIMENSIONS = "E_BAD_DIMENSIONS"
E_NAN = "E_NAN"
E_PROBABILITY_RANGE = "E_PROBABILITY_RANGE"
E_NON_INTEGER_LABELS = "E_NON_INTEGER_LABELS"
E_NEGATIVE_LABEL = "E_NEGATIVE_LABEL"
E_UNEXPECTED_LABEL = "E_UNEXPECTED_LABEL"
E_NOT_ONE_HOT = "E_NOT_ONE_HOT"
E_CHANNELS = "E_CHANNELS"
E_NOT_A_FILE = "E_NOT_A_FILE"
E_EMPTY_FILE = "E_EMPTY_FILE"
E_UNSAFE_PATH = "E_UNSAFE_PATH"
E_FORMAT_MISMATCH = "E_FORMAT_MISMATCH"
E_TOO_LARGE = "E_TOO_LARGE"
E_BAD_SPACING = "E_BAD_SPACING"
E_GEOMETRY_MISMATCH = "E_GEOMETRY_MISMATCH"
E_TIMEOUT = "E_TIMEOUT"
E_WORKER_CRASHED = "E_WORKER_CRASHED"
E_INTERRUPTED = "E_INTERRUPTED"
E_INTERNAL = "E_INTERNAL"
# Submissions read by segeval.formats.archive (segeval grade)
E_ARCHIVE_UNREADABLE = "E_ARCHIVE_UNREADABLE"
E_ARCHIVE_UNSAFE_MEMBER = "E_ARCHIVE_UNSAFE_MEMBER"
E_ARCHIVE_BOMB = "E_ARCHIVE_BOMB"
E_ARCHIVE_NESTED = "E_ARCHIVE_NESTED"
E_ARCHIVE_ENCRYPTED = "E_ARCHIVE_ENCRYPTED"
E_ARCHIVE_UNSUPPORTED_METHOD = "E_ARCHIVE_UNSUPPORTED_METHOD"
E_ARCHIVE_DUPLICATE_CASE = "E_ARCHIVE_DUPLICATE_CASE"
E_ARCHIVE_TOO_MANY_MEMBERS = "E_ARCHIVE_TOO_MANY_MEMBERS"
E_ARCHIVE_NOT_FLAT = "E_ARCHIVE_NOT_FLAT"
E_ARCHIVE_NO_MASKS = "E_ARCHIVE_NO_MASKS"


ERROR_CODES: dict[str, str] = {
    E_MISSING_PREDICTION: "a reference has no prediction (with --missing error)",
    E_DUPLICATE_CASE: "two files in one folder give the same case id",
    E_UNREADABLE: "the file could not be opened or decoded",
    E_UNSUPPORTED_FORMAT: "the file's format is not one segeval reads",
    E_RGB_MASK: "a colour (RGB/RGBA) image was given where a label mask was expected",
    E_SHAPE_MISMATCH: "prediction and reference shapes differ",
    E_BAD_DIMENSIONS: "the array is not 2-D or 3-D (after squeezing a trailing singleton axis)",
    E_NAN: "NaN or infinite values in a prediction or reference",
    E_PROBABILITY_RANGE: "a probability map has values outside [0, 1]",
    E_NON_INTEGER_LABELS: "a reference (or a label map) holds non-integer values",
    E_NEGATIVE_LABEL: "a label map holds negative labels",
    E_UNEXPECTED_LABEL: "a label outside --labels was found",
    E_NOT_ONE_HOT: "a channel-axis reference is not one-hot (use --multilabel)",
    E_CHANNELS: "prediction and reference channel layouts do not match",
    E_NOT_A_FILE: "a FIFO, device or folder where a mask file was expected",
    E_EMPTY_FILE: "the file is empty (0 bytes)",
    E_UNSAFE_PATH: "a symlink leaving the evaluated folder, or a detached header pointing "
    "outside its own folder",
    E_FORMAT_MISMATCH: "the file's bytes are not the format its name says",
    E_TOO_LARGE: "more voxels than --max-voxels, or refused by Pillow's bomb guard",
    E_BAD_SPACING: "voxel spacing not finite and positive",
    E_GEOMETRY_MISMATCH: "spacing, origin or orientation differ beyond --geometry-tol",
    E_TIMEOUT: "the case took longer than --case-timeout",
    E_WORKER_CRASHED: "the process evaluating the case died (e.g. a decoder crash)",
    E_INTERRUPTED: "not evaluated: the run was interrupted",
    E_INTERNAL: "a bug in segeval while evaluating this case (exit 4)",
    E_ARCHIVE_UNREADABLE: "the archive is damaged, truncated, or not a zip, tar or tar.gz file",
    E_ARCHIVE_UNSAFE_MEMBER: "a member's name or type could reach outside the extraction "
                             "folder (.., absolute path, drive letter, link, device, FIFO)",
    E_ARCHIVE_BOMB: "a member or the whole archive expands beyond the size or ratio limits, "
                    "or its headers understate its size",
    E_ARCHIVE_NESTED: "the archive holds another archive",
    E_ARCHIVE_ENCRYPTED: "a zip member is encrypted",
    E_ARCHIVE_UNSUPPORTED_METHOD: "a zip member is compressed with a method other than "
                                  "stored/deflated, or a tar is not plain or gzip-compressed",
    E_ARCHIVE_DUPLICATE_CASE: "two mask files in the archive give the same case id "
                              "(letter case ignored)",
    E_ARCHIVE_TOO_MANY_MEMBERS: "the archive has more members than the limit",
    E_ARCHIVE_NOT_FLAT: "mask files in sub-folders below the one common top folder",
    E_ARCHIVE_NO_MASKS: "the archive holds no mask file",
}
