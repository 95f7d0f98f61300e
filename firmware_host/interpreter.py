"""The one TFLite interpreter loader.

Order: ``ai_edge_litert`` (the maintained runtime, with aarch64 wheels), then
``tflite_runtime`` (stopped at 2.14, needs numpy<2), then ``tensorflow.lite`` as a
last resort on a build machine. ``TINYAD_INTERPRETER`` (one of those three names)
forces a choice, which tests and the emulated-Pi checks use.

Kernels: the builtin int8 kernels by default. ai_edge_litert's default XNNPACK delegate
computes some int8 rows differently (up to 19 LSB on 1.5 % of the default bundle's rows,
measured here), while the builtin kernels of ai_edge_litert 2.3 and tflite_runtime 2.14
agree exactly; under QEMU's ``max`` CPU, XNNPACK int8 was seen to be plain wrong. A
detector must give the same verdict on the build host and on the device, so determinism
wins over the 1-3 microseconds XNNPACK saves on these models. ``TINYAD_KERNELS=xnnpack``
opts in; the golden-vector self-test then checks that choice like any other.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

from .errors import InterpreterUnavailable

# (name, module to import, attribute path to the namespace holding Interpreter, distribution for the version)
CANDIDATES = (
    ("ai_edge_litert", "ai_edge_litert.interpreter", "", "ai-edge-litert"),
    ("tflite_runtime", "tflite_runtime.interpreter", "", "tflite-runtime"),
    # The package module tensorflow.lite lacks Interpreter; the public API attribute tf.lite has it.
    ("tensorflow", "tensorflow", "lite", "tensorflow"),
)
INSTALL_HINT = "pip install ai-edge-litert   (or: pip install tflite-runtime 'numpy<2')"
KERNELS = ("builtin", "xnnpack")


def kernels_from_env() -> str:
    kernels = os.environ.get("TINYAD_KERNELS", "builtin") or "builtin"
    if kernels not in KERNELS:
        raise InterpreterUnavailable(f"TINYAD_KERNELS={kernels!r}; choose one of {', '.join(KERNELS)}")
    return kernels


@dataclass(frozen=True)
class Runtime:
    """An importable interpreter implementation."""

    name: str
    version: str
    module: object
    kernels: str = "builtin"

    def open(self, model_path: str | os.PathLike | None = None, *, model_content: bytes | None = None,
             num_threads: int = 1, kernels: str | None = None):
        """An allocated interpreter for one model file (or its bytes), with this runtime's kernels
        (or ``kernels``: "builtin", or "xnnpack" for the runtime's default delegates)."""
        kwargs = {"num_threads": num_threads}
        if (kernels or self.kernels) == "builtin":
            kwargs["experimental_op_resolver_type"] = _resolver_types(self.module).BUILTIN_WITHOUT_DEFAULT_DELEGATES
        if model_content is not None:
            kwargs["model_content"] = model_content
        else:
            kwargs["model_path"] = os.fspath(model_path)
        interpreter = self.module.Interpreter(**kwargs)
        interpreter.allocate_tensors()
        return interpreter

    @property
    def batches(self) -> bool:
        """Whether a model whose input was resized to a batch of rows may be invoked here.

        tflite_runtime 2.14 on aarch64 (emulated Raspberry Pi 4, builtin kernels) dies with a
        segmentation fault on the first invoke of a resized int8 dense model, which no Python code
        can catch; so that legacy fallback runtime always goes one row per invoke."""
        return self.name != "tflite_runtime"

    def describe(self) -> str:
        return f"{self.name} {self.version} ({self.kernels} kernels)"


def _resolver_types(module):
    """The OpResolverType enum: beside Interpreter in the LiteRT runtimes, under tf.lite.experimental in TF."""
    found = getattr(module, "OpResolverType", None) or getattr(getattr(module, "experimental", None),
                                                               "OpResolverType", None)
    if found is None:
        raise AttributeError("this interpreter cannot select its builtin kernels (no OpResolverType)")
    return found


def _version(distribution: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


def _try_import(name: str, module_name: str, attribute: str, distribution: str, kernels: str):
    try:
        module = importlib.import_module(module_name)
        if attribute:
            module = getattr(module, attribute)
        module.Interpreter  # noqa: B018 - fail here, not at first use
        if kernels == "builtin":
            _resolver_types(module)
    except (ImportError, AttributeError, RuntimeError) as exc:
        # tflite_runtime built for numpy 1 fails here under numpy 2 ("_ARRAY_API not found").
        return None, f"{name}: {exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return Runtime(name, _version(distribution), module, kernels), None


_cached: dict[str, Runtime] = {}


def load_runtime(preferred: str | None = None) -> Runtime:
    """The first interpreter that imports, in the documented order (or ``preferred``)."""
    preferred = preferred or os.environ.get("TINYAD_INTERPRETER") or None
    kernels = kernels_from_env()
    key = f"{preferred or 'auto'}/{kernels}"
    if key in _cached:
        return _cached[key]
    names = [c[0] for c in CANDIDATES]
    if preferred and preferred not in names:
        raise InterpreterUnavailable(f"unknown interpreter {preferred!r}; choose one of {', '.join(names)}")
    failures = []
    for name, module_name, attribute, distribution in CANDIDATES:
        if preferred and name != preferred:
            continue
        runtime, failure = _try_import(name, module_name, attribute, distribution, kernels)
        if runtime is not None:
            _cached[key] = runtime
            return runtime
        failures.append(failure)
    raise InterpreterUnavailable(
        "no TFLite interpreter could be loaded (" + "; ".join(failures) + "). Install one: " + INSTALL_HINT)
