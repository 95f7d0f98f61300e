"""The one place that imports TensorFlow and the Keras the converter handles.

We build with ``tf_keras`` (Keras 2): TF 2.21's converter turns its LSTM into a fused
int8 UNIDIRECTIONAL_SEQUENCE_LSTM, while Keras 3's LSTM crashes full-integer conversion.
Dense detectors use the same Keras so that one conversion path serves every detector.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile


def import_tf():
    """(tensorflow, tf_keras) with TF's start-up chatter turned down; seconds to import."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    with native_stderr_captured():
        import tensorflow as tf
        import tf_keras

    tf.get_logger().setLevel("ERROR")
    return tf, tf_keras


def seed_everything(seed: int) -> None:
    """Same recipe and seed, same weights: seed Python, numpy and TF, and ask TF for deterministic ops."""
    tf, keras = import_tf()
    keras.utils.set_random_seed(seed)
    try:
        tf.config.experimental.enable_op_determinism()
    except (AttributeError, RuntimeError):
        pass  # older TF, or already configured in this process


@contextlib.contextmanager
def native_stderr_captured():
    """TensorFlow's C++ side (import, converter) logs to file descriptor 2; keep it off the terminal.
    Yields a function returning the last captured line (used in error messages)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)

        def last_line() -> str:
            sink.seek(0)
            lines = [l for l in sink.read().decode(errors="replace").splitlines() if l.strip()]
            return lines[-1][:300] if lines else "no detail"
        try:
            yield last_line
        finally:
            os.dup2(saved, 2)
            os.close(saved)
