"""Temporal detectors over a window of W consecutive samples (``tf_keras``, Keras 2).

Every model takes one window ``(W, features)`` -- the current sample last -- and is built so
the int8 converter emits fused integer ops: the Keras 2 LSTM converts to one int8
``UNIDIRECTIONAL_SEQUENCE_LSTM`` (the Keras 3 LSTM crashes the TF 2.21 int8 converter, and an
unrolled one leaves a float SPLIT behind). Outputs, as ``firmware_host.scoring`` reads them:

- ``lstm``: forecasts the current sample from the W-1 before it (as a change from the previous
  sample); emits the residual (actual - forecast), computed inside the model so int8 ranges
  fit normal errors.
- ``ae_lstm``: a dense AE reconstructs the whole window and an LSTM forecasts the current
  sample; emits both residuals concatenated (window first), scored as ``a*RE + b*PE``.
- ``cnn_lstm_attn``: Conv1D over the window, an LSTM, softmax attention over time steps and a
  head; a softmax classifier where labels exist, else a forecaster emitting a residual.

Forecasters and the AE are trained on windows of normal samples only, with zero targets
for their residual outputs (the same loss as predicting the sample itself).
"""

from __future__ import annotations

import numpy as np

from .detectors import Progress, Trained, _activation, _dense_stack, _fit
from .keras_env import import_tf, seed_everything
from .recipe import DetectorSpec


def _split_window(keras, inputs, window: int):
    """(past W-1 steps, observed change from the previous step to the current one) of a window.

    Forecasters predict that change rather than the current level: ``current - previous`` is
    exact in int8 (both values share the input scale), and the network's output then spans the
    narrow range of normal changes instead of the whole range of levels, which keeps int8
    precision where normal and anomalous errors are told apart."""
    past = keras.layers.Cropping1D((0, 1), name="past")(inputs)
    current = keras.layers.Flatten(name="current")(keras.layers.Cropping1D((window - 1, 0), name="last")(inputs))
    previous = keras.layers.Flatten(name="previous")(
        keras.layers.Cropping1D((window - 2, 1), name="before_last")(inputs))
    change = keras.layers.Subtract(name="change")([current, previous])
    return past, change


def _forecast_residual(keras, past, change, n_features: int, spec: DetectorSpec, prefix: str):
    h = keras.layers.LSTM(spec.lstm_units, name=f"{prefix}_lstm")(past)
    if spec.dropout:
        h = keras.layers.Dropout(spec.dropout)(h)
    forecast = keras.layers.Dense(n_features, name=f"{prefix}_forecast")(h)
    return keras.layers.Subtract(name=f"{prefix}_residual")([change, forecast])


def _attention_encoder(keras, x, spec: DetectorSpec):
    """Conv1D features, an LSTM over them, and a softmax-attention context vector over time steps."""
    x = keras.layers.Conv1D(spec.conv_filters, spec.kernel_size, padding="same", name="conv")(x)
    x = _activation(keras, spec.activation)(x)
    if spec.dropout:
        x = keras.layers.Dropout(spec.dropout)(x)
    h = keras.layers.LSTM(spec.lstm_units, return_sequences=True, name="lstm")(x)
    energy = keras.layers.Dense(1, activation="tanh", name="attention_score")(h)        # (T, 1)
    weights = keras.layers.Softmax(axis=1, name="attention_weights")(energy)             # over time
    context = keras.layers.Dot(axes=1, name="context")([weights, h])                      # (1, units)
    context = keras.layers.Flatten(name="context_vector")(context)
    if spec.dropout:
        context = keras.layers.Dropout(spec.dropout)(context)
    return context


def _windows_input(keras, window: int, n_features: int):
    return keras.Input((window, n_features), name="window")


def _zeros(x: np.ndarray, width: int) -> np.ndarray:
    return np.zeros((len(x), width), dtype=np.float32)


