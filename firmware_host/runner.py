"""The device runner: one bundle, one int8 interpreter, ``predict(rows)``.

Imports numpy and an interpreter only (through ``interpreter.load_runtime``).
On open it checks the model's hash and replays the bundle's golden vectors; a
machine that does not reproduce them is refused before it serves a verdict.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import adaptive, explain, quant, scoring
from .errors import BundleError, SelfTestError
from .interpreter import Runtime, load_runtime
from .manifest import GOLDEN_FILE, MODEL_FILE, Manifest, check_model_hash, load_manifest
from .preprocess import scale_rows

# Output LSBs a correct device may differ by. TFLite's int8 softmax and logistic kernels are
# implementation-specific (lookup tables, exp approximations): ai_edge_litert's aarch64 builtin
# kernels were measured 1-2 LSB off x86 on a softmax output, never a verdict different, while a
# kernel that computes wrongly (XNNPACK under QEMU's 'max' CPU) was 156 LSB off. Verdicts on the
# golden rows must match exactly either way.
GOLDEN_TOLERANCE_LSB = 2


@dataclass
class SelfTestResult:
    rows: int
    max_abs_diff_lsb: int
    verdict_mismatches: int
    interpreter: str

    @property
    def passed(self) -> bool:
        return self.max_abs_diff_lsb <= GOLDEN_TOLERANCE_LSB and self.verdict_mismatches == 0


MAX_BATCH_ROWS = 1024     # rows per batched invoke: past ~1k rows the per-row cost stops falling


class TFLiteModel:
    """One .tflite file converted with a batch of 1.

    ``invoke_all`` runs a block of rows: an int8 point-wise model through a second interpreter whose
    input is resized to the block (bit-identical outputs, ~0.2 us a row instead of ~5 us here); a
    model that refuses the resize (a fused LSTM keeps batch-1 state tensors) one row per invoke."""

    def __init__(self, path: str | os.PathLike, runtime: Runtime, num_threads: int = 1):
        self.path = Path(path)
        self.runtime, self.num_threads = runtime, num_threads
        self.interpreter = self._open()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.input_dtype = np.dtype(self.input["dtype"])
        self.output_dtype = np.dtype(self.output["dtype"])
        self._batched = None          # the resized interpreter, opened on the first block of rows
        # Its input's current batch; -1 where rows go one at a time: a model that refused the resize,
        # a float model, whose kernels may sum a batch in another order (int8 sums are exact), or a
        # runtime that cannot invoke a resized model (see ``Runtime.batches``).
        self._batched_rows = 0 if self.input_dtype == np.int8 and runtime.batches else -1

    def _open(self):
        try:
            return self.runtime.open(self.path, num_threads=self.num_threads)
        except (ValueError, RuntimeError) as exc:
            raise BundleError(f"{self.path}: {self.runtime.name} could not load the model ({exc})") from None

    def invoke_one(self, row: np.ndarray) -> np.ndarray:
        """Run one input row (already in the input tensor's dtype); returns the raw output tensor."""
        # A converted LSTM keeps its hidden and cell state in variable tensors that survive an
        # invoke, so without a reset each window would start from the previous one's final state
        # and a verdict would depend on what ran before it (seen here: 1-3 LSB). Every window
        # starts from zero state, as in Keras; the reset is a no-op for models without state.
        self.interpreter.reset_all_variables()
        self.interpreter.set_tensor(self.input["index"], row.reshape(self.input["shape"]).astype(self.input_dtype))
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"])[0].copy()

    def invoke_all(self, rows: np.ndarray, batched: bool = True) -> np.ndarray:
        """Raw outputs for a block of input rows (rows, *input shape[1:]), in the input's dtype.
        ``batched=False`` forces one invoke per row (the self-test checks both paths)."""
        rows = np.ascontiguousarray(rows, dtype=self.input_dtype).reshape((-1,) + tuple(self.input["shape"][1:]))
        if batched and len(rows) > 1 and self._batched_rows >= 0:
            result = np.empty((len(rows),) + tuple(self.output["shape"][1:]), dtype=self.output_dtype)
            for first in range(0, len(rows), MAX_BATCH_ROWS):
                block = rows[first:first + MAX_BATCH_ROWS]
                interpreter = self._resized(len(block))
                if interpreter is None:
                    break
                interpreter.reset_all_variables()    # as invoke_one: no state carried over
                interpreter.set_tensor(self.input["index"], block)
                interpreter.invoke()
                result[first:first + len(block)] = interpreter.get_tensor(self.output["index"])
            else:
                return result
        return self._one_by_one(rows)

    def _one_by_one(self, rows: np.ndarray) -> np.ndarray:
        interpreter, index, out = self.interpreter, self.input["index"], self.output["index"]
        reset, set_tensor, invoke, get_tensor = (interpreter.reset_all_variables, interpreter.set_tensor,
                                                 interpreter.invoke, interpreter.get_tensor)
        result = np.empty((len(rows),) + tuple(self.output["shape"][1:]), dtype=self.output_dtype)
        shaped = rows.reshape((len(rows), 1) + rows.shape[1:])
        for i in range(len(rows)):
            reset()                      # each window from zero state: see invoke_one
            set_tensor(index, shaped[i])
            invoke()
            result[i] = get_tensor(out)[0]
        return result

    def _resized(self, rows: int):
        """The batched interpreter with its input resized to ``rows``, or None if the model refuses."""
        if rows == self._batched_rows:
            return self._batched
        try:
            if self._batched is None:
                self._batched = self._open()
            self._batched.resize_tensor_input(self.input["index"], [rows] + list(self.input["shape"][1:]))
            self._batched.allocate_tensors()
        except (ValueError, RuntimeError):
            self._batched, self._batched_rows = None, -1
            return None
        self._batched_rows = rows
        return self._batched


class Detector:
    """Context manager around a bundle's int8 model.

    >>> with Detector("build/default") as det:
    ...     verdicts = det.predict(raw_rows)
    """

    def __init__(self, bundle: str | os.PathLike, *, self_test: bool = True, runtime: Runtime | None = None,
                 num_threads: int = 1):
        self.bundle = Path(bundle)
        self.manifest: Manifest = load_manifest(self.bundle)
        check_model_hash(self.bundle, self.manifest)
        self.runtime = runtime or load_runtime()
        self.model = TFLiteModel(self.bundle / MODEL_FILE, self.runtime, num_threads=num_threads)
        if self.model.input_dtype != np.int8 or self.model.output_dtype != np.int8:
            raise BundleError(f"{self.bundle / MODEL_FILE}: not a full-integer model (input {self.model.input_dtype}, "
                              f"output {self.model.output_dtype}); rebuild the bundle")
        self.normal_index = self.manifest.classes.index(self.manifest.normal_class)
        self.threshold = self.manifest.threshold
        self.self_test_result: SelfTestResult | None = None
        if self_test:
            self.self_test_result = run_self_test(self)
            if not self.self_test_result.passed:
                r = self.self_test_result
                raise SelfTestError(
                    f"self-test failed on {r.interpreter}: outputs differ from the build host's by up to "
                    f"{r.max_abs_diff_lsb} LSB (allowed {GOLDEN_TOLERANCE_LSB}) and {r.verdict_mismatches} of "
                    f"{r.rows} golden verdicts differ; this interpreter/CPU does not compute what the build host "
                    f"computed (bundle built with {self.manifest.kernels} kernels), refusing to serve "
                    "(use --skip-self-test to override)")

    def __enter__(self) -> "Detector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.model = None

    # -- the pipeline, split so the serial agent can use the quantized half alone --
    def prepare(self, raw_rows: np.ndarray) -> np.ndarray:
        """Raw feature rows -> int8 model input values."""
        return prepare_rows(self.manifest, raw_rows)

    def predict_prepared(self, inputs: np.ndarray) -> tuple[scoring.Verdicts, np.ndarray]:
        """Model input values -> (verdicts, raw outputs)."""
        outputs = self.model.invoke_all(inputs)
        return self.decide(inputs, outputs), outputs

    def decide(self, inputs: np.ndarray, outputs: np.ndarray) -> scoring.Verdicts:
        m = self.manifest
        inputs = quant.dequantize(inputs, m.input_quantization.scale, m.input_quantization.zero_point)
        outputs = quant.dequantize(outputs, m.output_quantization.scale, m.output_quantization.zero_point)
        scores = scoring.score(m.detector, inputs, outputs, self.normal_index, m.score_params)
        return scoring.decide(m.detector, scores, outputs, self.threshold, self.normal_index, m.score_params)

    def predict(self, raw_rows: np.ndarray) -> scoring.Verdicts:
        """Raw feature rows (rows, features; NaN allowed) -> verdicts, for a point-wise bundle.

        A temporal bundle (``manifest.window > 1``) needs its past rows: use ``stream()``."""
        if self.manifest.window > 1:
            raise BundleError(f"{self.bundle}: a temporal bundle (window {self.manifest.window}); "
                              "score it through Detector.stream()")
        verdicts, _ = self.predict_prepared(self.prepare(raw_rows))
        return verdicts

    def explain(self, inputs: np.ndarray, outputs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k features that explain each row's score, from int8 model inputs and raw int8
        outputs: (indices, values in 1/255 steps), as ``explain.explain`` defines them."""
        m = self.manifest
        inputs = quant.dequantize(inputs, m.input_quantization.scale, m.input_quantization.zero_point)
        outputs = quant.dequantize(outputs, m.output_quantization.scale, m.output_quantization.zero_point)
        return explain.explain(m.detector, inputs, outputs, m.score_params, len(m.features), m.scaler.clip, k)

    def stream(self, explain: int = 0) -> "Stream":
        """A fresh per-sample stream (ring buffer of the last ``window`` samples) over this model;
        ``explain`` > 0 names that many features behind each flagged verdict (``Verdicts.why``)."""
        return Stream(self, explain)


class Stream:
    """One input stream through a detector: a ring buffer of the last ``window`` int8 samples.

    ``push`` takes quantized samples in arrival order and returns one verdict per sample;
    until the buffer holds ``window`` samples a sample's verdict is ``warming_up`` (score NaN,
    unit score 0, not anomalous). A point-wise bundle has window 1 and never warms up. A bundle
    with ``adaptive`` parameters also keeps the last raw scores (``adaptive.AdaptiveState``):
    its verdicts come from the adaptive [0, 1] score, not the static threshold. The device agent
    keeps one of these per connection; ``tinyad run`` keeps one per input file.
    """

    def __init__(self, detector: Detector, explain: int = 0):
        self.detector = detector
        self.explain = explain          # features named per flagged verdict; 0: none (why is None)
        self.window = int(detector.manifest.window)
        self.width = len(detector.manifest.features)
        self.buffer = np.zeros((self.window, self.width), dtype=np.int8)
        self.filled = 0
        params = detector.manifest.adaptive
        self.adaptive = adaptive.AdaptiveState(params) if params else None

    def reset(self) -> None:
        self.filled = 0
        if self.adaptive is not None:
            self.adaptive.reset()

    def _scored(self, windows: np.ndarray) -> scoring.Verdicts:
        verdicts, raw = self.detector.predict_prepared(windows)
        if self.adaptive is not None:
            unit, flags = self.adaptive.push(verdicts.scores, windows)
            m = self.detector.manifest
            outputs = quant.dequantize(raw, m.output_quantization.scale, m.output_quantization.zero_point)
            verdicts = scoring.flagged_verdicts(m.detector, verdicts.scores, flags, outputs,
                                                self.detector.normal_index, m.score_params, unit)
        if self.explain:
            verdicts.why = self._why(windows, raw, verdicts.is_anomaly)
        return verdicts

    def _why(self, windows: np.ndarray, raw: np.ndarray, flagged: np.ndarray) -> list[list]:
        """``Verdicts.why`` for scored rows: only flagged rows are explained (the others get [])."""
        rows = np.flatnonzero(flagged)
        indices = np.zeros((len(flagged), 1), dtype=np.int64)
        values = np.zeros((len(flagged), 1), dtype=np.uint8)
        if len(rows):
            some_indices, some_values = self.detector.explain(windows[rows], raw[rows], self.explain)
            indices = np.zeros((len(flagged), some_indices.shape[1]), dtype=np.int64)
            values = np.zeros((len(flagged), some_indices.shape[1]), dtype=np.uint8)
            indices[rows], values[rows] = some_indices, some_values
        return explain.named(indices, values, flagged, self.detector.manifest.features)

    def push(self, inputs: np.ndarray) -> scoring.Verdicts:
        inputs = np.asarray(inputs, dtype=np.int8).reshape(-1, self.width)
        n = len(inputs)
        if self.window == 1:
            verdicts = self._scored(inputs)
            verdicts.warming_up = np.zeros(n, dtype=bool)
            return verdicts
        windows, positions = [], []
        for i, row in enumerate(inputs):
            self.buffer[:-1] = self.buffer[1:]
            self.buffer[-1] = row
            self.filled = min(self.filled + 1, self.window)
            if self.filled == self.window:
                windows.append(self.buffer.copy())
                positions.append(i)
        scores = np.full(n, np.nan)
        flags = np.zeros(n, dtype=bool)
        predicted = np.full(n, self.detector.normal_index, dtype=np.int64)
        warming = np.ones(n, dtype=bool)
        unit = np.zeros(n) if self.adaptive is not None else None
        why = [[] for _ in range(n)] if self.explain else None
        if windows:
            verdicts = self._scored(np.stack(windows))
            scores[positions] = verdicts.scores
            flags[positions] = verdicts.is_anomaly
            predicted[positions] = verdicts.predicted
            warming[positions] = False
            if unit is not None:
                unit[positions] = verdicts.unit_score
            if why is not None:
                for position, reasons in zip(positions, verdicts.why):
                    why[position] = reasons
        return scoring.Verdicts(scores=scores, is_anomaly=flags, predicted=predicted, warming_up=warming,
                                unit_score=unit, why=why)


def replay_length(manifest: Manifest) -> int:
    """Samples of history that rebuild a ``Stream``'s state exactly: a host whose device restarted
    replays this many of the last verdicted samples as warm-up (their answers discarded). The ring
    buffer needs window-1 of them; an adaptive bundle's scorer then needs ``adaptive.span`` raw scores."""
    extra = adaptive.span(manifest.adaptive) if manifest.adaptive else 0
    return max(int(manifest.window), 1) - 1 + extra


def prepare_rows(manifest: Manifest, raw_rows: np.ndarray) -> np.ndarray:
    """Raw feature rows -> int8 model input values, as the manifest says (scale, then quantize).
    The host streamer uses this alone: it needs the manifest, not an interpreter."""
    q = manifest.input_quantization
    return quant.quantize(scale_rows(raw_rows, manifest.scaler), q.scale, q.zero_point)


def load_golden(bundle: Path) -> dict:
    path = bundle / GOLDEN_FILE
    try:
        golden = json.loads(path.read_text())
        return {"inputs": np.asarray(golden["inputs"], dtype=np.int8),
                "outputs": np.asarray(golden["outputs"], dtype=np.int8),
                "is_anomaly": np.asarray(golden["is_anomaly"], dtype=bool)}
    except FileNotFoundError:
        raise BundleError(f"{bundle}: {GOLDEN_FILE} is missing; the bundle cannot be self-tested") from None
    except (KeyError, ValueError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: malformed golden vectors ({exc})") from None


def run_self_test(detector: Detector) -> SelfTestResult:
    """Replay the golden vectors through this machine's interpreter and compare."""
    golden = load_golden(detector.bundle)
    # Both ways run serves rows: a block of rows in one batched invoke, a live row on its own.
    diff, mismatched = 0, np.zeros(len(golden["inputs"]), dtype=bool)
    for batched in (True, False):
        outputs = detector.model.invoke_all(golden["inputs"], batched=batched)
        if outputs.shape != golden["outputs"].shape:
            raise BundleError(f"{detector.bundle}: golden outputs have shape {golden['outputs'].shape}, "
                              f"the model gives {outputs.shape}")
        diff = max(diff, int(np.abs(outputs.astype(np.int32) - golden["outputs"].astype(np.int32)).max(initial=0)))
        mismatched |= detector.decide(golden["inputs"], outputs).is_anomaly != golden["is_anomaly"]
    return SelfTestResult(rows=len(golden["inputs"]), max_abs_diff_lsb=diff,
                          verdict_mismatches=int(mismatched.sum()), interpreter=detector.runtime.describe())


def model_scores(model: TFLiteModel, scaled_rows: np.ndarray, detector: str, normal_index: int = 0,
                 params: dict | None = None):
    """Scores of scaled rows through one .tflite model, quantizing with the tensor's own parameters.

    Returns (scores, dequantized outputs, quantized inputs or None). Verify uses this on the
    float and int8 models before a manifest exists; ``Detector`` does the same via the manifest."""
    inputs, quantized = scaled_rows, None
    if model.input_dtype == np.int8:
        scale, zero_point = model.input["quantization"]
        quantized = quant.quantize(scaled_rows, scale, zero_point)
        inputs = quant.dequantize(quantized, scale, zero_point)
    raw = model.invoke_all(quantized if quantized is not None else scaled_rows.astype(np.float32))
    outputs = raw
    if model.output_dtype == np.int8:
        scale, zero_point = model.output["quantization"]
        outputs = quant.dequantize(raw, scale, zero_point)
    return scoring.score(detector, inputs, outputs, normal_index, params), outputs, quantized, raw
