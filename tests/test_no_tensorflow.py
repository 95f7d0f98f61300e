"""The run side must install and run on a Pi: no TensorFlow, Keras, XGBoost, pandas or sklearn."""

import ast
import subprocess
import sys
from pathlib import Path

FIRMWARE = Path(__file__).resolve().parents[1] / "firmware_host"
FORBIDDEN = {"tensorflow", "keras", "tf_keras", "xgboost", "sklearn", "pandas", "toolchain"}


def _imported_modules(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0], node.lineno


def test_no_build_side_imports_in_firmware_host():
    offenders = [f"{path.name}:{line} imports {module}"
                 for path in FIRMWARE.rglob("*.py") for module, line in _imported_modules(path)
                 if module in FORBIDDEN]
    assert not offenders, offenders


def test_only_the_interpreter_loader_names_tensorflow():
    # tensorflow.lite is the documented last-resort interpreter; only interpreter.py may name it.
    mentions = [p.name for p in FIRMWARE.rglob("*.py") if '"tensorflow' in p.read_text() and p.name != "interpreter.py"]
    assert mentions == []


def test_running_a_bundle_does_not_load_tensorflow(built_bundle, tmp_path):
    csv_path = Path(__file__).resolve().parents[1] / "calibration_data" / "sdn_ddos_slice.csv.gz"
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from firmware_host.cli import main\n"
        f"r = CliRunner().invoke(main, ['run', {str(built_bundle)!r}, '--input', {str(csv_path)!r}, "
        f"'--output', {str(tmp_path / 'v.csv')!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'tensorflow', 'keras', 'tf_keras', 'xgboost', 'sklearn', 'pandas'})\n")
    _passes_in_a_fresh_process(code, "heavy")


def test_the_device_agent_loads_numpy_pyserial_and_the_interpreter_only(built_bundle):
    code = (
        "import sys\n"
        "from firmware_host.link.agent import DeviceAgent\n"
        "from firmware_host.link.transport import SerialTransport\n"
        "import serial\n"
        f"agent = DeviceAgent({str(built_bundle)!r})\n"
        "assert agent.ready, agent.status\n"
        "loaded = {m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names)\n"
        "extra = sorted(m for m in loaded if not m.startswith('_') and m not in "
        "{'firmware_host', 'numpy', 'serial', 'ai_edge_litert', 'tflite_runtime'})\n")
    _passes_in_a_fresh_process(code, "extra")


def _passes_in_a_fresh_process(code: str, offenders: str) -> None:
    """Run ``code`` in a new interpreter; it fails if the list named ``offenders`` is not empty."""
    code += f"print({offenders})\nsys.exit(1 if {offenders} else 0)\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
