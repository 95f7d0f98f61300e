"""``tinyad run --mqtt`` publishes from a forked child process, on a core of its own.

Formatting a bulk file's verdicts as JSON and handing them to paho-mqtt costs about as much
Python time per row as parsing the row, and paho's network thread competes with the scoring
loop for the interpreter lock. So ``run`` forks before it loads the model (``fork_publisher``):

- the child imports paho-mqtt while the parent loads and self-tests the model;
- ``ForkedMqttSink``, the parent's sink, sends the child each block's verdict arrays (pickled,
  over a pipe), a few microseconds a block;
- the child formats them (``record.block_message``) and publishes them through an
  ``mqtt.MqttSink``, which does the QoS 1 work: PUBACKs, reconnection with backoff, re-sending.

Answers come back over a second pipe, twice: to ``open`` (the broker accepted the connection,
or why not) and to ``close`` (every verdict acknowledged, or which were not). Each becomes the
same ``OutputError`` the in-process sink raises. The child ignores SIGINT (Ctrl-C reaches the
whole process group; the parent then closes it as after a failed run). A parent that dies
leaves the child an end of file: it closes its sink as after a failed run (the status says
"offline") and exits. The child never writes to stdout, which may carry the verdict CSV.

Where ``os.fork`` does not exist, or this process may use only one CPU (``os.sched_getaffinity``),
``fork_publisher`` returns None and ``run`` publishes in process (``MqttSink``): a second process
on the same core would only add its own costs. ``stream`` and the device agent always publish in
process: they are paced by a serial line, not by the formatting.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import select
import signal
import struct
import sys
import time
from typing import Callable

from ..errors import OutputError
from .mqtt import CLOSE_TIMEOUT, CONNECT_TIMEOUT, FAILED_CLOSE_TIMEOUT, check_device_id, parse_url

SIZE = struct.Struct("<I")          # each message: its pickle's length, then the pickle
PIPE_BYTES = 1 << 20                # the parent's pipe to the child (Linux may refuse: then the default)
IMPORT_ALLOWANCE = 10.0             # seconds the child may take to import paho-mqtt, on top of a wait


class Publisher:
    """The parent's handle on a forked publisher: its pid and the two pipes."""

    def __init__(self, pid: int, to_child: int, from_child: int):
        self.pid = pid
        self.outbox = os.fdopen(to_child, "wb")
        self.inbox = from_child
        self.done = False

    def post(self, message: tuple) -> None:
        """Send a message; OutputError if the child is gone (with its reason, when it gave one)."""
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self.outbox.write(SIZE.pack(len(data)))
            self.outbox.write(data)
            self.outbox.flush()
        except (BrokenPipeError, ValueError):       # ValueError: the pipe was closed here already
            answer = self.answer(timeout=1.0)
            self.finish(kill=True)
            raise OutputError(answer[1] if answer and answer[0] == "error" else self._gone()) from None

    def answer(self, timeout: float) -> tuple | None:
        """The child's next answer, or None if it closed its pipe or gave none within ``timeout`` s."""
        deadline = time.monotonic() + timeout
        data = b""
        need = SIZE.size
        size = None
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.inbox], [], [], left)[0]:
                return None
            chunk = os.read(self.inbox, need - len(data))
            if not chunk:
                return None
            data += chunk
            if len(data) < need:
                continue
            if size is None:
                size = SIZE.unpack(data)[0]
                data, need = b"", size
                if need:
                    continue
            return pickle.loads(data)

    def request(self, message: tuple, timeout: float) -> None:
        """Send a message that the child answers: return on "ok", raise OutputError on its error."""
        self.post(message)
        answer = self.answer(timeout)
        if answer is None:
            self.finish(kill=True)
            raise OutputError(self._gone())
        if answer[0] == "error":
            self.finish(kill=False)
            raise OutputError(answer[1])

    def finish(self, kill: bool = False) -> None:
        """Close the pipes and reap the child (killing it first if ``kill``)."""
        if self.done:
            return
        self.done = True
        with contextlib.suppress(OSError, ValueError):
            self.outbox.close()                    # the child reads an end of file
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        os.close(self.inbox)

    def _gone(self) -> str:
        return f"MQTT: the publishing process (pid {self.pid}) stopped without an answer"


