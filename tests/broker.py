"""A real Mosquitto broker for the MQTT tests: on a free localhost port, with its own config and
persistence folder, so a QoS 1 session and its queued messages survive ``restart()``.

``Broker(folder).start()`` runs ``/usr/sbin/mosquitto`` (or the one on PATH); ``stop()`` ends it
with SIGTERM, which makes Mosquitto save its persistence file; ``restart(pause)`` stops it, waits
``pause`` seconds with the port closed, and starts it again on the same port.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

MOSQUITTO = "/usr/sbin/mosquitto"
START_TIMEOUT = 10.0          # seconds for the broker to accept connections


def mosquitto_path() -> str | None:
    if os.access(MOSQUITTO, os.X_OK):
        return MOSQUITTO
    return shutil.which("mosquitto")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Broker:
    def __init__(self, folder: Path, port: int | None = None):
        self.executable = mosquitto_path()
        if self.executable is None:
            raise FileNotFoundError("mosquitto is not installed (apt-get install mosquitto)")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.config = self.folder / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            # Started as root, Mosquitto drops to user "mosquitto", which cannot write to a private
            # temp folder: no persistence file, and sessions silently lost on restart. Stay us.
            f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.folder}/\n"
            "autosave_interval 0\n"             # saved on SIGTERM; 0 = never on a timer
            "max_queued_messages 0\n"           # no limit on a persistent session's queue
            "max_inflight_messages 0\n"
            f"log_dest file {self.folder}/mosquitto.log\n"
            "log_type error\nlog_type warning\nlog_type notice\n")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> "Broker":
        self.process = subprocess.Popen([self.executable, "-c", str(self.config)], stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.process.returncode}: "
                                   f"{self.process.stderr.read().decode(errors='replace')} {self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on port {self.port} within {START_TIMEOUT:g} s")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.stderr.close()
        self.process = None

    def restart(self, pause: float = 0.5) -> None:
        self.stop()
        time.sleep(pause)
        self.start()

    @property
    def database(self) -> Path:
        """Mosquitto's persistence file (written when it stops)."""
        return self.folder / "mosquitto.db"

    def log(self) -> str:
        path = self.folder / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __enter__(self) -> "Broker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
