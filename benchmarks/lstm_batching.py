"""Can a temporal bundle score faster by batching windows? The int8 LSTM per window, converted
three ways from one trained model, measured side by side.

    python benchmarks/lstm_batching.py build/nab_machine_temperature_lstm.work [--batch 64] [--windows 2560]

WORK is a temporal build's work folder (``tinyad build RECIPE --work WORK``): its ``model.h5``
and ``representative.npy``. Each variant is converted to full-integer int8 with the same
representative rows (each repeated to fill a batch, so every tensor sees the same ranges) and
run on the same int8 windows with builtin kernels:

- fused, batch 1: the model a bundle ships (UNIDIRECTIONAL_SEQUENCE_LSTM), one window per invoke;
- fused, batch B: the same network converted with a fixed batch of B windows;
- unrolled, batch B: Keras ``unroll=True`` (per-step FULLY_CONNECTED, LOGISTIC, TANH, MUL, ADD).

Prints microseconds per window, whether the outputs equal the shipped model's bit for bit,
the file size, and whether the int8 op gate (toolchain/convert.py) accepts the model.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from firmware_host.interpreter import load_runtime  # noqa: E402
from toolchain.convert import float_ops, op_list  # noqa: E402


def convert(model, representative: np.ndarray, batch: int) -> bytes:
    from toolchain.keras_env import import_tf

    tf, _ = import_tf()
    shape = [batch] + [int(d) for d in model.input_shape[1:]]
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec(shape, tf.float32))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([np.repeat(row[None].astype(np.float32), batch, axis=0)]
                                                for row in representative)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    return converter.convert()


def unrolled(model):
    from toolchain.keras_env import import_tf

    _, keras = import_tf()
    config = model.get_config()
    for layer in config["layers"]:
        if layer["class_name"] == "LSTM":
            layer["config"]["unroll"] = True
    copy = keras.Model.from_config(config)
    copy.set_weights(model.get_weights())
    return copy


def outputs(model_bytes: bytes, windows: np.ndarray) -> tuple[np.ndarray, float]:
    """int8 outputs of every window and microseconds per window (builtin kernels, zero state each invoke)."""
    interpreter = load_runtime().open(model_content=model_bytes, kernels="builtin")
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    batch = int(inp["shape"][0])
    results = []
    start = time.perf_counter()
    for first in range(0, len(windows), batch):
        interpreter.reset_all_variables()
        interpreter.set_tensor(inp["index"], windows[first:first + batch])
        interpreter.invoke()
        results.append(interpreter.get_tensor(out["index"]).copy())
    return np.concatenate(results), (time.perf_counter() - start) / len(windows) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--windows", type=int, default=2560, help="Windows timed (a multiple of --batch).")
    args = parser.parse_args()
    from toolchain.keras_env import import_tf

    _, keras = import_tf()
    model = keras.models.load_model(args.work / "model.h5", compile=False)
    representative = np.load(args.work / "representative.npy")
    rng = np.random.default_rng(0)
    shape = (args.windows // args.batch * args.batch,) + tuple(int(d) for d in model.input_shape[1:])
    # Smooth random walks, as a series gives, within the int8 range.
    windows = np.clip(np.cumsum(rng.integers(-6, 7, size=shape), axis=1) + rng.integers(-60, 60, size=(shape[0], 1, 1)),
                      -128, 127).astype(np.int8)
    variants = [("fused, batch 1", convert(model, representative, 1)),
                (f"fused, batch {args.batch}", convert(model, representative, args.batch)),
                (f"unrolled, batch {args.batch}", convert(unrolled(model), representative, args.batch))]
    reference, _ = outputs(variants[0][1], windows)
    print(f"{len(windows)} int8 windows of shape {shape[1:]} ({args.work}), builtin kernels:")
    for name, model_bytes in variants:
        got, per_window = outputs(model_bytes, windows)
        floats = float_ops(op_list(model_bytes))
        print(f"  {name:20} {per_window:7.1f} us/window; outputs {'identical' if np.array_equal(got, reference) else 'DIFFERENT'} "
              f"to the shipped model's (max {int(np.abs(got.astype(int) - reference.astype(int)).max())} LSB); "
              f"{len(model_bytes):,} bytes; int8 gate: {'passes' if not floats else 'refuses (' + ', '.join(sorted(set(floats))[:3]) + ')'}")


if __name__ == "__main__":
    main()
