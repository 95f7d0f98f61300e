"""Model definitions and training for each detector kind (Keras 2 via ``tf_keras``).

``train_detector`` returns the *deployable* network (what gets converted): for ``ae``
the autoencoder itself, for ``vae_dnn`` the VAE's encoder mean followed by the DNN
classifier. Training-only parts (the VAE's sampling and decoder) stay behind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from firmware_host.errors import RecipeError

from .keras_env import import_tf, seed_everything
from .recipe import DetectorSpec

Progress = Callable[[str, int, int, dict], None]


@dataclass
class Trained:
    model: object                     # the deployable tf_keras Model
    history: dict = field(default_factory=dict)
    parameters: int = 0


def _activation(keras, name: str):
    """A layer for the recipe's activation. ELU (the VAE+DNN paper's choice) is allowed but the
    TF 2.21 converter leaves it in float, which the int8 op-list gate then rejects."""
    if name == "leaky_relu":
        return keras.layers.LeakyReLU(alpha=0.1)
    if name in ("relu", "relu6", "tanh", "sigmoid", "elu", "gelu", "swish"):
        return keras.layers.Activation(name)
    raise RecipeError(f"[detector] activation {name!r} is not supported; use leaky_relu, relu, relu6, tanh, "
                      "sigmoid, gelu, swish or elu (elu does not quantize to int8)")


def _dense_stack(keras, x, widths, activation: str, dropout: float = 0.0, prefix: str = "dense",
                 noise: float = 0.0):
    """Dense layers with ``activation``; ``noise`` > 0 adds Gaussian noise of that standard
    deviation after each activation while training (Keras drops it at inference and conversion)."""
    for i, width in enumerate(widths):
        x = keras.layers.Dense(width, name=f"{prefix}_{i}")(x)
        x = _activation(keras, activation)(x)
        if noise:
            x = keras.layers.GaussianNoise(noise, name=f"{prefix}_{i}_noise")(x)
        if dropout:
            x = keras.layers.Dropout(dropout)(x)
    return x


class _ProgressCallback:
    """Adapts Keras epoch ends to tinyad's ``progress(stage, done, total, info)`` callback."""

    @staticmethod
    def make(keras, stage: str, epochs: int, progress: Progress | None):
        class Callback(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if progress:
                    progress(stage, epoch + 1, epochs, {k: float(v) for k, v in (logs or {}).items()})
        return Callback()


def _fit(keras, model, x, y, x_val, y_val, spec: DetectorSpec, epochs: int, stage: str, progress, **kw):
    callbacks = [_ProgressCallback.make(keras, stage, epochs, progress),
                 keras.callbacks.EarlyStopping(monitor="val_loss", patience=5, restore_best_weights=True)]
    history = model.fit(x, y, validation_data=(x_val, y_val), epochs=epochs, batch_size=spec.batch_size,
                        verbose=0, shuffle=True, callbacks=callbacks, **kw)
    return {k: [float(v) for v in vals] for k, vals in history.history.items()}


def build_autoencoder(keras, n_features: int, spec: DetectorSpec):
    inputs = keras.Input((n_features,), name="features")
    # train_noise: every int8 activation is rounded to its tensor's step (1/128 for tanh, more
    # before it); trained under noise of that order, the decoder learns weights whose output barely
    # moves under such rounding, so the int8 residual stays close to float's (sdn_ddos_ae).
    x = _dense_stack(keras, inputs, list(spec.hidden) + [spec.latent], spec.activation, spec.dropout, "encoder",
                     spec.train_noise)
    x = _dense_stack(keras, x, list(reversed(spec.hidden)), spec.activation, spec.dropout, "decoder",
                     spec.train_noise)
    outputs = keras.layers.Dense(n_features, name="reconstruction")(x)
    return keras.Model(inputs, outputs, name="autoencoder")


def train_autoencoder(x_train, x_val, spec: DetectorSpec, seed: int, progress: Progress | None = None) -> Trained:
    """A dense AE fitted to reproduce its (scaled) input; x_* hold the rows it may learn from."""
    tf, keras = import_tf()
    seed_everything(seed)
    model = build_autoencoder(keras, x_train.shape[1], spec)
    model.compile(optimizer=keras.optimizers.Adam(spec.learning_rate), loss="mse")
    history = _fit(keras, model, x_train, x_train, x_val, x_val, spec, spec.epochs, "train ae", progress)
    # Deploy the residual x - x_hat, not x_hat: its int8 range is calibrated to normal rows'
    # small errors, so quantization noise stays well below the errors that matter, and an
    # anomaly's residual saturates high instead of being lost inside a +-clip-wide output scale.
    residual = keras.layers.Subtract(name="residual")([model.input, model.output])
    deployable = keras.Model(model.input, residual, name="autoencoder_residual")
    return Trained(model=deployable, history=history, parameters=int(model.count_params()))


def train_vae_dnn(x_train, y_train, x_val, y_val, n_classes: int, spec: DetectorSpec, seed: int,
                  progress: Progress | None = None) -> Trained:
    """VAE on every training row, then a DNN softmax classifier on the frozen encoder's latent mean
    (the SDN DDoS paper's method: XGBoost top-k features, VAE, DNN, Adam). ``y_train`` and ``y_val``:
    class indices, or both (rows, n_classes) target distributions (distillation's soft targets)."""
    tf, keras = import_tf()
    seed_everything(seed)
    n_features = x_train.shape[1]
    inputs = keras.Input((n_features,), name="features")
    h = _dense_stack(keras, inputs, spec.hidden, spec.activation, 0.0, "encoder")
    z_mean = keras.layers.Dense(spec.latent, name="z_mean")(h)
    z_log_var = keras.layers.Dense(spec.latent, name="z_log_var")(h)

    def sample(args):
        mean, log_var = args
        return mean + tf.exp(0.5 * log_var) * tf.random.normal(tf.shape(mean))

    z = keras.layers.Lambda(sample, name="z")([z_mean, z_log_var])
    d = _dense_stack(keras, z, list(reversed(spec.hidden)), spec.activation, 0.0, "decoder")
    reconstruction = keras.layers.Dense(n_features, name="reconstruction")(d)
    vae = keras.Model(inputs, reconstruction, name="vae")
    kl = -0.5 * tf.reduce_mean(tf.reduce_sum(1 + z_log_var - tf.square(z_mean) - tf.exp(z_log_var), axis=1))
    vae.add_loss(spec.beta * kl / n_features)
    vae.compile(optimizer=keras.optimizers.Adam(spec.learning_rate), loss="mse")
    history = {"vae": _fit(keras, vae, x_train, x_train, x_val, x_val, spec, spec.epochs, "train vae", progress)}

    encoder = keras.Model(inputs, z_mean, name="encoder")
    # The paper trains the DNN on the latent mean of a fixed encoder; fine-tuning lets the
    # classifier's loss adjust the encoder too, starting from the VAE's weights.
    encoder.trainable = spec.fine_tune_encoder
    c = _dense_stack(keras, encoder(inputs), spec.classifier, spec.activation, spec.dropout, "classifier")
    probabilities = keras.layers.Dense(n_classes, activation="softmax", name="probabilities")(c)
    classifier = keras.Model(inputs, probabilities, name="vae_dnn")
    # Class indices, or (distillation) one target distribution per row: a teacher's blended probabilities.
    soft = np.ndim(y_train) == 2
    classifier.compile(optimizer=keras.optimizers.Adam(spec.learning_rate),
                       loss="categorical_crossentropy" if soft else "sparse_categorical_crossentropy",
                       metrics=["accuracy"])
    history["dnn"] = _fit(keras, classifier, x_train, y_train, x_val, y_val, spec, spec.classifier_epochs,
                          "train dnn", progress)
    return Trained(model=classifier, history=history, parameters=int(classifier.count_params()))


def predict(model, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Keras float outputs for scaled rows."""
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0))
