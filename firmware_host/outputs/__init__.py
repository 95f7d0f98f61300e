"""Where verdicts go besides the CSV: JSON lines (``--jsonl``) and an MQTT broker (``--mqtt``).

``open_outputs`` gives one ``VerdictOutputs`` for all the destinations asked for; its
``write(first_row, verdicts, times)`` formats a block's records once per shape a sink asks for
(``sink.shape``: ``"lines"``, ``record.jsonl_text``; ``"block"``, ``record.block_message``;
``"verdicts"``, the block itself, for ``publisher.ForkedMqttSink`` to format in its own process)
and hands the text to every sink. ``run``, ``stream`` and the device agent use it alike.
"""

from __future__ import annotations

from typing import Callable

from .. import __version__
from .record import block_message, jsonl_text, records

__all__ = ["RowTimes", "VerdictOutputs", "open_outputs", "status_record", "block_message", "jsonl_text", "records"]


def _unformatted(first_row: int, verdicts, manifest, times: list[str] | None) -> tuple:
    return verdicts, times


SHAPES = {"lines": jsonl_text, "block": block_message, "verdicts": _unformatted}   # sink.shape -> a block's text


class RowTimes:
    """The time cells of rows read and not yet given a verdict (``tinyad stream`` reads ahead of
    the device's answers), taken in row order as verdicts arrive."""

    def __init__(self):
        self.first = 0                 # the row number of cells[0]
        self.cells: list[str] = []
        self.present = False

    def add(self, times: list[str] | None, rows: int) -> None:
        if times is not None:
            self.present = True
        self.cells.extend(times if times is not None else [""] * rows)

    def take(self, first: int, rows: int) -> list[str] | None:
        """The cells of rows ``first`` to ``first + rows - 1`` (and forget the rows before them)."""
        del self.cells[:first - self.first]
        self.first = first
        return self.cells[:rows] if self.present else None


class VerdictOutputs:
    """A block of verdicts to every sink. ``close(complete)`` closes them all, then raises the
    first error one of them reported (an MQTT broker that did not acknowledge everything)."""

    def __init__(self, manifest, sinks: list):
        self.manifest = manifest
        self.sinks = sinks

    def __bool__(self) -> bool:
        return bool(self.sinks)

    def write(self, first_row: int, verdicts, times: list[str] | None = None) -> None:
        if not self.sinks:
            return
        texts: dict[str, str] = {}
        for sink in self.sinks:
            if sink.shape not in texts:
                texts[sink.shape] = SHAPES[sink.shape](first_row, verdicts, self.manifest, times)
            sink.send(texts[sink.shape], len(verdicts.scores), first_row)

    def serving(self, manifest, status: dict) -> None:
        """A new model serves (the device agent after a push): its hash goes in the records, its
        status to the broker."""
        self.manifest = manifest
        for sink in self.sinks:
            if hasattr(sink, "set_status"):
                sink.set_status(status)

    def serving_detector(self, detector, status: str, source: str) -> None:
        """The device agent's bundle changed (start-up, a push, a rollback): ``detector`` serves (a
        ``runner.Detector``), or None when none passes its checks, ``status`` saying why."""
        if detector is None:
            self.serving(None, {"model": None, "model_sha256": None, "self_test": {"passed": False, "detail": status},
                                "interpreter": None, "source": source, "tinyad": __version__})
            return
        self.serving(detector.manifest, status_record(detector.manifest, self_test=detector.self_test_result,
                                                      interpreter=detector.runtime.describe(), source=source))

    def close(self, complete: bool = True) -> None:
        failure = None
        for sink in self.sinks:
            try:
                sink.close(complete)
            except Exception as exc:       # close the others first, then report this one
                failure = failure or exc
        self.sinks = []
        if failure is not None:
            raise failure

    def __enter__(self) -> "VerdictOutputs":
        return self

    def __exit__(self, kind, exc, traceback) -> None:
        if kind is None:
            self.close(True)
            return
        try:
            self.close(False)
        except Exception:
            pass                           # the error already on its way is the one to report


def status_record(manifest, *, self_test=None, interpreter: str, source: str) -> dict:
    """The MQTT status payload's description of a publisher: its model, its self-test (a
    ``runner.SelfTestResult``, a text for a device's own report, or None if skipped) and the
    interpreter that computes the verdicts."""
    if self_test is None or isinstance(self_test, str):
        test = {"passed": None if self_test is None else True, "detail": self_test or "skipped"}
    else:
        test = {"passed": self_test.passed, "rows": self_test.rows, "max_abs_diff_lsb": self_test.max_abs_diff_lsb,
                "verdict_mismatches": self_test.verdict_mismatches}
    return {"model": manifest.name, "model_sha256": manifest.sha256, "self_test": test,
            "interpreter": interpreter, "source": source, "tinyad": __version__}


def open_outputs(manifest, *, jsonl: str | None = None, mqtt: str | None = None, mqtt_id: str | None = None,
                 status: dict | None = None, append: bool = False, wait: bool = True,
                 max_queued: int = 0, log: Callable[[str], None] | None = None,
                 publisher=None) -> VerdictOutputs:
    """The sinks asked for (none is fine). ``append``: JSON lines appended to the file (the
    device agent); ``wait=False``: connect to the broker in the background (the device agent);
    ``publisher``: a forked MQTT publisher (``publisher.fork_publisher``) to publish through."""
    sinks = []
    try:
        if jsonl:
            from .jsonl import JsonlSink
            sinks.append(JsonlSink(jsonl, append=append))
        if mqtt and publisher is not None:
            from .publisher import ForkedMqttSink
            sinks.append(ForkedMqttSink(publisher, manifest, status or {}))
        elif mqtt:
            from .mqtt import MqttSink, default_device_id
            sinks.append(MqttSink(mqtt, mqtt_id or default_device_id(), status or {}, wait=wait,
                                  max_queued=max_queued, log=log or (lambda message: None)))
    except BaseException:
        VerdictOutputs(manifest, sinks).__exit__(Exception, None, None)
        raise
    return VerdictOutputs(manifest, sinks)
