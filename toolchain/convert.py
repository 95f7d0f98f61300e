"""One parameterised conversion to TFLite (float32 or full-integer int8), and the op-list gate."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from firmware_host.errors import QuantizationError
from firmware_host.interpreter import load_runtime

FLOAT_TYPES = ("float32", "float16", "float64")
EDGE_OPS = ("QUANTIZE", "DEQUANTIZE")


@dataclass
class OpInfo:
    name: str
    operand_types: list[str]
    result_types: list[str]


def convert(model, *, int8: bool, representative: np.ndarray | None = None, per_channel: bool = True,
            int16_activations: bool = False) -> bytes:
    """Keras model -> TFLite flatbuffer with a fixed batch of 1.

    ``int8=True`` quantizes weights and activations to int8 (int8 input and output
    tensors), calibrated on ``representative`` rows (model-input units). With
    ``int16_activations`` the activations are int16 and the weights int8 (TFLite's 16x8 mode);
    TF 2.21 then gives int16 input and output tensors (it refuses int8 ones) and refuses some
    ops (UNIDIRECTIONAL_SEQUENCE_LSTM among them).
    """
    from .keras_env import import_tf, native_stderr_captured

    tf, _ = import_tf()
    input_shape = [1] + [int(d) for d in model.input_shape[1:]]
    function = tf.function(lambda x: model(x, training=False))
    # An unrolled LSTM keeps a free batch (its reshapes would otherwise bake in 1), so the runner can
    # resize it to a block of windows as it does a dense model; the file still says batch 1.
    spec_shape = [None] + input_shape[1:] if is_unrolled(model) else input_shape
    concrete = function.get_concrete_function(tf.TensorSpec(spec_shape, tf.float32))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    if int8:
        if representative is None or len(representative) == 0:
            raise QuantizationError("int8 conversion needs a non-empty representative set")
        rows = np.asarray(representative, dtype=np.float32)

        def samples():
            for row in rows:
                yield [row.reshape(input_shape)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = samples
        if int16_activations:
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        else:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int16 if int16_activations else tf.int8
        converter.inference_output_type = converter.inference_input_type
        if not per_channel:
            # Some TFLite Micro builds mishandle per-channel Dense weights; per-tensor is the safe fallback.
            converter._experimental_disable_per_channel_quantization_for_dense_layers = True
    with native_stderr_captured() as captured:
        try:
            converted = converter.convert()
        except Exception as exc:  # the converter raises a zoo of internal error types
            detail = str(exc).splitlines()[0][:300] if str(exc) else captured()
            raise QuantizationError(f"TFLite conversion failed: {detail}") from None
    return unused_buffers_zeroed(converted)


def unused_buffers_zeroed(model_bytes: bytes) -> bytes:
    """The model with the data of every buffer that no tensor or metadata entry refers to set to 0.

    TF 2.21's converter leaves such orphan buffers in int8 models with a fused LSTM (8 int8 and
    8 int16 values beside the state tensors), and their contents depended on what the process
    had converted before: the same recipe and seed gave other model bytes, and another hash,
    when a build followed another in one process. Nothing reads them, so zeroing them changes
    no output, and keeps the file's layout and size."""
    from tensorflow.lite.python import schema_py_generated as schema

    data = bytearray(model_bytes)
    model = schema.Model.GetRootAsModel(data, 0)
    for k in unused_buffers(model):
        model.Buffers(k).DataAsNumpy()[:] = 0          # a view into ``data``
    return bytes(data)


def unused_buffers(model) -> list[int]:
    """The indices of a flatbuffer ``schema.Model``'s non-empty buffers that no tensor of any
    subgraph and no metadata entry refers to."""
    used = {model.Metadata(i).Buffer() for i in range(model.MetadataLength())}
    used.update(int(k) for k in (model.MetadataBufferAsNumpy() if model.MetadataBufferLength() else []))
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        used.update(graph.Tensors(t).Buffer() for t in range(graph.TensorsLength()))
    return [k for k in range(model.BuffersLength()) if k not in used and model.Buffers(k).DataLength()]


