"""Bytes of CSV input in blocks of complete records, as soon as they arrive.

A bulk file is read in blocks of ``BLOCK_BYTES``; a pipe or terminal gives whatever it holds
now (``os.read`` returns what is there, never waiting for a full block), so a live row is
parsed and scored the moment its newline arrives. A block always ends at a record boundary:
after a newline outside any quoted field (an even number of ``"`` before it).
"""

from __future__ import annotations

import io
import os
import select
from typing import BinaryIO, Iterator, TextIO

import numpy as np

BLOCK_BYTES = 1 << 18        # ~2,000 SDN rows: large enough to amortise numpy calls, small in memory


def byte_chunks(stream: TextIO | BinaryIO) -> Iterator[bytes]:
    """The raw bytes of a text stream (or a binary one) in arrival order, a chunk per read.

    A stream over a file descriptor (a plain file, stdin, a pipe) is read with ``os.read``, which
    returns what is available; gzip and in-memory streams through their own ``read``."""
    buffer = getattr(stream, "buffer", stream)
    if isinstance(buffer, io.BufferedReader):
        return _fd_chunks(buffer.fileno())
    if buffer is stream and isinstance(stream, io.TextIOBase):
        return _text_chunks(stream)
    return _read_chunks(buffer)


def _fd_chunks(fd: int) -> Iterator[bytes]:
    while True:
        chunk = os.read(fd, BLOCK_BYTES)
        if not chunk:
            return
        parts = [chunk]
        size = len(chunk)
        # Take what else is already there (a pipe holds at most 64 KiB per read), never waiting.
        while size < BLOCK_BYTES and _ready(fd):
            more = os.read(fd, BLOCK_BYTES - size)
            if not more:
                yield b"".join(parts)
                return
            parts.append(more)
            size += len(more)
        yield b"".join(parts) if len(parts) > 1 else chunk


def _ready(fd: int) -> bool:
    try:
        return bool(select.select([fd], [], [], 0)[0])
    except (OSError, ValueError):
        return False


def _read_chunks(binary) -> Iterator[bytes]:
    while True:
        chunk = binary.read(BLOCK_BYTES)
        if not chunk:
            return
        yield chunk


def _text_chunks(text: TextIO) -> Iterator[bytes]:
    while True:
        chunk = text.read(BLOCK_BYTES)
        if not chunk:
            return
        yield chunk.encode("utf-8", "surrogatepass")


def record_blocks(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Blocks of whole records (each ends after a newline outside quotes), then what is left at
    the end of the input (a last line without its newline)."""
    pending = b""
    for chunk in chunks:
        data = pending + chunk if pending else chunk
        cut = record_end(data)
        if cut:
            yield data[:cut]
        pending = data[cut:]
    if pending:
        yield pending


def record_end(data: bytes) -> int:
    """Offset just after the last newline of ``data`` that ends a record (0 if none): outside a
    quoted field, a CSV text has seen an even number of quote characters."""
    if b'"' not in data:
        return data.rfind(b"\n") + 1
    codes = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(codes == 0x0A)
    quotes_before = np.searchsorted(np.flatnonzero(codes == 0x22), newlines)
    ends = newlines[quotes_before % 2 == 0]
    return int(ends[-1]) + 1 if len(ends) else 0
