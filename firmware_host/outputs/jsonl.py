"""Verdicts as JSON lines, to stdout or a file (the records of ``record.py``, one per line)."""

from __future__ import annotations

import os
import sys

from ..errors import OutputError


class JsonlSink:
    """JSON lines to ``path``, or to stdout for ``-``, flushed after every block so a live row's
    record is readable as soon as it is scored.

    A file is written like the verdict CSV: to a temporary path renamed to ``path`` by
    ``close(complete=True)``, so a run that stops on a bad row leaves no half file. With
    ``append=True`` (the device agent, which runs until stopped) the records are appended to
    ``path`` itself, each block as it is served."""

    shape = "lines"                 # one record a line (``record.jsonl_text``)

    def __init__(self, path: str, *, append: bool = False):
        self.path = path
        self.append = append
        self.rows = 0
        if path == "-":
            self.handle, self.temporary = sys.stdout, None
            return
        self.temporary = None if append else f"{path}.tmp-{os.getpid()}"
        try:
            self.handle = open(path if append else self.temporary, "a" if append else "w", encoding="utf-8",
                               newline="")
        except OSError as exc:
            raise OutputError(f"{path}: cannot write the JSON lines ({exc.strerror})") from None

    def send(self, text: str, rows: int, first_row: int) -> None:
        """Write one block's JSON lines (``rows`` records, the first for row ``first_row``)."""
        self.handle.write(text)
        self.handle.flush()
        self.rows += rows

    def close(self, complete: bool = True) -> None:
        """Flush, and for a file put it in place (``complete``) or remove its temporary file."""
        if self.handle is sys.stdout:
            sys.stdout.flush()
            return
        self.handle.close()
        if self.temporary is None:
            return
        if complete:
            os.replace(self.temporary, self.path)
        elif os.path.exists(self.temporary):
            os.unlink(self.temporary)
