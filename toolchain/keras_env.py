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
    os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")
    with native_stderr_captured():
        import tensorflow as tf
        import tf_keras

    tf.get_logger().setLevel("ERROR")
    _one_thread(tf)
    return tf, tf_keras


def _one_thread(tf) -> None:
    """One TF thread per op and between ops: a reduction then sums in the same order on a machine
    with any number of cores, so a rebuild elsewhere gives the same weights (the models are tiny,
    so a second thread buys little). TF accepts this only before it first runs an op."""
    try:
        if tf.config.threading.get_intra_op_parallelism_threads() != 1:
            tf.config.threading.set_intra_op_parallelism_threads(1)
            tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # TF already running in this process: its first settings stay


def seed_everything(seed: int) -> None:
    """Same recipe and seed, same weights: seed Python, numpy and TF, and ask TF for deterministic ops."""
    tf, keras = import_tf()
    # Fresh layer-name counters: the converter writes layer names into the .tflite file, so a
    # model's bytes must not depend on how many models this process built before it.
    keras.backend.clear_session()
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
