"""XGBoost feature ranking (gain importance), the leakage check, and the plain XGBoost baseline."""

from __future__ import annotations

import numpy as np

from . import metrics
from .prepare import Prepared


def _xgb(n_classes: int, rounds: int, seed: int):
    import xgboost as xgb

    objective = "multi:softprob" if n_classes > 2 else "binary:logistic"
    return xgb.XGBClassifier(n_estimators=rounds, max_depth=6, learning_rate=0.1, tree_method="hist",
                             objective=objective, random_state=seed, n_jobs=2, verbosity=0)


def _target(prep: Prepared, part: str) -> np.ndarray:
    return prep.class_index[prep.parts[part]]


def rank_features(prep: Prepared, rounds: int, seed: int) -> list[dict]:
    """Every candidate feature with its total gain on the training split, best first."""
    names = list(prep.dataset.features.columns)
    model = _xgb(len(prep.class_names), rounds, seed)
    model.fit(prep.raw("train", names), _target(prep, "train"))
    gains = model.get_booster().get_score(importance_type="total_gain")
    total = sum(gains.values()) or 1.0
    table = [{"feature": name, "gain": float(gains.get(f"f{i}", 0.0)),
              "share": float(gains.get(f"f{i}", 0.0) / total)} for i, name in enumerate(names)]
    table.sort(key=lambda row: -row["gain"])
    for rank, row in enumerate(table, 1):
        row["rank"] = rank
    return table


def xgb_baseline(prep: Prepared, features: list[str], rounds: int, seed: int) -> dict:
    """A plain XGBoost classifier on the same split and features: the bar a deep detector must meet."""
    model = _xgb(len(prep.class_names), rounds, seed)
    model.fit(prep.raw("train", features), _target(prep, "train"))
    result = {}
    for part in ("validation", "test"):
        proba = model.predict_proba(prep.raw(part, features))
        score = 1.0 - proba[:, 0]
        result[part] = metrics.detection_metrics(prep.is_attack[prep.parts[part]], score, score > 0.5)
    return result


def leakage_check(prep: Prepared, rounds: int, seed: int) -> dict | None:
    """How well the identifier columns alone (addresses, switch, timestamp) predict the label.

    High accuracy here means those columns encode the testbed, not the traffic, so they stay
    out of the features."""
    ids = prep.dataset.identifiers
    if ids is None or ids.shape[1] == 0:
        return None
    values = ids.to_numpy(dtype=np.float64)
    model = _xgb(len(prep.class_names), rounds, seed)
    model.fit(values[prep.parts["train"]], _target(prep, "train"))
    result = {"columns": list(ids.columns)}
    for part in ("validation", "test"):
        idx = prep.parts[part]
        proba = model.predict_proba(values[idx])
        score = 1.0 - proba[:, 0]
        m = metrics.detection_metrics(prep.is_attack[idx], score, score > 0.5)
        result[part] = {"accuracy": m["accuracy"], "f1": m["f1"], "roc_auc": m["roc_auc"]}
    return result
