"""The host's side of a model push, as a state machine with no I/O (see ``session`` for the events).

Stop-and-wait: MODEL_BEGIN, then each chunk until the device ACKs the next index, then
MODEL_END, answered by CAPS once the device has checked and swapped in the bundle. An ERROR,
or a MODEL_END left unanswered, is checked with a handshake: a new session means the device
restarted and lost the chunks (the push starts over), the same one a real refusal.
"""

from __future__ import annotations

import hashlib
from typing import Callable

from ..errors import LinkError
from . import protocol as p
from .session import GIVE_UP_AFTER, Log, Session, quiet

CHUNK_BYTES = 1024             # model push chunk
INSTALL_TIMEOUT = 30.0         # seconds the device may take to check and swap in a pushed bundle


class PushSession(Session):
    """Pushes ``files`` (name, bytes) in chunks, each re-sent until acknowledged; finished when the
    device reports it serves ``model_sha256``. A device that restarted mid-push (a new session)
    lost the chunks: the push starts over. ``result`` holds what the device then reports."""

    needs_ready = False          # a device whose bundle fails its self-test is the one that needs a push

    def __init__(self, files: list[tuple[str, bytes]], model_sha256: str, *, port: str = "the port",
                 chunk: int = CHUNK_BYTES, baud: int = 115200, tries: int = 10,
                 give_up_after: float = GIVE_UP_AFTER, log: Log = quiet,
                 progress: Callable[[int], None] | None = None):
        super().__init__(port=port, give_up_after=give_up_after, log=log)
        self.specs = [(name, len(data), hashlib.sha256(data).hexdigest()) for name, data in files]
        blob = b"".join(data for _, data in files)
        self.size = len(blob)
        self.chunk = chunk
        self.chunks = [blob[i:i + chunk] for i in range(0, len(blob), chunk)]
        self.model_sha256 = model_sha256
        self.timeout = 0.2 + 2 * (chunk + 32) * 10 / baud     # twice a chunk's line time, plus 0.2 s
        self.tries = tries
        self.progress = progress
        self.resent = 0
        self.result: dict | None = None
        self._step = "begin"         # begin -> chunks -> end
        self._index = 0
        self._sent_at = 0.0
        self._attempts = 0
        self._refusal: str | None = None    # an ERROR to report unless a re-handshake shows a restart

    def _connected(self, caps, first, new_session, now):
        if self._refusal is not None and not new_session:
            raise LinkError(f"model push failed at {self._what()}: {self._refusal}")
        self._refusal = None
        if self._step == "end" and caps.model_sha256 == self.model_sha256 and caps.ready:
            return self._done(caps)            # installed; the CAPS answering MODEL_END was lost
        if first or new_session:
            if new_session:
                self.log("device restarted (new session): the push starts over")
            self._step, self._index = "begin", 0
        return self._send(now, again=not first and not new_session)

    def _what(self) -> str:
        return {"begin": "MODEL_BEGIN", "chunks": f"chunk {self._index}", "end": "MODEL_END"}[self._step]

    def _frame_for_step(self) -> p.Frame:
        if self._step == "begin":
            return p.model_begin(self.specs, self.chunk)
        if self._step == "chunks":
            return p.model_chunk(self._index, self.chunks[self._index])
        return p.model_end()

    def _send(self, now: float, again: bool = False) -> list[p.Frame]:
        if again:
            self.resent += 1
            self._attempts += 1
        else:
            self._attempts = 1
        self._sent_at = now
        return [self._frame_for_step()]

    def _advance(self, now: float) -> list[p.Frame]:
        self._progress_at = now
        if self._step == "begin":
            self._step, self._index = "chunks", 0
        elif self._step == "chunks":
            self._index += 1
            if self.progress:
                self.progress(1)
        if self._step == "chunks" and self._index >= len(self.chunks):
            self._step = "end"
        return self._send(now)

    def _frame(self, frame, now):
        if frame.type == p.ERROR:
            code, text = p.unpack_error(frame)
            if code == p.E_SELF_TEST:
                return []                                # the served bundle's state, said with every CAPS
            if code != p.E_MODEL:
                raise LinkError(f"model push failed at {self._what()}: {p.describe_error(code, text)}")
            # A refusal, or a device that restarted and lost the push: a handshake tells which.
            self._refusal = p.describe_error(code, text)
            return self._handshake(now)
        if self._step == "begin" and frame.type == p.ACK and frame.seq == 0:
            return self._advance(now)
        if self._step == "chunks" and frame.type == p.ACK:
            if frame.seq == self._index + 1:
                return self._advance(now)
            if frame.seq <= self._index:
                self._index = frame.seq                  # the device asks for an earlier chunk
                return self._send(now, again=True)
        if self._step == "end" and frame.type == p.CAPS:
            caps = p.Caps.unpack(frame.body)
            if caps.model_sha256 == self.model_sha256:
                return self._done(caps)
        return []

    def _time(self, now):
        wait = max(self.timeout, INSTALL_TIMEOUT) if self._step == "end" else self.timeout
        if now - self._sent_at <= wait:
            return []
        if self._step == "end" or self._attempts >= self.tries:
            return self._handshake(now)                  # ask the device where it is
        return self._send(now, again=True)

    def _done(self, caps: p.Caps) -> list[p.Frame]:
        self.finished = True
        self.result = {"bytes": self.size, "chunks": len(self.chunks), "resent": self.resent,
                       "model_sha256": caps.model_sha256, "ready": caps.ready, "status": caps.status,
                       "reconnects": self.reconnects}
        return []
