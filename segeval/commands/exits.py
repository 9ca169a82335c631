"""Exit codes, and the one place where an exception becomes a message and an exit code.

  0  success
  1  a --fail-under bar was not met (or the score is undefined); for ``compare``, a regression
  2  usage or configuration error (bad option, unreadable folder or report); nothing evaluated
  3  one or more cases had invalid input; the report still holds every case
  4  internal error (a bug: please report it)
130  interrupted (Ctrl-C); the report holds the cases finished so far

Every command runs its body through :func:`guarded`; messages go to stderr as one line each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from segeval.errors import ExitCode, SegevalError

EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 a --fail-under bar not met; 2 usage or configuration error; "
    "3 one or more cases had invalid input (the report still holds every case); "
    "4 internal error; 130 interrupted."
)


def guarded(body: Callable[[], ExitCode], err: Any, *, debug: bool,
            interrupted: str = "interrupted") -> ExitCode:
    """Run ``body`` and return its exit code; turn what it raises into one stderr line and
    the exit code of its kind: a :class:`SegevalError` its own code, an OSError (an output
    that cannot be written) 2, Ctrl-C 130 with ``interrupted`` as the message, anything
    else 4 (re-raised with ``debug`` so that the traceback shows)."""
    try:
        return body()
    except SegevalError as exc:
        err.print(f"segeval: error: {exc.message}", markup=False)
        return exc.exit_code
    except OSError as exc:
        err.print(f"segeval: error: cannot write output: {exc}", markup=False)
        return ExitCode.USAGE
    except KeyboardInterrupt:
        err.print(f"segeval: {interrupted}", markup=False)
        return ExitCode.INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the last line of defence, see --debug
        if debug:
            raise
        err.print(f"segeval: internal error: {type(exc).__name__}: {exc} "
                  "(run with --debug for the traceback and please report it)", markup=False)
        return ExitCode.INTERNAL


def stderr() -> LazyConsole:
    """The console for messages: rich's stderr Console, made on first use."""
    return LazyConsole()


class LazyConsole:
    """rich's stderr Console, made on first use: a quiet run with nothing to say never
    imports rich.console (~11 ms of start-up).  Attributes are forwarded; what needs the
    Console itself (rich's Progress enters it as a context manager) takes :meth:`real`."""

    def __init__(self, **options: Any) -> None:
        self._options = {"stderr": True, "highlight": False,
                         "soft_wrap": True, **options}  # soft wrap: one line per message
        self._console: Any = None

    def real(self) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real(), name)