def train_lstm(w_train, w_val, spec: DetectorSpec, seed: int, progress: Progress | None = None) -> Trained:
    """LSTM forecaster of the current sample from the W-1 before it; deploys the residual."""
    tf, keras = import_tf()
    seed_everything(seed)
    window, n_features = w_train.shape[1], w_train.shape[2]
    inputs = _windows_input(keras, window, n_features)
    past, current = _split_window(keras, inputs, window)
    residual = _forecast_residual(keras, past, current, n_features, spec, "pe")
    model = keras.Model(inputs, residual, name="lstm_forecaster")
    model.compile(optimizer=keras.optimizers.Adam(spec.learning_rate), loss="mse")
    history = _fit(keras, model, w_train, _zeros(w_train, n_features), w_val, _zeros(w_val, n_features), spec,
                   spec.epochs, "train lstm", progress)
    return Trained(model=model, history=history, parameters=int(model.count_params()))


def train_ae_lstm(w_train, w_val, spec: DetectorSpec, seed: int, progress: Progress | None = None) -> Trained:
    """Dense AE over the flattened window plus an LSTM forecaster, trained jointly with equal loss
    weights; deploys [window reconstruction residual, forecast residual]."""
    tf, keras = import_tf()
    seed_everything(seed)
    window, n_features = w_train.shape[1], w_train.shape[2]
    inputs = _windows_input(keras, window, n_features)
    flat = keras.layers.Flatten(name="flat_window")(inputs)
    code = _dense_stack(keras, flat, list(spec.hidden) + [spec.latent], spec.activation, 0.0, "encoder")
    decoded = _dense_stack(keras, code, list(reversed(spec.hidden)), spec.activation, 0.0, "decoder")
    reconstruction = keras.layers.Dense(window * n_features, name="reconstruction")(decoded)
    re_residual = keras.layers.Subtract(name="re_residual")([flat, reconstruction])
    past, current = _split_window(keras, inputs, window)
    pe_residual = _forecast_residual(keras, past, current, n_features, spec, "pe")
    training = keras.Model(inputs, [re_residual, pe_residual], name="ae_lstm_training")
    training.compile(optimizer=keras.optimizers.Adam(spec.learning_rate), loss=["mse", "mse"])
    targets = [_zeros(w_train, window * n_features), _zeros(w_train, n_features)]
    val_targets = [_zeros(w_val, window * n_features), _zeros(w_val, n_features)]
    history = _fit(keras, training, w_train, targets, w_val, val_targets, spec, spec.epochs, "train ae_lstm",
                   progress)
    both = keras.layers.Concatenate(name="residuals")([re_residual, pe_residual])
    deployable = keras.Model(inputs, both, name="ae_lstm")
    return Trained(model=deployable, history=history, parameters=int(training.count_params()))


def train_cnn_lstm_attn(w_train, y_train, w_val, y_val, n_classes: int, spec: DetectorSpec, seed: int,
                        mode: str, progress: Progress | None = None) -> Trained:
    """Conv1D + LSTM + attention: a softmax classifier (``mode='classifier'``, every window) or a
    forecaster of the current sample (``mode='forecaster'``, normal windows)."""
    tf, keras = import_tf()
    seed_everything(seed)
    window, n_features = w_train.shape[1], w_train.shape[2]
    inputs = _windows_input(keras, window, n_features)
    if mode == "classifier":
        context = _attention_encoder(keras, inputs, spec)
        head = _dense_stack(keras, context, spec.classifier, spec.activation, 0.0, "head")
        outputs = keras.layers.Dense(n_classes, activation="softmax", name="probabilities")(head)
        model = keras.Model(inputs, outputs, name="cnn_lstm_attn")
        model.compile(optimizer=keras.optimizers.Adam(spec.learning_rate),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        history = _fit(keras, model, w_train, y_train, w_val, y_val, spec, spec.epochs, "train cnn_lstm_attn",
                       progress)
    else:
        past, current = _split_window(keras, inputs, window)
        context = _attention_encoder(keras, past, spec)
        head = _dense_stack(keras, context, spec.hidden, spec.activation, 0.0, "head")
        forecast = keras.layers.Dense(n_features, name="forecast")(head)
        residual = keras.layers.Subtract(name="residual")([current, forecast])
        model = keras.Model(inputs, residual, name="cnn_lstm_attn_forecaster")
        model.compile(optimizer=keras.optimizers.Adam(spec.learning_rate), loss="mse")
        history = _fit(keras, model, w_train, _zeros(w_train, n_features), w_val, _zeros(w_val, n_features), spec,
                       spec.epochs, "train cnn_lstm_attn", progress)
    return Trained(model=model, history=history, parameters=int(model.count_params()))
