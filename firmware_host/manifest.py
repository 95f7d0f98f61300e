"""The one manifest schema of a device bundle: what build writes and every runner reads.

A bundle is a directory::

    model.tflite         int8 model (int8 input and output tensors)
    model_float.tflite   float32 model of the same network
    manifest.json        this schema
    golden.json          quantized input rows and the int8 outputs the build host computed
    report.json          the full build report (metrics, sweeps, baselines)
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import BundleError

SCHEMA_VERSION = 1
MODEL_FILE = "model.tflite"
FLOAT_MODEL_FILE = "model_float.tflite"
MANIFEST_FILE = "manifest.json"
GOLDEN_FILE = "golden.json"
REPORT_FILE = "report.json"
DETECTORS = ("ae", "vae_dnn", "lstm", "ae_lstm", "cnn_lstm_attn")
TEMPORAL_DETECTORS = ("lstm", "ae_lstm", "cnn_lstm_attn")


@dataclass
class Quantization:
    scale: float
    zero_point: int


@dataclass
class Scaler:
    """Raw feature row -> model input, applied in this order by ``preprocess.scale_rows``.

    ``impute``: value for an empty cell (train median); ``log1p``: whether the feature
    goes through sign(x)*log1p(|x|); ``mean``/``std``: standardisation fitted on the
    training split; ``clip``: standardised values are clipped to [-clip, clip].
    """

    impute: list[float]
    log1p: list[bool]
    mean: list[float]
    std: list[float]
    clip: float


@dataclass
class Manifest:
    name: str
    detector: str
    features: list[str]
    scaler: Scaler
    input_quantization: Quantization
    output_quantization: Quantization
    threshold: float
    classes: list[str]
    normal_class: str
    sha256: str
    input_shape: list[int]
    output_shape: list[int]
    threshold_float: float = 0.0
    window: int = 1                       # samples per model input; > 1 for temporal detectors
    score_params: dict = field(default_factory=dict)   # scoring.score's params (mode; hybrid a, b, norms)
    adaptive: dict = field(default_factory=dict)       # adaptive.py's params; empty: the static threshold
    kernels: str = "builtin"              # the kernel set that computed the golden vectors and metrics
    one_hot: dict[str, list[str]] = field(default_factory=dict)
    categories: dict[str, list[str]] = field(default_factory=dict)  # one-hot source column -> values seen in build
    metrics: dict = field(default_factory=dict)
    size_bytes: dict = field(default_factory=dict)
    weight_bytes: dict = field(default_factory=dict)
    recipe: dict = field(default_factory=dict)
    split: dict = field(default_factory=dict)
    calibration: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    created: str = ""
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "manifest") -> "Manifest":
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise BundleError(f"{source}: schema_version {version!r} is not supported "
                              f"(this tinyad reads {SCHEMA_VERSION}); rebuild the bundle or upgrade tinyad")
        try:
            fields = dict(data)
            fields["scaler"] = Scaler(**data["scaler"])
            fields["input_quantization"] = Quantization(**data["input_quantization"])
            fields["output_quantization"] = Quantization(**data["output_quantization"])
            manifest = cls(**fields)
        except KeyError as exc:
            raise BundleError(f"{source}: malformed manifest (missing field {exc})") from None
        except TypeError as exc:
            raise BundleError(f"{source}: malformed manifest ({exc})") from None
        if manifest.detector not in DETECTORS:
            raise BundleError(f"{source}: unknown detector {manifest.detector!r}; known: {', '.join(DETECTORS)}")
        n = len(manifest.features)
        for name in ("impute", "log1p", "mean", "std"):
            if len(getattr(manifest.scaler, name)) != n:
                raise BundleError(f"{source}: scaler.{name} has {len(getattr(manifest.scaler, name))} "
                                  f"entries for {n} features")
        return manifest


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def load_manifest(bundle: str | os.PathLike) -> Manifest:
    """Read and validate ``manifest.json`` of a bundle directory."""
    path = Path(bundle) / MANIFEST_FILE
    if not Path(bundle).is_dir():
        raise BundleError(f"{bundle}: not a bundle directory (build one with 'tinyad build')")
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"{bundle}: no {MANIFEST_FILE} in it; is this a tinyad bundle?") from None
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from None
    return Manifest.from_dict(data, source=str(path))


def check_model_hash(bundle: str | os.PathLike, manifest: Manifest) -> None:
    """Refuse a bundle whose model.tflite is not the one the manifest describes."""
    path = Path(bundle) / MODEL_FILE
    if not path.is_file():
        raise BundleError(f"{bundle}: {MODEL_FILE} is missing")
    actual = sha256_file(path)
    if actual != manifest.sha256:
        raise BundleError(f"{path}: sha256 {actual[:16]}... does not match the manifest's "
                          f"{manifest.sha256[:16]}...; the model was changed or corrupted after the build")


def write_json(path: str | os.PathLike, data: dict) -> None:
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(value):
    # numpy scalars and arrays reach the manifest through metrics; store them as plain JSON.
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in JSON")
