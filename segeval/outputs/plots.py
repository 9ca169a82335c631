"""matplotlib, the optional dependency of the HTML report and the overlay pictures."""

from __future__ import annotations

from types import ModuleType

from segeval.errors import UsageError


def require_matplotlib(what: str = "the HTML report") -> ModuleType:
    """matplotlib, imported on first use; a :class:`UsageError` saying which extra to
    install when it is missing (checked before any case is read)."""
    try:
        import matplotlib
    except ImportError:
        raise UsageError("E_USAGE", f"{what} needs matplotlib",
                         hint="pip install 'segeval[report]'") from None
    return matplotlib
