"""segeval: exact, explicit evaluation of image segmentation.

>>> import segeval
>>> report = segeval.evaluate("pred/", "gt/", labels=[1, 2])
>>> report.to_dict()["summary"]["macro"]["dice"]

Importing segeval never imports torch; only a GPU device, torch tensors or
:mod:`segeval.losses` do.
"""

__version__ = "0.1.0"

from segeval.api import evaluate  # noqa: E402
from segeval.config import EvalConfig  # noqa: E402
from segeval.errors import CaseError, ExitCode, SegevalError, UsageError  # noqa: E402
from segeval.report import Report  # noqa: E402

__all__ = [
    "CaseError", "EvalConfig", "ExitCode", "Report", "SegevalError", "UsageError", "evaluate",
    "__version__",
]
