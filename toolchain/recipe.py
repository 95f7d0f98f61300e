"""Build recipes: one TOML file per detector, loaded into typed dataclasses.

Every hyper-parameter of a build lives in its recipe; CLI flags override a few.
Unknown keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

from firmware_host.errors import RecipeError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


TEMPORAL = ("lstm", "ae_lstm", "cnn_lstm_attn")


@dataclass
class DataSpec:
    loader: str
    path: str | list[str]
    label: str | None = None
    target: str | None = None
    normal: str | None = None
    time_column: str | None = None
    exclude: list[str] = field(default_factory=list)
    max_rows: int | None = None          # cap after loading (stratified, seeded) for quick builds
    relative_to: str = "data_root"       # "data_root" (--data-root / $TINYAD_DATA) or "recipe" (the TOML's folder)
    per_series: bool = False             # path is a glob (or list) of series: one bundle per series + a summary


@dataclass
class SplitSpec:
    method: str = "random"               # "random" (stratified), "time" (earlier rows train), "probation"
                                         # (label-free: train+validation from NAB's probationary period), "prefix"
                                         # (label-peeking: the normal rows before the first anomaly),
                                         # or "blocks" (contiguous time blocks dealt to the parts),
                                         # or "files" (test = every row of test_path; train/validation from path)
    train: float = 0.6
    validation: float = 0.2
    test: float = 0.2
    also_report: list[str] = field(default_factory=list)   # other split methods measured in the report
    blocks: int = 20                     # "blocks": contiguous time blocks dealt to the parts
    probation: float = 0.15              # "probation": share of the series in NAB's probationary period
    probation_cap: int = 750             # "probation": at most this many rows (NAB: 15 % of 5,000); 0 = no cap
    test_path: str = ""                  # "files": the data set's own test file, read like [data] path


@dataclass
class FeatureSpec:
    top_k: int = 10                      # 0 keeps every feature
    sweep: list[int] = field(default_factory=lambda: [5, 10, 15, 0])
    sweep_epochs: int = 5
    xgb_rounds: int = 100


@dataclass
class PreprocessSpec:
    log1p: str = "auto"                  # "auto" (heavy-tailed features), "all" or "none"
    clip: float = 6.0


@dataclass
class DetectorSpec:
    kind: str = "ae"                     # "ae", "vae_dnn", or temporal: "lstm", "ae_lstm", "cnn_lstm_attn"
    hidden: list[int] = field(default_factory=lambda: [32, 16])
    latent: int = 4
    classifier: list[int] = field(default_factory=lambda: [32, 16])
    activation: str = "relu6"           # bounded: keeps int8 activation ranges narrow
    classes: str = "binary"              # vae_dnn: "binary" or "multi"
    train_on: str = "normal"             # ae: "normal" (benign rows only) or "all"
    epochs: int = 20
    classifier_epochs: int = 20
    batch_size: int = 256
    learning_rate: float = 1e-3
    beta: float = 1.0                    # vae: weight of the KL term
    fine_tune_encoder: bool = True       # vae_dnn: let the classifier's loss also adjust the encoder
    dropout: float = 0.0
    train_noise: float = 0.0             # ae: std of Gaussian noise added after each hidden activation while
                                         # training only (not in the deployed model): a decoder that tolerates it
                                         # tolerates int8 rounding, so int8 and float verdicts agree
    window: int = 32                     # temporal: samples per model input, the current one included
    lstm_units: int = 16                 # temporal: LSTM width (the AE-LSTM paper uses 64)
    conv_filters: int = 16               # cnn_lstm_attn: Conv1D filters
    kernel_size: int = 3                 # cnn_lstm_attn: Conv1D kernel width
    mode: str = "auto"                   # cnn_lstm_attn: "classifier", "forecaster", or "auto" (labels -> classifier)


@dataclass
class TrainSpec:
    """Distillation (toolchain/distill.py): the supervised network learns from an XGBoost teacher
    fitted on the training rows as well as from the labels."""
    teacher: str = "none"                # "none" or "xgboost"
    teacher_weight: float | list = 0.5   # alpha: target = alpha * teacher + (1 - alpha) * one-hot label;
                                         # a list: each is trained, the best validation F1 kept
    augment: str = "none"                # "none" or "mixup": interpolated rows labelled by the teacher
    augment_rows: int | list = 0         # how many (a list: chosen on validation like teacher_weight)


@dataclass
class ThresholdSpec:
    method: str = "f1"                   # "f1" (best F1 on validation) or "percentile" (of normal scores)
    percentile: float = 99.0


@dataclass
class QuantizeSpec:
    representative_rows: int = 500
    representative_source: str = "train"   # "train" (all classes) or "normal"
    calibrate_on: str = "train"          # rows calibration samples from: "train", or "train_validation" (later
                                         # traffic on a time split; inputs only, no label is read for "train")
    synthetic_share: float = 0.0         # share of representative rows replaced by synthetic anomalies
    per_channel: bool = True
    golden_rows: int = 32
    unroll_lstm: bool = False            # convert LSTM layers step by step (int8 FULLY_CONNECTED, LOGISTIC, TANH...)
                                         # with a free batch: run stacks windows into one invoke (~10x faster
                                         # per window here), the model ~15x larger than the fused LSTM op's


@dataclass
class VerifySpec:
    """The gates an int8 model must pass against its float twin (toolchain/gates.py)."""

    max_f1_drop: float = 0.005
    gate: str = "f1"                     # "f1", or "windows": int8 must detect as many labelled windows as float
                                         # and raise no more false alarms than the two bounds below allow
    min_agreement: float = 0.995         # share of held-out rows where int8 and float verdicts agree (every split)
    false_alarm_tolerance: float = 0.25  # windows gate: int8 false alarms / 1,000 rows <= float's * (1 + this)
    false_alarm_slack: float = 1.0       # ... + this many per 1,000 rows
    max_unit_score_gap: float = 0.05     # mean |int8 - float| of the [0, 1] score, where the bundle has one
    remedies: bool = True                # try the quantization remedies (pipeline) when a gate fails


@dataclass
class AdaptiveSpec:
    """Run-side adaptive scoring (``firmware_host/adaptive.py``): HTM's likelihood history, learning
    period and spatial tolerance; ``short``, ``quiet`` and the window channels chosen on the NAB corpus."""
    enabled: bool = False                # false: verdicts from the static threshold, no unit score
    history: int = 8640                  # rows of raw-score history the reference distribution spans
    short: int = 1                       # rows averaged into the current level
    min_history: int = 388               # rows of history before any unit score above 0 (capped by the
                                         # train + validation rows, so scoring starts after them)
    std_floor: float = 0.05              # least standard deviation of the reference, in level units
    threshold: float = 0.5               # unit score at or above which a row is anomalous (q <= 1e-5)
    spatial_tolerance: float = 0.05      # a sample beyond the history's range by this share of it: 1.0
    quiet: int = 20                      # a score counts only above every score of this many rows before
    window_channels: bool = True         # temporal bundles: also score the step from the previous sample
                                         # and the distance from the window's mean (int8 inputs)


@dataclass
class Recipe:
    name: str
    data: DataSpec
    description: str = ""
    seed: int = 42
    split: SplitSpec = field(default_factory=SplitSpec)
    features: FeatureSpec = field(default_factory=FeatureSpec)
    preprocess: PreprocessSpec = field(default_factory=PreprocessSpec)
    detector: DetectorSpec = field(default_factory=DetectorSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    threshold: ThresholdSpec = field(default_factory=ThresholdSpec)
    quantize: QuantizeSpec = field(default_factory=QuantizeSpec)
    verify: VerifySpec = field(default_factory=VerifySpec)
    adaptive: AdaptiveSpec = field(default_factory=AdaptiveSpec)
    path: str = ""
    search: object = None                # [search] (toolchain/search/space.py SearchSpec): tinyad search only;
                                         # a build ignores it, and it stays out of to_dict (reports, manifest)

    def to_dict(self) -> dict:
        found = dataclasses.asdict(self)
        found.pop("search")
        return found


_SECTIONS = {"data": DataSpec, "split": SplitSpec, "features": FeatureSpec, "preprocess": PreprocessSpec,
             "detector": DetectorSpec, "train": TrainSpec, "threshold": ThresholdSpec, "quantize": QuantizeSpec,
             "verify": VerifySpec, "adaptive": AdaptiveSpec}
_CHOICES = {("split", "method"): ("random", "time", "probation", "prefix", "blocks", "files"),
            ("train", "teacher"): ("none", "xgboost"), ("train", "augment"): ("none", "mixup"),
            ("detector", "kind"): ("ae", "vae_dnn", "lstm", "ae_lstm", "cnn_lstm_attn"),
            ("detector", "mode"): ("auto", "classifier", "forecaster"), ("verify", "gate"): ("f1", "windows"),
            ("detector", "classes"): ("binary", "multi"), ("detector", "train_on"): ("normal", "all"),
            ("threshold", "method"): ("f1", "percentile"), ("preprocess", "log1p"): ("auto", "all", "none"),
            ("quantize", "representative_source"): ("train", "normal"),
            ("quantize", "calibrate_on"): ("train", "train_validation"),
            ("data", "relative_to"): ("data_root", "recipe")}


def _section(path: Path, name: str, cls, values) -> object:
    if not isinstance(values, dict):
        raise RecipeError(f"{path}: [{name}] must be a table")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise RecipeError(f"{path}: unknown key(s) in [{name}]: {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    try:
        section = cls(**values)
    except TypeError as exc:
        raise RecipeError(f"{path}: [{name}] {exc}") from None
    for (sec, key), allowed in _CHOICES.items():
        if sec == name and getattr(section, key) not in allowed:
            raise RecipeError(f"{path}: [{name}] {key} = {getattr(section, key)!r}; choose one of {', '.join(allowed)}")
    return section


def parse_recipe(data: dict, path: Path) -> Recipe:
    top = {k: v for k, v in data.items() if k not in _SECTIONS and k != "search"}
    known_top = {"name", "description", "seed"}
    unknown = sorted(set(top) - known_top)
    if unknown:
        raise RecipeError(f"{path}: unknown top-level key(s): {', '.join(unknown)}")
    if "data" not in data:
        raise RecipeError(f"{path}: a recipe needs a [data] table (loader, path)")
    sections = {name: _section(path, name, cls, data[name]) for name, cls in _SECTIONS.items() if name in data}
    recipe = Recipe(name=str(top.get("name") or path.stem), description=str(top.get("description", "")),
                    seed=int(top.get("seed", 42)), path=str(path), **sections)
    if "search" in data:
        from .search.space import parse_search

        recipe.search = parse_search(data["search"], path)
    _check_verify(recipe.verify, path)
    _check_train(recipe, path)
    s = recipe.split
    if recipe.detector.kind in TEMPORAL and s.method == "random":
        raise RecipeError(f"{path}: detector {recipe.detector.kind!r} reads windows of consecutive rows; use "
                          "[split] method = \"time\", \"probation\", \"prefix\" or \"blocks\", not \"random\"")
    if recipe.detector.train_noise < 0 or (recipe.detector.train_noise and recipe.detector.kind != "ae"):
        raise RecipeError(f"{path}: [detector] train_noise = {recipe.detector.train_noise}; a standard deviation "
                          f"(0 or more) for kind = \"ae\" only")
    if recipe.detector.kind in TEMPORAL and recipe.detector.window < 2:
        raise RecipeError(f"{path}: [detector] window must be at least 2 for {recipe.detector.kind!r}")
    if s.method in ("prefix", "probation"):
        # The test part is every row after the learning rows; train : validation splits those.
        if min(s.train, s.validation) <= 0 or s.test != 0:
            raise RecipeError(f"{path}: [split] method \"{s.method}\" takes positive train and validation "
                              "shares of its learning rows, and test = 0 (the test part is the rest)")
        if s.method == "probation" and not 0 < s.probation < 1:
            raise RecipeError(f"{path}: [split] probation = {s.probation} must be a share between 0 and 1")
    elif s.method == "files":
        if not s.test_path or min(s.train, s.validation) <= 0 or s.test != 0:
            raise RecipeError(f"{path}: [split] method \"files\" takes test_path (the test file), positive "
                              "train and validation shares of the [data] path's rows, and test = 0")
    elif min(s.train, s.validation, s.test) <= 0 or abs(s.train + s.validation + s.test - 1.0) > 1e-6:
        raise RecipeError(f"{path}: [split] train/validation/test must be positive and sum to 1")
    return recipe


def with_teacher(recipe: Recipe, teacher: str) -> Recipe:
    """The recipe with ``[train] teacher`` replaced (``tinyad build --teacher``), checked like a recipe's own."""
    if teacher not in _CHOICES[("train", "teacher")]:
        raise RecipeError(f"teacher {teacher!r}; choose one of {', '.join(_CHOICES[('train', 'teacher')])}")
    changed = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, teacher=teacher))
    _check_train(changed, Path(recipe.path))
    return changed


