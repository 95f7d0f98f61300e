"""The host's input, read in a thread so the link never waits on it.

``tinyad stream`` reads a file or a pipe. Reading a pipe blocks until a row arrives; done on the
driver's thread, that would hold every frame already due (a live row would go out only when the
next one came). ``ReadAhead`` runs the batch iterator in a thread of its own, keeps at most
``ahead`` batches, and calls ``wake()`` after each one, so the driver, waiting for the line,
looks at its input at once. ``take()`` never blocks.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterable

import numpy as np

AHEAD = 8                  # batches read ahead of the link: a bulk file keeps the frames full


class ReadAhead:
    """``take()`` -> a batch, ``END``, an exception the iterator raised, or None (nothing yet)."""

    END = object()

    def __init__(self, batches: Iterable[np.ndarray], wake: Callable[[], None] = lambda: None,
                 ahead: int = AHEAD):
        self._queue: queue.Queue = queue.Queue(maxsize=ahead)
        self._wake = wake
        self._closed = False
        self._thread = threading.Thread(target=self._read, args=(iter(batches),), name="tinyad-input", daemon=True)
        self._thread.start()

    def _read(self, source) -> None:
        try:
            for batch in source:
                self._queue.put(batch)
                if self._closed:
                    return
                self._wake()
            self._queue.put(self.END)
        except Exception as exc:       # a bad row (DataError) or a bug: handed to the driver's thread
            self._queue.put(exc)
        self._wake()

    def take(self):
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            return None

    def waiting(self) -> bool:
        """Something read and not yet taken."""
        return not self._queue.empty()

    def close(self) -> None:
        """Stop reading ahead (the stream ended early): the thread ends after its current read."""
        self._closed = True
        while self.take() is not None:      # unblock a put waiting for room
            pass
