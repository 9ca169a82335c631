"""Exception types, stable error codes and process exit codes.

Errors are raised where a problem is found and turned into one line of text and an
exit code in exactly one place (``segeval.cli``).  A problem with one case's files is a
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
}
