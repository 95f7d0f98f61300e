"""A recipe's ``[search]`` section: the search space, the folds and the device limits, and how
one Optuna trial's suggestions become a concrete recipe that ``tinyad build`` takes.

The space is a table of knobs; each value is a list of choices (``width = [8, 16, 32]``), a range
(``learning_rate = { low = 1e-4, high = 1e-2, log = true }``; integers when both ends are), or one
fixed value. Knobs, and the recipe keys they set:

- ``depth``, ``width``: ``[detector] hidden`` = ``depth`` layers, each width chosen from ``width``
  (``width_0``, ``width_1``, ... in the study); ``classifier_depth`` / ``classifier_width`` the
  same for ``[detector] classifier`` (vae_dnn);
- ``latent``, ``activation``, ``dropout``, ``learning_rate``, ``batch_size``, ``beta``, ``window``,
  ``lstm_units``, ``conv_filters``: the ``[detector]`` key of that name;
- ``epochs``: ``[detector] epochs`` and ``classifier_epochs``;
- ``top_k``: ``[features] top_k`` (0 = every feature);
- ``threshold``: ``[threshold] method`` (``"f1"`` or ``"percentile"``);
- ``representative_rows``, ``synthetic_share``, ``per_channel``, ``calibrate_on``: the ``[quantize]``
  key of that name (how the int8 ranges are calibrated: what decides whether a trial passes the
  agreement gate).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from firmware_host.errors import RecipeError

# knob -> the (section, key) pairs it sets
DIRECT = {"latent": [("detector", "latent")], "activation": [("detector", "activation")],
          "dropout": [("detector", "dropout")], "learning_rate": [("detector", "learning_rate")],
          "batch_size": [("detector", "batch_size")], "beta": [("detector", "beta")],
          "window": [("detector", "window")], "lstm_units": [("detector", "lstm_units")],
          "conv_filters": [("detector", "conv_filters")],
          "epochs": [("detector", "epochs"), ("detector", "classifier_epochs")],
          "top_k": [("features", "top_k")], "threshold": [("threshold", "method")],
          "representative_rows": [("quantize", "representative_rows")],
          "synthetic_share": [("quantize", "synthetic_share")], "per_channel": [("quantize", "per_channel")],
          "calibrate_on": [("quantize", "calibrate_on")]}
STACKS = {"hidden": ("depth", "width"), "classifier": ("classifier_depth", "classifier_width")}
KNOBS = tuple(DIRECT) + tuple(k for pair in STACKS.values() for k in pair)
# The activations whose int8 conversion keeps every op integer (TF 2.21): not elu, gelu or swish.
QUANTIZING_ACTIVATIONS = ("relu", "relu6", "leaky_relu", "tanh", "sigmoid")

# The space a recipe without its own [search.space] gets, by detector kind.
_DENSE = {"depth": [1, 2, 3], "width": [8, 16, 32, 64], "latent": [2, 4, 8],
          "activation": list(QUANTIZING_ACTIVATIONS), "dropout": {"low": 0.0, "high": 0.3},
          "learning_rate": {"low": 3e-4, "high": 1e-2, "log": True}, "epochs": [5, 10, 20],
          "batch_size": [64, 128, 256], "top_k": [5, 10, 15, 0], "threshold": ["f1", "percentile"],
          "representative_rows": [300, 1000, 3000], "calibrate_on": ["train", "train_validation"]}
DEFAULT_SPACES = {"vae_dnn": {**_DENSE, "classifier_depth": [1, 2], "classifier_width": [8, 16, 32]},
                  "ae": _DENSE,
                  "temporal": {"window": [8, 16, 32], "lstm_units": [8, 16, 32], "epochs": [5, 10, 20],
                               "learning_rate": {"low": 3e-4, "high": 1e-2, "log": True},
                               "batch_size": [64, 128], "threshold": ["f1", "percentile"]}}


@dataclass
class SearchSpec:
    """``[search]``: what ``tinyad search`` varies, how it scores a trial, and the device limits."""

    folds: int = 3                       # validation folds over the train + validation rows (never test)
    fold_method: str = "auto"            # "stratified", "blocked", "forward", or "auto": stratified
                                         # for a random or files split, forward-chaining for any other
    metric: str = "auto"                 # "f1", "roc_auc", or "auto": f1 for vae_dnn, roc_auc otherwise
    max_bytes: int = 65536               # hard limit: int8 .tflite file bytes
    max_p50_us: float = 10.0             # hard limit: int8 single-row invoke p50, microseconds
    latency_invokes: int = 300           # invokes timed per trial for the p50
    random_trials: int = 8               # trials sampled at random before TPE models the space
    space: dict = field(default_factory=dict)   # knob -> choices, range or value; {} = the kind's default

    def knobs(self, kind: str) -> dict:
        """The space to search for detector ``kind``: the recipe's, else the default one."""
        from ..recipe import TEMPORAL

        return self.space or DEFAULT_SPACES["temporal" if kind in TEMPORAL else kind]


_CHOICES = {"fold_method": ("auto", "stratified", "blocked", "forward"), "metric": ("auto", "f1", "roc_auc")}


