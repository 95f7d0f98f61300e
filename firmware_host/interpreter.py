"""The one TFLite interpreter loader.

Order: ``ai_edge_litert`` (the maintained runtime, with aarch64 wheels), then
``tflite_runtime`` (stopped at 2.14, needs numpy<2), then ``tensorflow.lite`` as a
last resort on a build machine. ``TINYAD_INTERPRETER`` (one of those three names)
forces a choice, which tests and the emulated-Pi checks use.
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


@dataclass(frozen=True)
class Runtime:
    """An importable interpreter implementation."""

    name: str
    version: str
    module: object

    def open(self, model_path: str | os.PathLike | None = None, *, model_content: bytes | None = None,
             num_threads: int = 1, delegates: bool = True):
        """An allocated interpreter for one model file (or its bytes).

        ``delegates=False`` uses the builtin kernels only (no XNNPACK), which gives the
        plain op list of the model as converted.
        """
        kwargs = {"num_threads": num_threads}
        if not delegates and hasattr(self.module, "OpResolverType"):
            kwargs["experimental_op_resolver_type"] = self.module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        if model_content is not None:
            kwargs["model_content"] = model_content
        else:
            kwargs["model_path"] = os.fspath(model_path)
        interpreter = self.module.Interpreter(**kwargs)
        interpreter.allocate_tensors()
        return interpreter

    def describe(self) -> str:
        return f"{self.name} {self.version}"


def _version(distribution: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


def _try_import(name: str, module_name: str, attribute: str, distribution: str):
    try:
        module = importlib.import_module(module_name)
        if attribute:
            module = getattr(module, attribute)
        module.Interpreter  # noqa: B018 - fail here, not at first use
    except (ImportError, AttributeError, RuntimeError) as exc:
        # tflite_runtime built for numpy 1 fails here under numpy 2 ("_ARRAY_API not found").
        return None, f"{name}: {exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return Runtime(name, _version(distribution), module), None


_cached: dict[str, Runtime] = {}


def load_runtime(preferred: str | None = None) -> Runtime:
    """The first interpreter that imports, in the documented order (or ``preferred``)."""
    preferred = preferred or os.environ.get("TINYAD_INTERPRETER") or None
    key = preferred or "auto"
    if key in _cached:
        return _cached[key]
    names = [c[0] for c in CANDIDATES]
    if preferred and preferred not in names:
        raise InterpreterUnavailable(f"unknown interpreter {preferred!r}; choose one of {', '.join(names)}")
    failures = []
    for name, module_name, attribute, distribution in CANDIDATES:
        if preferred and name != preferred:
            continue
        runtime, failure = _try_import(name, module_name, attribute, distribution)
        if runtime is not None:
            _cached[key] = runtime
            return runtime
        failures.append(failure)
    raise InterpreterUnavailable(
        "no TFLite interpreter could be loaded (" + "; ".join(failures) + "). Install one: " + INSTALL_HINT)
