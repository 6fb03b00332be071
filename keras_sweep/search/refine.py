"""Coarse to fine, as the recipe advises: a finer grid around a finished sweep's best."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool)


def refine_values(values: list[Any], best: Any, points: int = 5) -> list[Any]:
    """A finer grid around ``best``: from its lower to its upper neighbour.

    Non-numeric parameters (and one-value grids) are kept at the best value.
    Integer grids stay integers.
    """
    if not _is_number(best) or len(values) < 2 or not all(_is_number(v) for v in values):
        return [best]
    ordered = sorted(set(values))
    i = ordered.index(best)
    low = ordered[i - 1] if i > 0 else best
    high = ordered[i + 1] if i < len(ordered) - 1 else best
    grid = np.linspace(low, high, points)
    found: set[Any]
    if all(isinstance(v, (int, np.integer)) for v in values):
        found = {int(round(v)) for v in grid}
    else:
        found = {float(round(v, 10)) for v in grid}
    return sorted(found | {best})


def refine_spec(spec: dict[str, Any], best_params: dict[str, Any],
                points: int = 5) -> dict[str, Any]:
    """The spec of the next, finer sweep around ``best_params`` (a single grid)."""
    new = copy.deepcopy(spec)
    grid = spec["param_grid"]
    if isinstance(grid, list):
        grid = next(g for g in grid if set(g) == set(best_params))
    new["param_grid"] = {k: refine_values(list(v), best_params[k], points)
                         for k, v in grid.items()}
    new["name"] = f"{spec.get('name', 'sweep')}-fine"
    if "output" in spec:
        new["output"] = f"{spec['output']}-fine"
    return new
