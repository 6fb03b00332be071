"""Sweep specs: read YAML, check every field, resolve defaults. No cluster needed.

A spec is validated completely before any cluster starts; each problem raises
:class:`~keras_sweep.exceptions.SpecError` naming the field, the bad value and a fix.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .. import clusters
from ..config import Settings, default_output
from ..exceptions import SpecError
from ..report.tracking import TrackingConfig, check_installed
from ..search.build import Rung, SearchOptions, grid_size, plan
from .checks import check_values
from .datasets import BUNDLED
from .distributions import Distribution, looks_like, parse

#: Top-level fields: name -> (accepted types, description used in errors).
FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "name": ((str,), "a short name for the sweep"),
    "data": ((dict,), "{dataset: breast_cancer} or {csv: PATH, target: -1}"),
    "model": ((dict,), "{builder: mlp, params: {...}, loss: ..., optimizer: ...}"),
    "fit": ((dict,), "{epochs: 10, batch_size: 10}"),
    "param_grid": ((dict, list), "{model__neurons: [4, 8], batch_size: [10, 20]}"),
    "search": ((dict,), "{kind: random, n_iter: 20} or {kind: halving, factor: 3}"),
    "cv": ((int,), "the number of folds, e.g. 3"),
    "scoring": ((str, list), "a scikit-learn scorer name, e.g. accuracy, or several: "
                "[accuracy, f1]"),
    "seed": ((int, type(None)), "an integer, e.g. 7"),
    "refit": ((bool, str), "true, false, or (with several scorers) the one that picks "
              "the best, e.g. f1"),
    "return_train_score": ((bool,), "true (score the training folds too) or false"),
    "error_score": ((int, float, str), "nan, a number, or raise"),
    "allow_failures": ((bool,), "true or false"),
    "max_retries": ((int, type(None)), "how often a fit whose worker died is retried, e.g. 2"),
    "fast_path": ((bool, type(None)), "true (whole epochs per Keras execution) or false"),
    "compiled_loop": ((bool, type(None)), "true (sweep's compiled training loop) or false"),
    "xla": ((bool, type(None)), "true (XLA-compile the training loop) or false"),
    "fail_on_nan": ((bool, type(None)), "true (a NaN loss fails the fit) or false"),
    "cluster": ((dict,), "{backend: local, workers: 2}"),
    "report": ((bool,), "true (write report.html, live while it runs) or false"),
    "tracking": ((dict, type(None)), "{mlflow: http://127.0.0.1:5000, experiment: NAME}"),
    "output": ((str,), "a folder for the results, e.g. sweep-results/demo"),
}
DATA_KEYS = {"dataset", "csv", "target", "header", "scale", "sample"}
MODEL_KEYS = {"builder", "task", "params", "loss", "optimizer", "optimizer_params"}
#: Recipe / Keras-2 grid keys -> the parameter of sweep's built-in ``mlp`` or scikeras.
GRID_KEYS: dict[str, str] = {
    "init": "model__kernel_initializer",
    "init_mode": "model__kernel_initializer",
    "kernel_initializer": "model__kernel_initializer",
    "dropout_rate": "model__dropout",
    "weight_constraint": "model__max_norm",
    "maxnorm": "model__max_norm",
    "learn_rate": "optimizer__learning_rate",
    "lr": "optimizer__learning_rate",
    "nb_epoch": "epochs",
}
#: Keras-2 names that no longer exist, and what to write instead.
REMOVED: dict[str, str] = {
    "build_fn": "model (scikeras: KerasClassifier(model=create_model))",
    "decay": "optimizer__weight_decay, or a learning-rate schedule",
}
#: options of each search kind (``search:``), beside ``kind``
SEARCH_KEYS: dict[str, set[str]] = {
    "grid": set(),
    "random": {"n_iter"},
    "halving": {"n_candidates", "factor", "resource", "min_resources", "max_resources",
                "aggressive_elimination"},
    "hyperband": {"factor", "aggressiveness", "resource", "min_resources", "max_resources"},
}
#: search kinds that run rungs of successive halving
HALVING_KINDS = ("halving", "hyperband")
ROUTING_PREFIXES = ("model__", "optimizer__", "loss__", "fit__", "predict__", "callbacks__")
OPTIMIZER_ALIASES = {"learning_rate", "momentum", "rho", "epsilon", "beta_1", "beta_2",
                     "nesterov", "weight_decay"}


@dataclass
class Spec:
    """A validated sweep spec with every default filled in."""

    raw: dict[str, Any]
    name: str
    data: dict[str, Any]
    model: dict[str, Any]
    fit: dict[str, Any]
    #: each value a list, or (random and halving searches) a Distribution
    param_grid: list[dict[str, Any]]
    cv: int
    #: one scikit-learn scorer name, or several
    scoring: str | list[str]
    seed: int | None
    #: refit the best on all rows; with several scorers a name: the one that ranks
    refit: bool | str
    error_score: float | str
    allow_failures: bool
    #: None: from the Dask configuration (``sweep.fit.max-retries``, ``sweep.fit.fast-path``)
    max_retries: int | None
    fast_path: bool | None
    compiled_loop: bool | None
    xla: bool | None
    fail_on_nan: bool | None
    cluster: dict[str, Any]
    output: str
    #: write report.html (live while the sweep runs, final at its end)
    report: bool = True
    #: score the training folds too (``mean_train_<scorer>`` in cv_results)
    return_train_score: bool = False
    #: MLflow tracking (None: none)
    tracking: TrackingConfig | None = None
    #: how candidates are searched (``search:``; a full grid when left out)
    search: SearchOptions = field(default_factory=SearchOptions)
    base_dir: Path | None = None
    aliases: dict[str, str] = field(default_factory=dict)

    @property
    def metric(self) -> str:
        """The scorer that ranks candidates: the only one, ``refit``'s name, or the first."""
        if isinstance(self.scoring, str):
            return self.scoring
        return self.refit if isinstance(self.refit, str) else self.scoring[0]

    @property
    def search_scoring(self) -> str | list[str]:
        """``scoring`` as the search gets it: several scorers with :attr:`metric` first
        (a fit's reported score, the report and MLflow read the first)."""
        if isinstance(self.scoring, str):
            return self.scoring
        return [self.metric] + [s for s in self.scoring if s != self.metric]

    @property
    def n_candidates(self) -> int | None:
        """Candidates of the first round (a random search's draws, a halving's first rung);
        None when that depends on the data (a halving that draws as many as rows allow)."""
        size = grid_size(self.param_grid)
        if self.search.kind == "random":
            return int(min(self.search.n_iter, size))
        if self.search.sampling(self.param_grid):
            wanted = self.search.n_candidates
            return int(min(wanted, size)) if isinstance(wanted, int) else None
        return int(size)

    def n_fits(self, n_samples: int, n_classes: int = 0) -> int:
        """Cross-validation fits the search runs at most (every rung's, for halving)."""
        return sum(r.candidates for r in self.rungs(n_samples, n_classes)) * self.cv

    def rungs(self, n_samples: int, n_classes: int = 0) -> list[Rung]:
        """The rounds this spec's search runs on ``n_samples`` rows (one unless halving)."""
        return plan(self.search, self.param_grid, n_samples=n_samples, n_splits=self.cv,
                    n_classes=n_classes)

    def describe(self, n_samples: int, n_classes: int = 0) -> str:
        """What the search will run, e.g. "12 candidates x 3 folds = 36 fits"."""
        rungs = self.rungs(n_samples, n_classes)
        if self.search.kind not in HALVING_KINDS:
            drawn = " drawn" if self.search.kind == "random" else ""
            return (f"{rungs[0].candidates} candidates{drawn} x {self.cv} folds = "
                    f"{rungs[0].candidates * self.cv} fits")
        unit = "rows" if self.search.resource == "n_samples" else self.search.resource
        total = sum(r.candidates for r in rungs) * self.cv
        if self.search.kind == "hyperband":
            brackets = sorted({r.bracket for r in rungs}, key=lambda b: -(b or 0))
            parts = ["bracket {}: {}".format(b, ", ".join(
                f"{r.candidates} x {r.resources}" for r in rungs if r.bracket == b))
                for b in brackets]
            return (f"Hyperband in {len(brackets)} bracket(s) of successive halving, "
                    f"candidates x {unit} ({'; '.join(parts)}), {self.cv} folds each = "
                    f"{total} fits at most")
        steps = ", ".join(f"{r.candidates} x {r.resources} {unit}" for r in rungs)
        return (f"successive halving in {len(rungs)} rung(s) of candidates x resource "
                f"({steps}), {self.cv} folds each = {total} fits at most")

    def settings(self) -> Settings:
        """The spec's settings, resolved over the Dask configuration (:mod:`keras_sweep.config`)."""
        from ..config import resolve

        return resolve(max_retries=self.max_retries, fast_path=self.fast_path,
                       compiled_loop=self.compiled_loop, xla=self.xla,
                       fail_on_nan=self.fail_on_nan, **self.cluster)

    def resolved(self, settings: Settings | None = None) -> dict[str, Any]:
        """The spec as it runs (with ``settings``, default :meth:`settings`), for saving."""
        out = {k: copy.deepcopy(getattr(self, k)) for k in FIELDS}
        settings = settings or self.settings()
        out["max_retries"], out["fast_path"] = settings.max_retries, settings.fast_path
        out["compiled_loop"], out["xla"] = settings.compiled_loop, settings.xla
        out["fail_on_nan"] = settings.fail_on_nan
        out["tracking"] = ({"mlflow": self.tracking.uri, "experiment": self.tracking.experiment}
                           if self.tracking else None)
        out["param_grid"] = [{k: str(v) if isinstance(v, Distribution) else v
                              for k, v in grid.items()} for grid in out["param_grid"]]
        out["param_grid"] = out["param_grid"][0] if len(out["param_grid"]) == 1 else out[
            "param_grid"]
        options = self.search
        out["search"] = {"kind": options.kind, **{
            k: getattr(options, k) for k in sorted(SEARCH_KEYS[options.kind])
            if k != "aggressiveness"}}  # (given as factor)
        if options.kind in HALVING_KINDS:
            out["search"]["min_resources"] = options.min_resources_for(self.param_grid)
        if isinstance(out["error_score"], float) and math.isnan(out["error_score"]):
            out["error_score"] = "nan"
        if "csv" in out["data"] and self.base_dir is not None:
            from .datasets import csv_path

            out["data"]["csv"] = str(csv_path(out["data"]["csv"], self.base_dir).resolve())
        return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a spec file; YAML syntax errors become :class:`SpecError`."""
    p = Path(path)
    if not p.is_file():
        raise SpecError("SPEC", str(p), "the spec file does not exist",
                        "give the path of a YAML spec, or run `sweep demo` for an example")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise SpecError("SPEC", str(p), f"not valid YAML: {exc}",
                        "fix the YAML syntax (indentation, colons, quotes)") from exc
    if not isinstance(raw, dict):
        raise SpecError("SPEC", type(raw).__name__, "a spec must be a YAML mapping",
                        "start the file with fields such as `data:` and `param_grid:`")
    return raw


def demo_spec() -> dict[str, Any]:
    """The packaged demo spec: a small real grid on scikit-learn's breast cancer data."""
    text = resources.files("keras_sweep").joinpath("specs/demo.yaml").read_text()
    return dict(yaml.safe_load(text))


