"""tinyad build side: data set in, verified int8 TFLite device bundle out.

May import TensorFlow (through tf_keras) and XGBoost. Heavy imports happen inside
the functions that need them, so that ``tinyad --help`` stays fast.
"""

import importlib.util
import sys

BUILD_MODULES = ("pandas", "sklearn", "xgboost", "tensorflow", "tf_keras")


def missing_build_modules() -> list[str]:
    """Build-side modules that cannot be imported here (checked without importing TensorFlow)."""
    missing = []
    for name in BUILD_MODULES:
        if name in sys.modules:
            if sys.modules[name] is None:
                missing.append(name)
        elif importlib.util.find_spec(name) is None:
            missing.append(name)
    return missing
