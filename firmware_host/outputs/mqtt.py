"""Verdicts to an MQTT broker at QoS 1 (paho-mqtt, imported only when ``--mqtt`` is used).

``MqttSink`` does the publishing. ``tinyad stream`` and the device agent run it in process;
``tinyad run`` runs it in a forked child process, on another core (``publisher.py``).

Topics, for ``mqtt://host:port/<prefix>`` and a device id:

- ``<prefix>/<id>/verdicts``: one message per block of verdicts, its payload one JSON object
  ``{"model_sha256": ..., "verdicts": [record, ...]}`` (``record.block_message``: the records of
  ``--jsonl`` without their hash, which the block carries once), so a bulk file of 100,000 rows
  is about a hundred publishes, and a live row one publish of a one-record block;
- ``<prefix>/<id>/status``: a retained JSON object, ``"state": "online"`` with the model hash,
  the self-test result and the interpreter, republished on every (re)connection; the broker's
  last will for this client is the same object with ``"state": "offline"`` (retained), and a
  clean exit publishes that too.

Nothing published is lost while the process lives: paho keeps every QoS 1 message until the
broker's PUBACK and sends the unacknowledged ones again after a reconnection (with exponential
backoff, ``RECONNECT_DELAYS``). ``close`` waits for the last PUBACK and fails, naming how many
messages and rows are unacknowledged, if they do not all come within its timeout. A message sent
again after a reconnection may reach a subscriber twice (at-least-once): ``row`` tells them apart.
"""

from __future__ import annotations

import collections
import importlib
import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable
from urllib.parse import unquote, urlsplit

from ..errors import OutputError

DEFAULT_PORT = 1883
DEFAULT_PREFIX = "tinyad"
KEEPALIVE = 30                  # seconds between pings while idle; a dead client's will fires ~1.5x later
RECONNECT_DELAYS = (1, 30)      # seconds: the first reconnect attempt, doubling up to the second
CONNECT_TIMEOUT = 10.0          # seconds ``wait_connected`` waits for the broker's CONNACK
CLOSE_TIMEOUT = 30.0            # seconds ``close`` waits for the last PUBACKs
FAILED_CLOSE_TIMEOUT = 5.0      # the same after a run that failed anyway: do not hold up its error
MAX_INFLIGHT = 100              # QoS 1 messages sent and not yet acknowledged; more wait in paho's queue
ACK_POLL = 0.001                # seconds between looks at the PUBACKs while ``close`` waits for them
# Mosquitto leaves Nagle on by default (set_tcp_nodelay false): a PUBACK waits in the broker until
# our TCP ACK of the one before, and Linux delays that ACK by up to ~40 ms when we have nothing to
# send, as at the end of a run. TCP_QUICKACK sends a delayed ACK at once (Linux only; else None).
TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)
INSTALL_HINT = "pip install 'tinyad[mqtt]'"

Log = Callable[[str], None]


def _quiet(message: str) -> None:
    pass


