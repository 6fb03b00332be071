"""Sampling distributions a spec's random and halving searches draw parameters from.

A spec writes them as strings in ``param_grid`` (a list stays a list: a uniform
choice among its values)::

    param_grid:
      optimizer__learning_rate: loguniform(1e-4, 1e-1)
      model__neurons: randint(4, 64)        # 4 .. 63, as NumPy and SciPy count
      model__dropout: uniform(0.0, 0.5)
      model__activation: [relu, tanh]

Each becomes the SciPy distribution scikit-learn's ``RandomizedSearchCV`` samples
with the search's ``random_state``, so a seeded spec draws the same candidates
every run (which the journal's resume relies on).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Any

from ..exceptions import SpecError

#: name -> (arguments, what they mean, an example)
KINDS: dict[str, tuple[int, str, str]] = {
    "uniform": (2, "low and high (low < high)", "uniform(0.0, 0.5)"),
    "loguniform": (2, "low and high (0 < low < high)", "loguniform(1e-4, 1e-1)"),
    "randint": (2, "low and high integers, high excluded (low < high)", "randint(4, 64)"),
}
_CALL = re.compile(r"^\s*([A-Za-z_]\w*)\s*\((.*)\)\s*$", re.S)


@dataclass(frozen=True)
class Distribution:
    """One parameter's distribution, as the spec wrote it."""

    kind: str
    low: float
    high: float
    text: str

    def frozen(self) -> Any:
        """The SciPy distribution scikit-learn samples (``rvs(random_state=...)``)."""
        from scipy import stats

        if self.kind == "uniform":
            return stats.uniform(self.low, self.high - self.low)
        if self.kind == "loguniform":
            return stats.loguniform(self.low, self.high)
        return stats.randint(int(self.low), int(self.high))

    def probes(self) -> list[Any]:
        """Values at the ends of the range, to check against a parameter's domain."""
        if self.kind == "randint":
            return [int(self.low), int(self.high) - 1]
        return [self.low, self.high]

    def __str__(self) -> str:
        return self.text


def looks_like(value: Any) -> bool:
    """Whether ``value`` is written as a distribution (``name(...)``)."""
    return isinstance(value, str) and _CALL.match(value) is not None


def parse(field: str, value: str) -> Distribution:
    """The distribution ``value`` describes; a :class:`SpecError` naming ``field`` if none."""
    match = _CALL.match(value)
    examples = ", ".join(example for _, _, example in KINDS.values())
    if match is None:
        raise SpecError(field, value, "not a distribution", f"write e.g. {examples}, or a list")
    name, inner = match.group(1), match.group(2)
    if name not in KINDS:
        raise SpecError(field, value, f"unknown distribution {name!r}",
                        f"use one of: {examples}; a list for a choice among values")
    count, meaning, example = KINDS[name]
    args: tuple[Any, ...] | None
    try:
        args = tuple(ast.literal_eval(f"({inner},)")) if inner.strip() else ()
    except (ValueError, SyntaxError):
        args = None
    if (args is None or len(args) != count
            or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)):
        raise SpecError(field, value, f"{name} takes {count} numbers: {meaning}",
                        f"write e.g. {example}")
    low, high = float(args[0]), float(args[1])
    if name == "randint" and not all(isinstance(a, int) for a in args):
        raise SpecError(field, value, "randint takes integers", f"write e.g. {example}")
    if not low < high or (name == "loguniform" and low <= 0):
        raise SpecError(field, value, f"bad bounds: {name} needs {meaning}",
                        f"write e.g. {example}")
    return Distribution(name, low, high, value.strip())


def sampled(value: Any) -> Any:
    """A spec's grid value as scikit-learn samples it: a list, or a SciPy distribution."""
    return value.frozen() if isinstance(value, Distribution) else value