def read_profile(path: str | Path) -> dict[str, Any]:
    """A cluster profile: a YAML file with a ``cluster:`` mapping (or just the mapping)."""
    raw = read_yaml(path)
    profile = raw.get("cluster", raw)
    if not isinstance(profile, dict) or "backend" not in profile:
        raise SpecError("--cluster", str(path), "a profile needs a cluster: mapping with a "
                        "backend", "name it, e.g. backend: ssh or backend: slurm "
                        "(examples in cluster/*.yaml)")
    return dict(profile)


def apply_profile(cluster: dict[str, Any], profile: dict[str, Any]) -> dict[str, Any]:
    """The spec's ``cluster:`` section under a profile: the profile wins.

    Options of another backend in the spec are dropped; the common ones
    (workers, threads, recycling, Keras backend) are kept unless the profile sets them.
    """
    if cluster.get("backend", "local") == profile["backend"]:
        return {**cluster, **profile}
    return {**{k: v for k, v in cluster.items() if k in clusters.COMMON_KEYS}, **profile}


def load(source: str | Path | dict[str, Any], overrides: dict[str, Any] | None = None,
         profile: dict[str, Any] | None = None) -> Spec:
    """Read (if a path), override, and validate a spec.

    Parameters
    ----------
    source : path or dict
        A YAML file or an already-parsed mapping.
    overrides : dict, optional
        Dotted keys to set, e.g. ``{"cluster.workers": 4, "fit.epochs": 2}``.
    profile : dict, optional
        A cluster profile (:func:`read_profile`) that replaces the spec's cluster
        section before the overrides apply.
    """
    base_dir = None
    if isinstance(source, dict):
        raw = copy.deepcopy(source)
    else:
        raw, base_dir = read_yaml(source), Path(source).resolve().parent
    if profile is not None:
        raw["cluster"] = apply_profile(dict(raw.get("cluster") or {}), profile)
    for key, value in (overrides or {}).items():
        _set_dotted(raw, key, value)
    return validate(raw, base_dir)


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def validate(raw: dict[str, Any], base_dir: Path | None = None) -> Spec:
    """Check every field of a parsed spec and return a :class:`Spec`."""
    _check_fields(raw)
    data = _check_data(raw.get("data", {"dataset": "breast_cancer"}))
    model = _check_model(raw.get("model", {}))
    fit = _check_fit(raw.get("fit", {}))
    search = _check_search(raw.get("search") or {}, fit)
    grid = _check_grid(raw.get("param_grid"), search)
    cv = raw.get("cv", 3)
    if cv < 2:
        raise SpecError("cv", cv, "cross-validation needs at least 2 folds", "set cv: 3")
    scoring = raw.get("scoring", "accuracy" if model.get("task") != "regression" else "r2")
    _check_scoring(scoring, raw.get("refit", True), search)
    cluster = _check_cluster(raw.get("cluster", {}))
    spec = Spec(
        raw=raw, name=raw.get("name", "sweep"), data=data, model=model, fit=fit,
        param_grid=grid, cv=cv, scoring=scoring, seed=raw.get("seed", 0),
        refit=raw.get("refit", True), error_score=_error_score(raw.get("error_score", "nan")),
        allow_failures=raw.get("allow_failures", False),
        max_retries=_non_negative("max_retries", raw.get("max_retries")),
        fast_path=raw.get("fast_path"), compiled_loop=raw.get("compiled_loop"),
        xla=raw.get("xla"), fail_on_nan=raw.get("fail_on_nan"),
        cluster=cluster,
        output=raw.get("output") or default_output(raw.get("name", "sweep")),
        report=raw.get("report", True), tracking=_check_tracking(raw.get("tracking")),
        return_train_score=raw.get("return_train_score", False),
        search=search, base_dir=base_dir,
    )
    _check_grid_keys(spec)
    _check_resource(spec)
    check_values(spec.model, spec.fit, spec.param_grid, spec.seed)
    return spec