@dataclass(frozen=True)
class MqttTarget:
    host: str
    port: int
    prefix: str
    username: str | None = None
    password: str | None = None

    @property
    def where(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


def parse_url(url: str) -> MqttTarget:
    """``mqtt://[user[:password]@]host[:port][/prefix]`` -> its parts (port 1883 and prefix
    ``tinyad`` by default). Raises OutputError for anything else."""
    parts = urlsplit(url)
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise OutputError(f"--mqtt {url}: the port is not a number from 1 to 65535") from None
    if parts.scheme != "mqtt" or not parts.hostname or parts.query or parts.fragment:
        raise OutputError(f"--mqtt {url}: expected mqtt://host[:port][/prefix], e.g. mqtt://localhost:1883/tinyad")
    prefix = parts.path.strip("/") or DEFAULT_PREFIX
    if any(c in prefix for c in "+#") or "//" in prefix:
        raise OutputError(f"--mqtt {url}: the topic prefix {prefix!r} may not hold +, # or an empty level")
    return MqttTarget(parts.hostname, port, prefix, unquote(parts.username) if parts.username else None,
                      unquote(parts.password) if parts.password else None)


def default_device_id() -> str:
    """This machine's host name: the topic level that tells devices apart."""
    return socket.gethostname().split(".")[0] or "tinyad"


def check_device_id(device_id: str) -> str:
    if not device_id or any(c in device_id for c in "+#/"):
        raise OutputError(f"--mqtt-id {device_id!r}: must be non-empty, without /, + or #")
    return device_id


def preload() -> None:
    """Start importing paho-mqtt in the background (~40 ms, most of it urllib and ssl), so that
    it overlaps the model's loading and self-test; ``_paho`` then finds it imported (or waits
    on the import lock for it). A missing package is reported by ``_paho``, not here."""
    def load():
        try:
            importlib.import_module("paho.mqtt.client")
        except Exception:         # missing, or an import-lock clash: _paho imports again and reports
            pass
    threading.Thread(target=load, name="tinyad-paho-import", daemon=True).start()


def _paho():
    try:
        import paho.mqtt.client as client
    except ImportError:
        raise OutputError(f"--mqtt needs paho-mqtt, which is not installed: {INSTALL_HINT}") from None
    return client


class MqttSink:
    """Publishes blocks of verdict JSON lines at QoS 1, and a retained status with a last will.

    ``status`` is the device's description (model hash, self-test, interpreter); ``"state"`` is
    added. With ``wait=True`` the constructor returns once the broker has accepted the
    connection (an OutputError after ``connect_timeout`` s); with ``wait=False`` (the device
    agent) it connects in the background and keeps trying, the verdicts queued meanwhile
    (``max_queued`` messages at most; 0 = no limit)."""

    shape = "block"                 # one JSON object a block (``record.block_message``)

    def __init__(self, url: str, device_id: str, status: dict, *, wait: bool = True,
                 connect_timeout: float = CONNECT_TIMEOUT, max_queued: int = 0, log: Log = _quiet):
        mqtt = _paho()
        self.target = parse_url(url)
        self.device_id = check_device_id(device_id)
        base = f"{self.target.prefix}/{self.device_id}"
        self.topic, self.status_topic = f"{base}/verdicts", f"{base}/status"
        self.log = log
        self.status = {"device": self.device_id, **status}
        self.pending: dict[int, tuple[int, int]] = {}          # mid -> (first row, rows), until its PUBACK
        self.acked = collections.deque()                        # mids the network thread saw acknowledged
        self.published = 0
        self.dropped = 0
        self.connected = threading.Event()
        self.refused: str | None = None
        self.queue_full = mqtt.MQTT_ERR_QUEUE_SIZE
        self.background = not wait
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"tinyad-{self.device_id}-{os.getpid()}", clean_session=True)
        if self.target.username:
            self.client.username_pw_set(self.target.username, self.target.password)
        self.client.max_inflight_messages_set(MAX_INFLIGHT)
        self.client.max_queued_messages_set(max_queued)
        self.client.reconnect_delay_set(*RECONNECT_DELAYS)
        self.client.will_set(self.status_topic, self._status("offline"), qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        try:
            if wait:
                self.client.connect(self.target.host, self.target.port, KEEPALIVE)
            else:
                self.client.connect_async(self.target.host, self.target.port, KEEPALIVE)
        except (OSError, ValueError) as exc:
            raise OutputError(f"cannot reach the MQTT broker at {self.target.where} ({_reason(exc)})") from None
        self.client.loop_start()
        if wait:
            self._wait_connected(connect_timeout)

    def _status(self, state: str) -> str:
        return json.dumps({**self.status, "state": state, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})

    def set_status(self, status: dict) -> None:
        """Describe a new model (the device agent after a push): republish the retained status."""
        self.status = {"device": self.device_id, **status}
        self.client.will_set(self.status_topic, self._status("offline"), qos=1, retain=True)   # next connection
        if self.connected.is_set() and not self.refused:
            self.client.publish(self.status_topic, self._status("online"), qos=1, retain=True)

    def _wait_connected(self, timeout: float) -> None:
        if not self.connected.wait(timeout) or self.refused:
            self._stop()
            why = self.refused or f"no answer within {timeout:g} s"
            raise OutputError(f"the MQTT broker at {self.target.where} did not accept the connection ({why})")

    # -- paho callbacks: they run in paho's network thread (some under its locks): keep them short --
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.refused = str(reason_code)
            if self.background:              # else the constructor reports it, and gives up
                self.log(f"the MQTT broker at {self.target.where} refused the connection ({reason_code}); "
                         "trying again")
            self.connected.set()
            return
        self.refused = None
        # Every (re)connection says "online" again: a will fired while we were cut off said "offline".
        client.publish(self.status_topic, self._status("online"), qos=1, retain=True)
        self.log(f"connected to {self.target.where}, publishing on {self.topic}")
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure or reason_code.value != 0:
            self.log(f"lost the MQTT broker at {self.target.where} ({reason_code}); reconnecting, "
                     "unacknowledged verdicts will be sent again")

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self.acked.append(mid)

    # -- the sink ----------------------------------------------------------------------------
    def send(self, text: str, rows: int, first_row: int) -> None:
        """Publish one block's message (``rows`` verdicts, the first for row ``first_row``) at QoS 1,
        queued while the broker is away."""
        self._drain()
        if not rows:
            return
        info = self.client.publish(self.topic, text.encode("utf-8"), qos=1)
        if info.rc == self.queue_full:
            self.dropped += rows
            self.log(f"MQTT queue full while {self.target.where} is away: dropped the verdicts of rows "
                     f"{first_row}-{first_row + rows - 1}")
            return
        self.pending[info.mid] = (first_row, rows)
        self.published += 1

    def _drain(self) -> None:
        while self.acked:
            self.pending.pop(self.acked.popleft(), None)

    def unacknowledged(self) -> tuple[int, int]:
        """(messages, rows) published and not yet acknowledged by the broker."""
        self._drain()
        return len(self.pending), sum(rows for _, rows in self.pending.values())

    def close(self, complete: bool = True, timeout: float = CLOSE_TIMEOUT) -> None:
        """Wait up to ``timeout`` s for every PUBACK, say "offline", disconnect. Raises OutputError
        naming what the broker has not acknowledged (those verdicts may be lost). After a failed
        run (``complete`` False: a bad row, Ctrl-C) it waits at most ``FAILED_CLOSE_TIMEOUT`` s."""
        if not complete:
            timeout = min(timeout, FAILED_CLOSE_TIMEOUT)
        deadline = time.monotonic() + timeout
        while self.unacknowledged()[0] and time.monotonic() < deadline:
            self._ack_now()
            time.sleep(ACK_POLL)
        messages, rows = self.unacknowledged()
        if not messages:
            info = self.client.publish(self.status_topic, self._status("offline"), qos=1, retain=True)
            end = time.monotonic() + min(2.0, timeout)
            while info.mid not in self.acked and time.monotonic() < end:
                self._ack_now()
                time.sleep(ACK_POLL)
        self._stop()
        if messages:
            first = min(first for first, _ in self.pending.values())
            raise OutputError(f"MQTT: {messages} of {self.published} messages ({rows} verdicts, from row {first}) "
                              f"were not acknowledged by {self.target.where} within {timeout:g} s; "
                              "the broker may not have them")

    def _ack_now(self) -> None:
        """Acknowledge (TCP) what the broker has sent so far now, so that it sends its next PUBACKs
        (see ``TCP_QUICKACK``)."""
        sock = self.client.socket()
        if TCP_QUICKACK is None or sock is None:
            return
        try:
            sock.setsockopt(socket.IPPROTO_TCP, TCP_QUICKACK, 1)
        except OSError:             # closed under us by the network thread: nothing to acknowledge
            pass

    def _stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _reason(exc: Exception) -> str:
    if isinstance(exc, socket.gaierror):
        return f"unknown host: {exc.strerror or exc}"
    return getattr(exc, "strerror", None) or str(exc)
