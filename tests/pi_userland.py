"""The emulated Raspberry Pi userland (../shared/tools/pi-emu): find or build it, install
tinyad's run side into its two venvs offline, and run programs inside it.

The userland is Debian 12 arm64 with Python 3.11 under qemu-user: ``/opt/litert`` has
ai-edge-litert, ``/opt/tfl`` has tflite-runtime 2.14 with numpy<2. nsrun bind-mounts the
host's /dev into it, so a pseudo-terminal the host opens is a serial port the emulated
device agent can open by the same path.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SETUP = REPO.parent / "shared" / "tools" / "pi-emu" / "setup.sh"
VENVS = {"ai_edge_litert": "/opt/litert", "tflite_runtime": "/opt/tfl"}
STAMP = "opt/tinyad-run-side.sha256"
PATH = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"


def userland_path() -> Path:
    return Path(os.environ.get("TINYAD_PI_EMU", "/tmp/pi-emu"))


def complete(e: Path) -> bool:
    return all((e / "root" / venv.lstrip("/") / "bin" / "python").exists() for venv in VENVS.values()) \
        and (e / "bin" / "nsrun").exists()


def why_not_buildable() -> str | None:
    """A reason this machine cannot build the userland, or None."""
    if os.geteuid() != 0:
        return "the emulated Pi needs root (user namespaces with an identity map)"
    major, minor = (int(x) for x in platform.release().split(".")[:2])
    if (major, minor) < (6, 7):
        return f"the emulated Pi needs Linux >= 6.7 (a binfmt_misc per user namespace), this is {platform.release()}"
    if not SETUP.is_file():
        return f"{SETUP} is missing"
    return None


def build(e: Path, log: Path) -> None:
    """Run setup.sh (about 6 minutes); raises with the log's tail on failure."""
    with open(log, "w") as handle:
        done = subprocess.run(["bash", str(SETUP)], env={**os.environ, "E": str(e)}, stdout=handle,
                              stderr=subprocess.STDOUT, timeout=1800)
    if done.returncode != 0 or not complete(e):
        tail = log.read_text()[-2000:]
        raise RuntimeError(f"pi-emu setup.sh failed (exit {done.returncode}):\n{tail}")


def run_side_digest() -> str:
    """What the installed run side must match: the package sources and pyproject."""
    digest = hashlib.sha256()
    for path in sorted((REPO / "firmware_host").rglob("*")) + [REPO / "pyproject.toml"]:
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(path.relative_to(REPO).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def install_run_side(e: Path, work: Path) -> None:
    """Install this checkout's run side into both venvs, offline, unless already current."""
    digest = run_side_digest()
    stamp = e / "root" / STAMP
    if stamp.is_file() and stamp.read_text().strip() == digest:
        return
    wheels = work / "wheels"
    if wheels.exists():
        shutil.rmtree(wheels)
    wheels.mkdir(parents=True)
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(REPO)], check=True,
                   timeout=600, capture_output=True)
    subprocess.run([*pip, "download", "--no-deps", "--only-binary=:all:", "-d", str(wheels), "click"], check=True,
                   timeout=600, capture_output=True)
    inside = e / "root" / "opt" / "wheels" / "tinyad"
    if inside.exists():
        shutil.rmtree(inside)
    shutil.copytree(wheels, inside)
    def install(name: str, venv: str) -> None:
        links = f"--find-links /opt/wheels/tinyad --find-links /opt/wheels/{'litert' if name == 'ai_edge_litert' else 'tfl'}"
        # tflite-runtime's venv keeps its numpy<2 and has no ai-edge-litert: install tinyad alone there.
        deps = "" if name == "ai_edge_litert" else "--no-deps"
        # tinyad was just uninstalled, so this installs the new wheel; what it needs and setup.sh already
        # installed stays (no --force-reinstall: reinstalling numpy and ai-edge-litert under qemu took ~50 s).
        script = (f"{venv}/bin/pip uninstall -q -y tinyad >/dev/null 2>&1; "
                  f"{venv}/bin/pip install -q --no-index {links} {deps} --no-cache-dir tinyad click")
        done = chroot(e, ["sh", "-c", script], timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"installing tinyad into {venv} failed:\n{done.stdout[-1500:]}{done.stderr[-1500:]}")

    # The two venvs are independent: both emulated pips at once (one per core).
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(VENVS)) as pool:
        for done in [pool.submit(install, name, venv) for name, venv in VENVS.items()]:
            done.result()
    stamp.write_text(digest + "\n")


def _command(e: Path, argv: list[str], cpu: str, env: dict | None) -> list[str]:
    extra = [f"{k}={v}" for k, v in (env or {}).items()]
    shell = "ulimit -c 0; exec " + " ".join(_quote(a) for a in argv)
    return [str(e / "bin" / "nsrun"), "chroot", str(e / "root"), "/usr/bin/env", "-i", PATH, "HOME=/root",
            f"QEMU_CPU={cpu}", *extra, "sh", "-c", shell]


def _quote(arg: str) -> str:
    import shlex
    return shlex.quote(arg)


def chroot(e: Path, argv: list[str], *, cpu: str = "cortex-a72", env: dict | None = None,
           timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``argv`` inside the userland (QEMU_CPU=cpu) and wait for it."""
    if argv[:2] == ["sh", "-c"]:
        extra = [f"{k}={v}" for k, v in (env or {}).items()]
        command = [str(e / "bin" / "nsrun"), "chroot", str(e / "root"), "/usr/bin/env", "-i", PATH, "HOME=/root",
                   f"QEMU_CPU={cpu}", *extra, "sh", "-c", "ulimit -c 0; " + argv[2]]
    else:
        command = _command(e, argv, cpu, env)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "QEMU_CPU": cpu})


def start(e: Path, argv: list[str], log: Path, *, cpu: str = "cortex-a72", env: dict | None = None
          ) -> subprocess.Popen:
    """Start ``argv`` inside the userland in the background; stdout and stderr go to ``log``."""
    handle = open(log, "w")
    return subprocess.Popen(_command(e, argv, cpu, env), stdout=handle, stderr=subprocess.STDOUT,
                            env={**os.environ, "QEMU_CPU": cpu}, start_new_session=True)


def wait_for_text(log: Path, text: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text():
            return
        if proc.poll() is not None:
            raise RuntimeError(f"the emulated process exited ({proc.returncode}):\n{log.read_text()[-2000:]}")
        time.sleep(0.2)
    raise TimeoutError(f"no {text!r} from the emulated process in {timeout:.0f} s:\n{log.read_text()[-2000:]}")


def stop(proc: subprocess.Popen) -> None:
    """Stop a process started with ``start``: signal its whole group (nsrun, unshare), and
    unshare's --kill-child takes the emulated processes in its pid namespace with it."""
    import signal

    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