def _check_fields(raw: dict[str, Any]) -> None:
    for key, value in raw.items():
        if key not in FIELDS:
            raise SpecError(key, value, "unknown field",
                            f"remove it, or use one of: {', '.join(FIELDS)}")
        types, example = FIELDS[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise SpecError(key, value, f"wrong type {type(value).__name__}",
                            f"write it as {example}")


def _unknown(section: str, mapping: dict[str, Any], allowed: AbstractSet[str]) -> None:
    for key, value in mapping.items():
        if key not in allowed:
            raise SpecError(f"{section}.{key}", value, "unknown field",
                            f"use one of: {', '.join(sorted(allowed))}")


def _check_data(data: dict[str, Any]) -> dict[str, Any]:
    _unknown("data", data, DATA_KEYS)
    if ("dataset" in data) == ("csv" in data):
        raise SpecError("data", data, "give exactly one of data.dataset or data.csv",
                        "data: {dataset: breast_cancer}  or  data: {csv: my.csv, target: -1}")
    if "dataset" in data and data["dataset"] not in BUNDLED:
        raise SpecError("data.dataset", data["dataset"], "not a dataset bundled with "
                        "scikit-learn", f"use one of: {', '.join(BUNDLED)}, or data.csv: PATH")
    sample = data.get("sample", 1.0)
    if isinstance(sample, bool) or not isinstance(sample, (int, float)) or not 0 < sample <= 1:
        raise SpecError("data.sample", sample, "must be a fraction in (0, 1]",
                        "data: {sample: 0.25} trains on a stratified quarter of the rows")
    target = data.get("target", -1)
    if isinstance(target, bool) or not isinstance(target, (int, str)):
        raise SpecError("data.target", target, "must be a column index or name",
                        "target: -1 (last column) or target: outcome (with header: true)")
    return dict(data)


def _check_model(model: dict[str, Any]) -> dict[str, Any]:
    _unknown("model", model, MODEL_KEYS)
    out = {"builder": "mlp", "params": {}, "optimizer": "adam", "optimizer_params": {}, **model}
    if out.get("task") not in (None, "classification", "regression"):
        raise SpecError("model.task", out["task"], "unknown task",
                        "use classification or regression (or leave it out)")
    for key in ("params", "optimizer_params"):
        if not isinstance(out[key], dict):
            raise SpecError(f"model.{key}", out[key], "must be a mapping",
                            f"model: {{{key}: {{name: value}}}}")
    if not isinstance(out["builder"], str):
        raise SpecError("model.builder", out["builder"], "must be a string",
                        "builder: mlp  or  builder: mymodels:build_model")
    return out


def _check_fit(fit: dict[str, Any]) -> dict[str, Any]:
    out = {"epochs": 10, "batch_size": 32, **fit}
    for key in ("epochs", "batch_size"):
        value = out[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SpecError(f"fit.{key}", value, "must be a positive integer",
                            f"fit: {{{key}: 10}}")
    return out


def _check_search(raw: dict[str, Any], fit: dict[str, Any]) -> SearchOptions:
    """The ``search:`` section: a known kind and that kind's options, each in range."""
    kind = raw.get("kind", "grid")
    if kind not in SEARCH_KEYS:
        raise SpecError("search.kind", kind, "unknown search kind",
                        f"use one of: {', '.join(SEARCH_KEYS)}")
    allowed = SEARCH_KEYS[kind] | {"kind"}
    for key, value in raw.items():
        if key not in allowed:
            owners = [k for k, keys in SEARCH_KEYS.items() if key in keys]
            raise SpecError(f"search.{key}", value,
                            f"only kind: {owners[0]} uses it" if owners else "unknown option",
                            f"use kind: {owners[0]}, or remove search.{key}" if owners else
                            f"use one of: {', '.join(sorted(allowed))}")
    options: dict[str, Any] = {"kind": kind}

    def positive_int(key: str, example: str, words: tuple[str, ...] = ()) -> None:
        value = raw.get(key)
        if value is None:
            return
        if value in words:
            options[key] = value
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            also = f" or {' / '.join(words)}" if words else ""
            raise SpecError(f"search.{key}", value, f"must be a positive integer{also}",
                            f"search: {{{key}: {example}}}")
        options[key] = value

    positive_int("n_iter", "20")
    positive_int("n_candidates", "30", ("exhaust",))
    positive_int("min_resources", "50" if kind == "halving" else "1",
                 ("exhaust", "smallest") if kind == "halving" else ("smallest",))
    positive_int("max_resources", "768", ("auto",))
    if "factor" in raw and "aggressiveness" in raw:
        raise SpecError("search.aggressiveness", raw["aggressiveness"], "is another name "
                        "for factor (dask-ml's), and factor is given too", "give only factor")
    name = "aggressiveness" if "aggressiveness" in raw else "factor"
    factor = raw.get(name, 3)
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor <= 1:
        raise SpecError(f"search.{name}", factor, "must be a number above 1",
                        f"search: {{{name}: 3}} keeps the best third of each rung")
    options["factor"] = factor
    aggressive = raw.get("aggressive_elimination", False)  # (halving only)
    if not isinstance(aggressive, bool):
        raise SpecError("search.aggressive_elimination", aggressive, "must be true or false",
                        "search: {aggressive_elimination: true}")
    options["aggressive_elimination"] = aggressive
    resource = raw.get("resource", "epochs" if kind == "hyperband" else "n_samples")
    if not isinstance(resource, str) or not resource:
        raise SpecError("search.resource", resource, "must be n_samples or a parameter name",
                        "search: {resource: epochs}")
    options["resource"] = resource
    if kind in HALVING_KINDS and resource in fit and options.get("max_resources",
                                                                  "auto") == "auto":
        options["max_resources"] = fit[resource]  # e.g. epochs: as many as fit.epochs
    if options.get("n_candidates") == "exhaust" and options.get("min_resources") == "exhaust":
        raise SpecError("search.n_candidates", "exhaust", "n_candidates and min_resources "
                        "cannot both be exhaust", "give n_candidates a number, e.g. 30")
    return SearchOptions(**options)


def _check_resource(spec: Spec) -> None:
    """A halving resource other than rows must be a parameter the estimator has,
    and not one the grid varies; its bounds must be ordered."""
    options = spec.search
    if options.kind not in HALVING_KINDS or options.resource == "n_samples":
        return
    from ..search.build import estimator_params

    if options.resource not in estimator_params(spec.model, spec.fit):
        raise SpecError("search.resource", options.resource,
                        "not a parameter of the estimator",
                        "use n_samples, or a fit setting such as epochs")
    if options.max_resources == "auto":
        raise SpecError("search.max_resources", "auto",
                        f"the largest {options.resource} is not known",
                        f"give it, e.g. search: {{resource: {options.resource}, "
                        "max_resources: 100}")
    for grid in spec.param_grid:
        if options.resource in grid:
            raise SpecError(f"param_grid.{options.resource}", grid[options.resource],
                            "the halving resource cannot also be searched",
                            f"remove {options.resource} from param_grid (the search sets it)")
    low, high = options.min_resources, options.max_resources
    if isinstance(low, int) and isinstance(high, int) and low > high:
        raise SpecError("search.min_resources", low, f"above max_resources ({high})",
                        f"give min_resources at most {high}")


def _check_grid(grid: Any, search: SearchOptions | None = None) -> list[dict[str, Any]]:
    if grid is None:
        raise SpecError("param_grid", None, "a sweep needs a parameter grid",
                        "param_grid: {model__neurons: [4, 8, 16]}")
    # copies: the caller's mappings (e.g. --set or API overrides) stay as given
    grids = [dict(g) if isinstance(g, dict) else g
             for g in (grid if isinstance(grid, list) else [grid])]
    if not grids:
        raise SpecError("param_grid", grid, "the grid is empty",
                        "param_grid: {model__neurons: [4, 8, 16]}")
    for sub in grids:
        if not isinstance(sub, dict) or not sub:
            raise SpecError("param_grid", sub, "each grid must be a non-empty mapping",
                            "param_grid: {model__neurons: [4, 8, 16]}")
        for key, values in sub.items():
            if looks_like(values):
                if search is None or search.kind == "grid":
                    raise SpecError(f"param_grid.{key}", values,
                                    "a distribution needs a random or halving search",
                                    "add search: {kind: random, n_iter: 20}, or list the "
                                    "values")
                sub[key] = parse(f"param_grid.{key}", values)
            elif not isinstance(values, list) or not values:
                raise SpecError(f"param_grid.{key}", values, "must be a non-empty list",
                                f"param_grid: {{{key}: [value1, value2]}}" + (
                                    " or a distribution such as loguniform(1e-4, 1e-1)"
                                    if search is not None and search.kind != "grid" else ""))
    return [dict(g) for g in grids]


def _check_tracking(value: dict[str, Any] | None) -> TrackingConfig | None:
    """``tracking: {mlflow: URI, experiment: NAME}``; MLflow must be installed."""
    if not value:
        return None
    unknown = set(value) - {"mlflow", "experiment"}
    if unknown:
        raise SpecError(f"tracking.{sorted(unknown)[0]}", value[sorted(unknown)[0]],
                        "not a tracking option", "write tracking: {mlflow: URI, "
                        "experiment: NAME}")
    uri = value.get("mlflow")
    if not isinstance(uri, str) or "://" not in uri and not uri.startswith(
            ("file:", "sqlite:", "databricks")):
        raise SpecError("tracking.mlflow", uri, "not an MLflow tracking URI",
                        "give the server's address, e.g. http://127.0.0.1:5000")
    experiment = value.get("experiment", "sweep")
    if not isinstance(experiment, str) or not experiment.strip():
        raise SpecError("tracking.experiment", experiment, "not an experiment name",
                        "write e.g. experiment: pima-grid")
    check_installed()
    return TrackingConfig(uri, experiment)


def _check_scoring(scoring: str | list[str], refit: bool | str, search: SearchOptions) -> None:
    """Scorer names scikit-learn knows; with several, ``refit`` names one or is a bool."""
    from sklearn.metrics import get_scorer_names

    names = [scoring] if isinstance(scoring, str) else scoring
    if not names:
        raise SpecError("scoring", scoring, "no scorer given",
                        "give one name (scoring: accuracy) or several (scoring: [accuracy, f1])")
    for name in names:
        if not isinstance(name, str) or name not in get_scorer_names():
            raise SpecError("scoring", name, "not a scikit-learn scorer",
                            "use e.g. accuracy, roc_auc, f1, neg_mean_squared_error, r2")
    if len(set(names)) < len(names):
        raise SpecError("scoring", scoring, "a scorer is listed twice", "list each once")
    if isinstance(refit, str):
        if isinstance(scoring, str) or refit not in names:
            raise SpecError("refit", refit, "not one of the scorers" if not isinstance(
                scoring, str) else "a scorer name needs several scorers",
                            f"use refit: {names[0]} with scoring: {names}, or refit: true"
                            if not isinstance(scoring, str) else "use refit: true")
    if isinstance(scoring, list) and search.kind in HALVING_KINDS:
        raise SpecError("scoring", scoring, "successive halving ranks by one scorer only "
                        "(scikit-learn)", f"use scoring: {names[0]} with search: "
                        f"{{kind: {search.kind}}}, or kind: grid / random")


def _check_cluster(cluster: dict[str, Any]) -> dict[str, Any]:
    """The ``cluster:`` section: known backend, its own keys, values each backend checks."""
    backend = cluster.get("backend", "local")
    allowed = clusters.COMMON_KEYS | clusters.options(backend)
    for key in cluster:
        owners = clusters.owners(key)
        if key not in allowed and owners:
            raise SpecError(f"cluster.{key}", cluster[key],
                            f"only the {' and '.join(repr(o) for o in owners)} backend uses it",
                            f"use backend: {owners[0]}, or remove cluster.{key}")
    _unknown("cluster", cluster, allowed)
    for key, value in cluster.items():
        if key in ("workers", "threads_per_worker", "recycle_after_fits") and value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpecError(f"cluster.{key}", value, "must be a positive integer",
                                f"cluster: {{{key}: 2}}")
    if cluster.get("tls") is not None and not isinstance(cluster["tls"], bool):
        raise SpecError("cluster.tls", cluster["tls"], "must be true or false",
                        "leave it out (TLS on); tls: false only on an isolated network")
    from ..config import resolve

    try:  # every setting's converter, and the backend's options over sweep.<backend>.*
        settings = resolve(**cluster)
    except SpecError as exc:
        if exc.field not in cluster:
            raise  # a bad value in the Dask config: named by its key
        raise SpecError(f"cluster.{exc.field}", exc.value, exc.problem,
                        f"cluster: {{{exc.field}: {exc.example}}}, or leave it out") from None
    clusters.check(settings)
    return dict(cluster)


def load_profile(path: str | Path) -> dict[str, Any]:
    """Read and validate a cluster profile (such as ``cluster/ssh.yaml``)."""
    profile = read_profile(path)
    _check_cluster(profile)
    return profile


def _non_negative(field: str, value: int | None) -> int | None:
    if value is not None and value < 0:
        raise SpecError(field, value, "must be 0 or more", f"{field}: 2")
    return value


def _error_score(value: Any) -> float | str:
    if value == "raise":
        return "raise"
    try:
        return float(value)
    except (TypeError, ValueError):
        raise SpecError("error_score", value, "must be nan, a number or raise",
                        "error_score: nan") from None


def _check_grid_keys(spec: Spec) -> None:
    """Each grid key must be a parameter the estimator, builder or optimizer accepts."""
    from ..search.build import estimator_params
    from .models import builder_arguments, import_builder

    builder = import_builder(spec.model["builder"])
    accepted, takes_kwargs = builder_arguments(builder)
    params = estimator_params(spec.model, spec.fit)
    for grid in spec.param_grid:
        for key in list(grid):
            new = _resolve_key(key, params, accepted, takes_kwargs, spec.model["builder"])
            if new != key:
                grid[new] = grid.pop(key)
                spec.aliases[key] = new
    for key, value in spec.model["params"].items():
        if key not in accepted and not takes_kwargs:
            raise SpecError(f"model.params.{key}", value,
                            f"the builder {spec.model['builder']!r} has no argument {key!r}",
                            f"use one of: {', '.join(sorted(accepted))}")


def _resolve_key(key: str, params: set[str], accepted: set[str], takes_kwargs: bool,
                 builder: str) -> str:
    if key in REMOVED:
        rename_grid_key(key)  # raises with the new name
    if key.startswith("model__"):
        arg = key[len("model__"):]
        if arg in accepted or takes_kwargs:
            return key
        names = ", ".join("model__" + a for a in sorted(accepted))
        raise SpecError(f"param_grid.{key}", arg,
                        f"the builder {builder!r} has no argument {arg!r}",
                        f"use one of: {names}")
    if key in params or key.startswith(ROUTING_PREFIXES):
        return key
    if key in accepted:
        return f"model__{key}"
    renamed = rename_grid_key(key)
    if renamed is not None:
        return _resolve_key(renamed, params, accepted, takes_kwargs, builder)
    if key in OPTIMIZER_ALIASES:
        return f"optimizer__{key}"
    raise SpecError(f"param_grid.{key}", key, "not a parameter of the estimator",
                    "use a builder argument as model__NAME "
                    f"({', '.join('model__' + a for a in sorted(accepted))}), an optimizer "
                    "setting as optimizer__NAME, or one of: " + ", ".join(sorted(
                        p for p in params if "__" not in p and not p.startswith("model"))))


def rename_grid_key(key: str) -> str | None:
    """The current name of a recipe-era grid key, or None if it is not one."""
    if key in REMOVED:
        raise SpecError(f"param_grid.{key}", key, "this Keras 2 name no longer exists",
                        f"use {REMOVED[key]}")
    return GRID_KEYS.get(key)
