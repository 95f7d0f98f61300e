"""Assemble a device bundle: write everything to a temporary directory, then rename it into place."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from firmware_host import manifest as mf
from firmware_host.errors import BundleError
from firmware_host.interpreter import load_runtime
from firmware_host.runner import GOLDEN_TOLERANCE_LSB, TFLiteModel, model_scores
from firmware_host import scoring


def golden_vectors(int8_path: Path, x_scaled: np.ndarray, detector: str, threshold: float, rows: int,
                   seed: int, params: dict | None = None) -> dict:
    """About ``rows`` quantized inputs spread evenly over the *values* of the score, with the int8
    outputs this host computed.

    Spreading over score values rather than ranks puts most golden rows where outputs are not
    saturated -- where a kernel that rounds differently shows it (XNNPACK vs builtin kernels
    differed only on such rows). Rows within 2 % of the score range of the threshold are left
    out, so a correct device that differs by a few LSB cannot flip a golden verdict."""
    model = TFLiteModel(int8_path, load_runtime())
    scores, outputs, quantized, raw = model_scores(model, x_scaled, detector, 0, params)
    span = float(np.ptp(scores)) or 1.0
    eligible = np.flatnonzero(np.abs(scores - threshold) > 0.02 * span)
    if len(eligible) == 0:
        eligible = np.arange(len(scores))
    targets = np.linspace(scores[eligible].min(), scores[eligible].max(), rows)
    nearest = np.abs(scores[eligible][None, :] - targets[:, None]).argmin(axis=1)
    pick = eligible[np.unique(nearest)]
    verdicts = scoring.decide(detector, scores[pick], outputs[pick], threshold, 0, params)
    return {"interpreter": model_runtime_name(), "inputs": quantized[pick].tolist(), "outputs": raw[pick].tolist(),
            "scores": scores[pick].tolist(), "is_anomaly": verdicts.is_anomaly.tolist(),
            "tolerance_lsb": GOLDEN_TOLERANCE_LSB}


def model_runtime_name() -> str:
    return load_runtime().describe()


def check_destination(out: Path) -> None:
    """Refuse an ``out`` that exists and is not a bundle (a bundle there is replaced when the new one is complete)."""
    out = Path(out)
    if out.exists() and not (out / mf.MANIFEST_FILE).is_file():
        raise BundleError(f"{out} exists and is not a tinyad bundle; refusing to replace it (choose another --out)")


def write_bundle(out: Path, files: dict[str, bytes], manifest: mf.Manifest, report: dict, golden: dict) -> Path:
    """Write the bundle to ``out`` atomically: nothing appears at ``out`` unless every file was written."""
    out = Path(out)
    check_destination(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for name, payload in files.items():
            (staging / name).write_bytes(payload)
        manifest.sha256 = mf.sha256_file(staging / mf.MODEL_FILE)
        mf.write_json(staging / mf.MANIFEST_FILE, manifest.to_dict())
        mf.write_json(staging / mf.REPORT_FILE, report)
        mf.write_json(staging / mf.GOLDEN_FILE, golden)
        for path in staging.iterdir():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        if out.exists():
            previous = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.rename(out, previous)
            os.rename(staging, out)
            shutil.rmtree(previous, ignore_errors=True)
        else:
            os.rename(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out