def fork_publisher(url: str, device_id: str, log: Callable[[str], None]) -> Publisher | None:
    """Fork the publishing child for ``--mqtt url`` (None where ``os.fork`` does not exist or only
    one CPU is usable). The URL and id are checked here, before anything starts: an OutputError
    names what is wrong."""
    parse_url(url)
    check_device_id(device_id)
    if not hasattr(os, "fork") or usable_cpus() < 2:
        return None
    down_read, down_write = os.pipe()
    up_read, up_write = os.pipe()
    with contextlib.suppress(AttributeError, OSError):
        import fcntl
        fcntl.fcntl(down_write, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    for stream in (sys.stdout, sys.stderr):        # else the child could write their buffers again
        with contextlib.suppress(Exception):
            stream.flush()
    pid = os.fork()
    if pid == 0:                                   # the child: never returns
        status = 1
        try:
            os.close(down_write)
            os.close(up_read)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            _serve(down_read, up_write, url, device_id, log)
            status = 0
        finally:
            os._exit(status)
    os.close(down_read)
    os.close(up_write)
    return Publisher(pid, down_write, up_read)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, e.g. ``taskset`` or a cgroup cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class ForkedMqttSink:
    """The ``VerdictOutputs`` sink for a forked publisher: raw verdicts in, pickled to the child,
    which formats and publishes them. The constructor returns once the broker has accepted the
    child's connection (OutputError otherwise, as ``MqttSink``)."""

    shape = "verdicts"              # the block's (verdicts, times), formatted by the child

    def __init__(self, publisher: Publisher, manifest, status: dict):
        self.publisher = publisher
        publisher.request(("open", manifest, status), CONNECT_TIMEOUT + IMPORT_ALLOWANCE)

    def send(self, payload: tuple, rows: int, first_row: int) -> None:
        verdicts, times = payload
        if rows:
            # Without the texts other writers formatted: the child formats its own.
            self.publisher.post(("block", first_row, dataclasses.replace(verdicts, texts={}), times))

    def close(self, complete: bool = True) -> None:
        """As ``MqttSink.close``, in the child: wait for every PUBACK, say "offline", disconnect."""
        if self.publisher.done:
            return
        timeout = CLOSE_TIMEOUT if complete else FAILED_CLOSE_TIMEOUT
        try:
            self.publisher.request(("close", complete), timeout + IMPORT_ALLOWANCE)
        finally:
            self.publisher.finish()


# -- the child ------------------------------------------------------------------------------
def _serve(inbox: int, outbox: int, url: str, device_id: str, log: Callable[[str], None]) -> None:
    """Publish what the parent sends until it says "close" or goes away."""
    from .mqtt import MqttSink, _paho
    from .record import block_message

    reader = os.fdopen(inbox, "rb")

    def answer(message: tuple) -> None:
        data = pickle.dumps(message)
        with contextlib.suppress(OSError):
            os.write(outbox, SIZE.pack(len(data)) + data)

    try:
        _paho()                     # import it now, while the parent loads the model
    except OutputError:
        pass                        # reported in answer to "open"
    sink = manifest = None
    try:
        while True:
            message = _read(reader)
            if message is None:                    # the parent is gone: close as after a failed run
                if sink is not None:
                    with contextlib.suppress(Exception):
                        sink.close(False)
                return
            if message[0] == "open":
                _, manifest, status = message
                try:
                    sink = MqttSink(url, device_id, status, log=log)
                except OutputError as exc:
                    answer(("error", str(exc)))
                    return
                answer(("ok", None))
            elif message[0] == "block":
                _, first_row, verdicts, times = message
                sink.send(block_message(first_row, verdicts, manifest, times), len(verdicts.scores), first_row)
            elif message[0] == "close":
                try:
                    sink.close(message[1])
                except OutputError as exc:
                    answer(("error", str(exc)))
                else:
                    answer(("ok", None))
                return
    except Exception as exc:        # a bug here: say what, so that the parent's error names it
        answer(("error", f"MQTT: the publishing process failed: {type(exc).__name__}: {exc}"))
        if sink is not None:
            with contextlib.suppress(Exception):
                sink.close(False)


def _read(reader) -> tuple | None:
    head = reader.read(SIZE.size)
    if len(head) < SIZE.size:
        return None
    size = SIZE.unpack(head)[0]
    data = reader.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)
