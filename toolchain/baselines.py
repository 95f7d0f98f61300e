"""Classical baselines scored on the same split and features as the deep detector."""

from __future__ import annotations

from . import metrics
from .prepare import Prepared
from .recipe import Recipe
from .train import TrainResult, calibrate_threshold, scaled
from .verify import per_class


def isolation_forest(prep: Prepared, trained: TrainResult, recipe: Recipe) -> dict:
    """IsolationForest fitted on the normal training rows (scaled, selected features)."""
    from sklearn.ensemble import IsolationForest

    x_train = scaled(prep, trained.features, trained.scaler, "train")
    normal = ~prep.is_attack[prep.parts["train"]]
    forest = IsolationForest(n_estimators=200, random_state=recipe.seed, n_jobs=2).fit(x_train[normal])
    parts = {}
    for part in ("validation", "test"):
        parts[part] = -forest.score_samples(scaled(prep, trained.features, trained.scaler, part))
    val_attack = prep.is_attack[prep.parts["validation"]]
    threshold = calibrate_threshold(recipe.threshold, val_attack, parts["validation"])
    result = metrics.detection_metrics(prep.is_attack[prep.parts["test"]], parts["test"], parts["test"] > threshold)
    if len(set(prep.dataset.classes.tolist())) > 2:
        result["per_class"] = per_class(prep, "test", parts["test"])
    return result


def unsupervised(prep: Prepared, trained: TrainResult, recipe: Recipe) -> dict:
    return {"isolation_forest": isolation_forest(prep, trained, recipe)}
