"""segeval: exact, explicit evaluation of image segmentation.

>>> import numpy as np, segeval
>>> reference = np.array([[0, 1, 1, 2], [0, 1, 2, 2]])
>>> prediction = np.array([[0, 1, 2, 2], [0, 1, 1, 2]])
>>> report = segeval.evaluate([prediction], [reference], labels=[1, 2])
>>> report.to_dict()["summary"]["macro"]["dice"]  # class 1: 2·2/(3+3), class 2: 2·2/(3+3)
0.6666666666666666

Folders work the same way: ``segeval.evaluate("pred/", "gt/")`` pairs files by case id.

Importing segeval never imports torch; only a GPU device, torch tensors or
:mod:`segeval.losses` do.  The public names are loaded on first use, so that
``segeval --help`` does not pay for NumPy either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from segeval.version import __version__

_PUBLIC = {
    "evaluate": "segeval.api",
    "EvalConfig": "segeval.config",
    "Report": "segeval.results",
    "CaseError": "segeval.errors",
    "ExitCode": "segeval.errors",
    "SegevalError": "segeval.errors",
    "UsageError": "segeval.errors",
}

if TYPE_CHECKING:
    from segeval.api import evaluate
    from segeval.config import EvalConfig
    from segeval.errors import CaseError, ExitCode, SegevalError, UsageError
    from segeval.results import Report


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'segeval' has no attribute {name!r}")


__all__ = [
    "CaseError", "EvalConfig", "ExitCode", "Report", "SegevalError", "UsageError", "evaluate",
    "__version__",
]
