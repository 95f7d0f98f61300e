"""Latency, throughput, size and memory of a bundle's float and int8 models, measured in one run."""

from __future__ import annotations

import io
import os
import resource
import time
from pathlib import Path

import numpy as np

from .csv_input import open_text, score_csv
from .interpreter import load_runtime
from .manifest import FLOAT_MODEL_FILE, MODEL_FILE, Manifest, load_manifest
from .runner import Detector, TFLiteModel, run_self_test


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def _inputs(model: TFLiteModel, rows: int, seed: int) -> np.ndarray:
    shape = (rows,) + tuple(model.input["shape"][1:])
    rng = np.random.default_rng(seed)
    if model.input_dtype == np.int8:
        return rng.integers(-128, 128, size=shape, dtype=np.int64).astype(np.int8)
    return rng.standard_normal(shape).astype(np.float32)


def bench_model(path: Path, runtime, invokes: int, warmup: int, seed: int) -> dict:
    """Single-sample invoke latency (p50/p99, microseconds) and rows per second for one model."""
    before = _rss_bytes()
    model = TFLiteModel(path, runtime)
    loaded = _rss_bytes()
    rows = _inputs(model, invokes, seed)
    for row in rows[:warmup]:
        model.invoke_one(row)
    timings = np.empty(invokes)
    interp, index = model.interpreter, model.input["index"]
    shape = model.input["shape"]
    for i, row in enumerate(rows):
        start = time.perf_counter_ns()
        interp.reset_all_variables()      # as TFLiteModel.invoke_one does: each window from zero state
        interp.set_tensor(index, row.reshape(shape))
        interp.invoke()
        timings[i] = time.perf_counter_ns() - start
    start = time.perf_counter()
    model.invoke_all(rows, batched=False)          # one invoke per row; the batched figure follows
    elapsed = time.perf_counter() - start
    return {"file_bytes": path.stat().st_size, "invoke_us_p50": float(np.percentile(timings, 50) / 1e3),
            "invoke_us_p99": float(np.percentile(timings, 99) / 1e3), "invoke_us_mean": float(timings.mean() / 1e3),
            "rows_per_second": float(invokes / elapsed), "rss_growth_bytes": int(max(loaded - before, 0)),
            "batched_rows_per_second": _batched_throughput(path, runtime, rows, BATCH_ROWS),
            "batch_rows": BATCH_ROWS}


BATCH_ROWS = 64


def _batched_throughput(path: Path, runtime, rows: np.ndarray, batch: int) -> float | None:
    """Rows per second with the input resized to ``batch`` rows per invoke (None if the model
    cannot be resized, as with a recurrent model converted for a fixed batch)."""
    interpreter = runtime.open(path)
    index = interpreter.get_input_details()[0]["index"]
    try:
        interpreter.resize_tensor_input(index, [batch] + list(rows.shape[1:]))
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError):
        return None
    usable = len(rows) // batch * batch
    start = time.perf_counter()
    for first in range(0, usable, batch):
        interpreter.set_tensor(index, rows[first:first + batch])
        interpreter.invoke()
    return float(usable / (time.perf_counter() - start))


RUN_ROWS = 20_000             # rows of the run measurement (a temporal bundle: a tenth of it)


def synthetic_csv(manifest: Manifest, rows: int, seed: int) -> bytes:
    """A CSV with the bundle's input columns: numbers drawn around the training mean (in the
    scaler's own space, so log1p features get heavy tails), categories from the build's list."""
    rng = np.random.default_rng(seed)
    columns = {}
    for i, name in enumerate(manifest.features):
        if name in manifest.one_hot:
            column = manifest.one_hot[name][0]
            known = manifest.categories.get(column) or sorted(v for c, v in manifest.one_hot.values() if c == column)
            columns.setdefault(column, rng.choice(known, size=rows))
            continue
        scaled = manifest.scaler.mean[i] + manifest.scaler.std[i] * np.clip(rng.standard_normal(rows), -3, 3)
        raw = np.sign(scaled) * np.expm1(np.abs(scaled)) if manifest.scaler.log1p[i] else scaled
        columns[name] = [f"{value:.6g}" for value in raw]
    names = list(columns)
    lines = [",".join(names)] + [",".join(cells) for cells in zip(*(columns[n] for n in names))]
    return ("\n".join(lines) + "\n").encode()