def _check_train(recipe: Recipe, path: Path) -> None:
    t = recipe.train
    if t.teacher != "none" and recipe.detector.kind != "vae_dnn":
        raise RecipeError(f"{path}: [train] teacher = {t.teacher!r} distils into a classifier; it needs "
                          f"[detector] kind = \"vae_dnn\", not {recipe.detector.kind!r}")
    weights = t.teacher_weight if isinstance(t.teacher_weight, list) else [t.teacher_weight]
    rows = t.augment_rows if isinstance(t.augment_rows, list) else [t.augment_rows]
    if not weights or not all(isinstance(w, (int, float)) and 0 <= w <= 1 for w in weights):
        raise RecipeError(f"{path}: [train] teacher_weight = {t.teacher_weight!r}; a weight between 0 and 1, "
                          "or a list of them")
    if not rows or not all(isinstance(r, int) and r >= 0 for r in rows):
        raise RecipeError(f"{path}: [train] augment_rows = {t.augment_rows!r}; a row count (0 or more), "
                          "or a list of them")
    if t.augment == "none" and any(rows):
        raise RecipeError(f"{path}: [train] augment_rows needs augment = \"mixup\"")
    if t.augment != "none" and t.teacher == "none":
        raise RecipeError(f"{path}: [train] augment = {t.augment!r} labels its rows with the teacher; "
                          "set teacher = \"xgboost\"")


def _check_verify(v: VerifySpec, path: Path) -> None:
    if not 0.0 <= v.min_agreement <= 1.0:
        raise RecipeError(f"{path}: [verify] min_agreement = {v.min_agreement}; a share between 0 and 1")
    for name in ("false_alarm_tolerance", "false_alarm_slack", "max_unit_score_gap"):
        if getattr(v, name) < 0:
            raise RecipeError(f"{path}: [verify] {name} = {getattr(v, name)}; it must not be negative")


def load_recipe(path: str | Path) -> Recipe:
    """Read a recipe TOML file into a ``Recipe``."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise RecipeError(f"{path}: no such recipe (recipes live in models/*.toml)") from None
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{path}: not valid TOML ({exc})") from None
    return parse_recipe(data, path)
