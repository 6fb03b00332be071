"""Build the scikit-learn search a spec describes (estimator + ``GridSearchCV``)."""

from __future__ import annotations

from typing import Any

from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold

from .models import default_loss, import_builder, make_estimator
from .spec import Spec


def build_estimator(spec: Spec, task: str = "classification", n_classes: int = 2) -> Any:
    """The scikeras estimator of ``spec`` for a dataset of the given task."""
    model = spec.model
    task = model.get("task") or task
    loss = model.get("loss") or default_loss(task, n_classes)
    return make_estimator(
        task,
        import_builder(model["builder"]),
        loss=loss,
        optimizer=model["optimizer"],
        builder_params=model["params"],
        fit_params=spec.fit,
        extra={f"optimizer__{k}": v for k, v in model["optimizer_params"].items()},
    )


def estimator_params(spec: Spec) -> set[str]:
    """Names ``set_params`` accepts on the spec's estimator."""
    return set(build_estimator(spec).get_params(deep=False))


def build_search(spec: Spec, task: str, n_classes: int) -> GridSearchCV:
    """An unchanged scikit-learn ``GridSearchCV`` with ``n_jobs=-1`` (every worker)."""
    seed = spec.seed if spec.seed is not None else 0
    splitter = (KFold if task == "regression" else StratifiedKFold)(
        n_splits=spec.cv, shuffle=True, random_state=seed
    )
    return GridSearchCV(
        build_estimator(spec, task, n_classes),
        spec.param_grid if len(spec.param_grid) > 1 else spec.param_grid[0],
        cv=splitter,
        scoring=spec.scoring,
        n_jobs=-1,
        refit=False,  # the runner refits on a worker (sweep.refit)
        error_score=spec.error_score,
        return_train_score=False,
    )
