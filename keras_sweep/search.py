"""Build the scikit-learn search a spec describes, from its sections.

Takes plain sections (``model:``, ``fit:``, ``param_grid:``, ...), not a
:class:`~sweep.spec.Spec`, so spec validation can ask it which parameters the
estimator accepts without an import circle.
"""

from __future__ import annotations

from typing import Any

from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold

from .models import default_loss, import_builder, make_estimator


def build_estimator(model: dict[str, Any], fit: dict[str, Any],
                    task: str = "classification", n_classes: int = 2) -> Any:
    """The scikeras estimator of a spec's ``model:`` and ``fit:`` sections."""
    task = model.get("task") or task
    loss = model.get("loss") or default_loss(task, n_classes)
    return make_estimator(
        task,
        import_builder(model["builder"]),
        loss=loss,
        optimizer=model["optimizer"],
        builder_params=model["params"],
        fit_params=fit,
        extra={f"optimizer__{k}": v for k, v in model["optimizer_params"].items()},
    )


def estimator_params(model: dict[str, Any], fit: dict[str, Any]) -> set[str]:
    """Names ``set_params`` accepts on the estimator of these sections."""
    return set(build_estimator(model, fit).get_params(deep=False))


def build_search(model: dict[str, Any], fit: dict[str, Any],
                 param_grid: list[dict[str, list[Any]]], *, cv: int, scoring: str,
                 seed: int | None, error_score: float | str, task: str,
                 n_classes: int) -> GridSearchCV:
    """An unchanged scikit-learn ``GridSearchCV`` with ``n_jobs=-1`` (every worker).

    The folds are shuffled with ``seed`` (0 if None), stratified for
    classification; the refit is left to the runner, which runs it on a worker.
    """
    splitter = (KFold if task == "regression" else StratifiedKFold)(
        n_splits=cv, shuffle=True, random_state=seed if seed is not None else 0)
    return GridSearchCV(
        build_estimator(model, fit, task, n_classes),
        param_grid if len(param_grid) > 1 else param_grid[0],
        cv=splitter,
        scoring=scoring,
        n_jobs=-1,
        refit=False,  # the runner refits on a worker (sweep.refit)
        error_score=error_score,
        return_train_score=False,
    )
