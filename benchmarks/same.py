"""Do two checkouts' reports hold the same numbers?  (Used by the ``--before`` checks.)

Floats are compared to 1e-12 relative: boundary distances taken from grid offsets (since
the grid search in ``segeval.core.boundary``) and from differences of two positions (a k-d
tree) can differ in their last bits at an anisotropic spacing.  Everything else must be
equal; NaN equals NaN."""

from __future__ import annotations

import math
from typing import Any

REL = 1e-12


def same_values(a: Any, b: Any, rel: float = REL) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_values(a[k], b[k], rel) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_values(x, y, rel) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, (int, float)) or \
            isinstance(b, float) and isinstance(a, (int, float)):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=rel, abs_tol=0.0)
    return a == b