def is_unrolled(model) -> bool:
    return any(getattr(layer, "unroll", False) for layer in model.layers)


def unrolled(model):
    """The same network (same weights) with every top-level LSTM layer unrolled: TFLite then gets
    one FULLY_CONNECTED/LOGISTIC/TANH/MUL/ADD chain per time step instead of the fused
    UNIDIRECTIONAL_SEQUENCE_LSTM op. The fused int8 op works window by window whatever the batch
    (~150-200 us per 24-sample window here, at batch 1 or 64), the unrolled chain runs a batch of
    windows in one pass (~20 us a window at 64; benchmarks/lstm_batching.py)."""
    config = model.get_config()
    changed = False
    for layer in config.get("layers", []):
        if layer.get("class_name") == "LSTM" and not layer["config"].get("unroll"):
            layer["config"]["unroll"] = changed = True
    if not changed:
        return model
    copy = type(model).from_config(config)
    copy.set_weights(model.get_weights())
    return copy


def _dtype_name(t) -> str:
    return np.dtype(t).name


def op_list(model_bytes: bytes) -> list[OpInfo]:
    """The model's ops as converted (builtin kernels, no delegate), with their tensor types."""
    interpreter = load_runtime().open(model_content=model_bytes, kernels="builtin")
    return [OpInfo(op["op_name"], [_dtype_name(t) for t in op["operand_types"]],
                   [_dtype_name(t) for t in op["result_types"]])
            for op in interpreter._get_ops_details()]


def float_ops(ops: list[OpInfo]) -> list[str]:
    """Ops that compute in float. Only QUANTIZE/DEQUANTIZE may touch float, at the model's edges."""
    offending = []
    for i, op in enumerate(ops):
        touches_float = any(t in FLOAT_TYPES for t in op.operand_types + op.result_types)
        if not touches_float:
            continue
        at_edge = (op.name == "QUANTIZE" and i == 0) or (op.name == "DEQUANTIZE" and i == len(ops) - 1)
        if not at_edge:
            offending.append(f"{op.name}({','.join(op.operand_types)}->{','.join(op.result_types)})")
    return offending


def assert_int8(model_bytes: bytes) -> list[OpInfo]:
    """Fail with the offending op names unless every compute op of the model is integer."""
    ops = op_list(model_bytes)
    bad = float_ops(ops)
    if bad:
        raise QuantizationError(
            f"the int8 model still computes in float: {', '.join(bad)}. Use an activation that quantizes "
            "(leaky_relu, relu, tanh, sigmoid) or a layer the int8 converter supports")
    return ops


def per_channel_tensors(model_bytes: bytes) -> list[str]:
    """Names of the tensors quantized per channel (more than one scale)."""
    interpreter = load_runtime().open(model_content=model_bytes, kernels="builtin")
    return [d["name"] for d in interpreter.get_tensor_details()
            if len(d["quantization_parameters"]["scales"]) > 1]


def weight_bytes(model_bytes: bytes) -> int:
    """Bytes of the constant tensors (weights, biases): op inputs that no op produces."""
    interpreter = load_runtime().open(model_content=model_bytes, kernels="builtin")
    ops = interpreter._get_ops_details()
    produced = {int(t) for op in ops for t in op["outputs"]}
    graph_inputs = {int(d["index"]) for d in interpreter.get_input_details()}
    consumed = {int(t) for op in ops for t in op["inputs"] if t >= 0}
    constants = consumed - produced - graph_inputs
    total = 0
    for detail in interpreter.get_tensor_details():
        if detail["index"] in constants:
            total += int(np.prod(detail["shape"])) * np.dtype(detail["dtype"]).itemsize
    return total


def io_quantization(model_bytes: bytes) -> tuple[tuple[float, int], tuple[float, int], list[int], list[int]]:
    """(input scale, zero point), (output scale, zero point), input shape, output shape."""
    interpreter = load_runtime().open(model_content=model_bytes, kernels="builtin")
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    return ((float(inp["quantization"][0]), int(inp["quantization"][1])),
            (float(out["quantization"][0]), int(out["quantization"][1])),
            [int(d) for d in inp["shape"]], [int(d) for d in out["shape"]])