def bench_run(detector: Detector, rows: int, seed: int, csv_path: str | None = None) -> dict:
    """Rows per second (wall clock and CPU time) of ``tinyad run``'s pipeline, CSV text in and
    verdict CSV text out (parse, scale, quantize, invoke, score, format), start-up excluded.

    On ``rows`` synthetic rows, or with ``csv_path`` on that file, read from disk (or gunzipped)
    as ``tinyad run --input`` reads it, with the verdict text formatted and then discarded."""
    if csv_path is None:
        stream, source = io.BytesIO(synthetic_csv(detector.manifest, rows, seed)), "synthetic"
    else:
        stream, source = open_text(csv_path)
    start, cpu = time.perf_counter(), time.process_time()
    with stream:
        scored, _ = score_csv(detector, stream, source, _Discard())
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    # CPU time too: on a shared machine the wall clock also counts other processes' turns.
    return {"rows": scored, "source": "synthetic" if csv_path is None else str(csv_path), "seconds": elapsed,
            "rows_per_second": scored / elapsed if elapsed > 0 else None, "cpu_seconds": cpu,
            "rows_per_cpu_second": scored / cpu if cpu > 0 else None}


class _Discard(io.TextIOBase):
    """A text sink that counts and drops what ``run`` would write to its verdict file."""

    def __init__(self):
        self.characters = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.characters += len(text)
        return len(text)


def bench_bundle(bundle: str | os.PathLike, invokes: int = 2000, warmup: int = 100, seed: int = 0,
                 csv_path: str | None = None) -> dict:
    """Both models of a bundle, measured one after the other in this process, and the run
    pipeline on synthetic rows or on the CSV at ``csv_path``."""
    bundle = Path(bundle)
    manifest = load_manifest(bundle)
    if csv_path is not None:
        open_text(csv_path)[0].close()       # a missing file is an error now, not after the measurements
    runtime = load_runtime()
    # The first interpreter a process creates pays one-off set-up (delegate, kernels); pay it here
    # so that neither measured model carries it.
    TFLiteModel(bundle / FLOAT_MODEL_FILE, runtime).invoke_one(
        np.zeros(manifest.input_shape[1:], dtype=np.float32))
    detector = Detector(bundle, self_test=False, runtime=runtime)
    self_test = run_self_test(detector)
    result = {"bundle": str(bundle), "name": manifest.name, "detector": manifest.detector,
              "interpreter": runtime.describe(), "invokes": invokes,
              "self_test": {"passed": self_test.passed, "max_abs_diff_lsb": self_test.max_abs_diff_lsb,
                            "verdict_mismatches": self_test.verdict_mismatches, "rows": self_test.rows},
              "int8": bench_model(bundle / MODEL_FILE, runtime, invokes, warmup, seed),
              "float": bench_model(bundle / FLOAT_MODEL_FILE, runtime, invokes, warmup, seed)}
    result["size_ratio_int8_to_float"] = result["int8"]["file_bytes"] / result["float"]["file_bytes"]
    result["weight_ratio_int8_to_float"] = (manifest.weight_bytes.get("int8", 0) /
                                            max(manifest.weight_bytes.get("float", 0), 1))
    result["latency_ratio_int8_to_float"] = result["int8"]["invoke_us_p50"] / result["float"]["invoke_us_p50"]
    batched = (result["int8"]["batched_rows_per_second"], result["float"]["batched_rows_per_second"])
    result["batched_throughput_ratio_int8_to_float"] = batched[0] / batched[1] if all(batched) else None
    result["run"] = bench_run(detector, RUN_ROWS if manifest.window <= 1 else RUN_ROWS // 10, seed, csv_path)
    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return result