def parse_search(table, path: Path) -> SearchSpec:
    """Check a recipe's ``[search]`` table (unknown keys and malformed knobs are errors)."""
    if not isinstance(table, dict):
        raise RecipeError(f"{path}: [search] must be a table")
    known = {f.name for f in dataclasses.fields(SearchSpec)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise RecipeError(f"{path}: unknown key(s) in [search]: {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    spec = SearchSpec(**table)
    for key, allowed in _CHOICES.items():
        if getattr(spec, key) not in allowed:
            raise RecipeError(f"{path}: [search] {key} = {getattr(spec, key)!r}; choose one of {', '.join(allowed)}")
    if not isinstance(spec.folds, int) or spec.folds < 2:
        raise RecipeError(f"{path}: [search] folds = {spec.folds!r}; at least 2")
    if spec.max_bytes <= 0 or spec.max_p50_us <= 0 or spec.latency_invokes < 10:
        raise RecipeError(f"{path}: [search] max_bytes and max_p50_us must be positive, latency_invokes at least 10")
    if not isinstance(spec.space, dict):
        raise RecipeError(f"{path}: [search.space] must be a table of knobs")
    for name, value in spec.space.items():
        _check_knob(path, name, value)
    return spec


def _check_knob(path: Path, name: str, value) -> None:
    where = f"{path}: [search.space] {name}"
    if name not in KNOBS:
        raise RecipeError(f"{where}: not a knob; known: {', '.join(sorted(KNOBS))}")
    if isinstance(value, list):
        if not value or any(isinstance(v, (list, dict)) for v in value):
            raise RecipeError(f"{where}: a list of choices must hold at least one plain value")
    elif isinstance(value, dict):
        if set(value) - {"low", "high", "log", "step"} or not {"low", "high"} <= set(value):
            raise RecipeError(f"{where}: a range is {{ low = ..., high = ... }} with optional log and step")
        if not value["low"] <= value["high"] or (value.get("log") and value["low"] <= 0):
            raise RecipeError(f"{where}: needs low <= high (and low > 0 with log = true)")


# -- one trial's suggestions -------------------------------------------------------------------

def _suggest(trial, name: str, value):
    """One knob's value from an Optuna trial (a fixed value is returned as it is)."""
    if isinstance(value, list):
        return value[0] if len(value) == 1 else trial.suggest_categorical(name, value)
    if isinstance(value, dict):
        low, high, log = value["low"], value["high"], bool(value.get("log", False))
        if isinstance(low, int) and isinstance(high, int) and not isinstance(value.get("step", 1), float):
            return trial.suggest_int(name, low, high, step=int(value.get("step", 1)), log=log)
        return trial.suggest_float(name, float(low), float(high), log=log,
                                   step=value.get("step") if not log else None)
    return value


def _stack(trial, space: dict, depth_knob: str, width_knob: str, current: list) -> list | None:
    """Layer widths from the depth and width knobs (None when neither is searched)."""
    if depth_knob not in space and width_knob not in space:
        return None
    depth = int(_suggest(trial, depth_knob, space[depth_knob])) if depth_knob in space else len(current)
    widths = []
    for i in range(depth):
        fallback = current[min(i, len(current) - 1)] if current else 16
        widths.append(int(_suggest(trial, f"{width_knob}_{i}", space[width_knob])) if width_knob in space
                      else fallback)
    return widths


def suggest(trial, space: dict, raw: dict) -> dict:
    """The recipe overrides ``{(section, key): value}`` of one trial. ``raw``: the recipe's TOML
    table (its current widths fill in what the space does not search)."""
    detector = raw.get("detector", {})
    overrides = {}
    for name, value in space.items():
        if name in DIRECT:
            chosen = _suggest(trial, name, value)
            for section, key in DIRECT[name]:
                overrides[(section, key)] = chosen
    for key, (depth_knob, width_knob) in STACKS.items():
        default = {"hidden": [32, 16], "classifier": [32, 16]}[key]
        widths = _stack(trial, space, depth_knob, width_knob, list(detector.get(key, default)))
        if widths is not None:
            overrides[("detector", key)] = widths
    return overrides


def apply(raw: dict, overrides: dict) -> dict:
    """A copy of the recipe table with ``overrides`` set and no ``[search]`` (a plain build recipe)."""
    result = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items() if k != "search"}
    for (section, key), value in overrides.items():
        result.setdefault(section, {})[key] = value
    return result


# -- writing a recipe back -----------------------------------------------------------------------

def _toml_value(value) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value)         # a TOML basic string: JSON's escapes are TOML's
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise RecipeError(f"cannot write {value!r} ({type(value).__name__}) to a recipe")


def _toml_key(key: str) -> str:
    import re

    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_value(key)


def recipe_toml(raw: dict, header: str = "") -> str:
    """A recipe table as TOML text: top-level keys, then one ``[section]`` per table."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in raw.items() if not isinstance(v, dict)]
    for section, values in raw.items():
        if isinstance(values, dict):
            lines += ["", f"[{_toml_key(section)}]"]
            lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"
