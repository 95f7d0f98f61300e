"""The ``tinyad`` command. Run-side commands live here; build-side commands load lazily from
``toolchain.cli`` so ``tinyad --help`` and ``tinyad run`` never import TensorFlow."""

from __future__ import annotations

import csv
import importlib
import json

import click

from . import __version__
from .errors import TinyadError

# Build-side commands: name -> "module:attribute", imported only when used or listed.
BUILD_COMMANDS = {
    "build": "toolchain.cli:build",
    "select-features": "toolchain.cli:select_features",
    "train": "toolchain.cli:train",
    "quantize": "toolchain.cli:quantize",
    "verify": "toolchain.cli:verify",
    "compare": "toolchain.cli:compare",
    "init": "toolchain.cli:init",
    "search": "toolchain.cli:search",
}


class TinyadGroup(click.Group):
    """Lists build commands without importing them; a missing [train] extra becomes a clear error.

    It is also the one error boundary of the ``tinyad`` command: a ``TinyadError`` raised by
    any subcommand (run side or build side) becomes one ``Error: ...`` line and exit code 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except TinyadError as exc:
            raise click.ClickException(str(exc)) from None

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(BUILD_COMMANDS))

    def get_command(self, ctx, name):
        if name not in BUILD_COMMANDS:
            return super().get_command(ctx, name)
        module_name, attribute = BUILD_COMMANDS[name].split(":")
        try:
            return getattr(importlib.import_module(module_name), attribute)
        except ImportError as exc:
            missing = exc.name or "a build dependency"
            return _unavailable(name, missing)


def _unavailable(name: str, missing: str) -> click.Command:
    @click.command(name, help=f"(needs the build extra: pip install 'tinyad[train]'; {missing} is missing)")
    def command():
        raise click.ClickException(f"'tinyad {name}' needs the build side: pip install 'tinyad[train]' "
                                   f"({missing} is not installed)")
    return command


@click.group(cls=TinyadGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tinyad")
def main():
    """tinyad: IoT anomaly detectors small enough for a Raspberry Pi.

    \b
    Build (needs pip install 'tinyad[train]'):
      tinyad init --csv my_data.csv --label attack --out my_recipe.toml
      tinyad build models/default.toml --out build/default
    Run (on the device or host; numpy + a TFLite interpreter only):
      tinyad run build/default --input data.csv --output verdicts.csv
      tinyad info build/default
      tinyad bench build/default
    Device link (serial, e.g. a Raspberry Pi on /dev/ttyUSB0):
      tinyad device --port /dev/serial0 --model bundle      (on the Pi)
      tinyad stream --port /dev/ttyUSB0 --model bundle --input data.csv --output verdicts.csv
      tinyad deploy build/new --port /dev/ttyUSB0
    """


EXPLAIN_HELP = ("Name the K features behind each flagged row in a last `why` column (feat:value;...), "
                "most important first. ae, lstm, ae_lstm and forecasting cnn_lstm_attn: value = the "
                "feature's exact share of the score (its squared residual or forecast error over the "
                "row's total). vae_dnn and classifying cnn_lstm_attn have no exact cheap attribution: "
                "value = |z|/clip of the scaled input, 1.0 = at or beyond the training range's edge. "
                "Values are multiples of 1/255. 0 (default): no why column, output unchanged.")


EXPLAIN_MAX_K = 8      # explain.MAX_K, not imported here so start-up stays free of numpy (a test compares)


def _explain_option(command):
    return click.option("--explain", "explain", type=click.IntRange(0, EXPLAIN_MAX_K), default=0, metavar="K",
                        help=EXPLAIN_HELP)(command)


JSONL_HELP = ("Also write each verdict as one JSON object per line to PATH, or - for stdout (which "
              "then carries no CSV unless --output is given): row, time (the recipe's time column, or a "
              "column named time or timestamp, when the input has one), status, score, unit_score (null "
              "without adaptive scoring), is_anomaly, class, model_sha256, and why with --explain.")
MQTT_HELP = ("Also publish the verdicts to an MQTT broker at QoS 1: mqtt://host[:port][/prefix] (port "
             "1883, prefix tinyad by default). Topic <prefix>/<id>/verdicts gets one message per block "
             "of rows, {\"model_sha256\": ..., \"verdicts\": [...]}, the records as --jsonl writes them "
             "but with the hash once a block: a bulk file goes about 1,000 rows a message, a live row "
             "alone; <prefix>/<id>/status a retained online/offline status (model "
             "hash, self-test, interpreter), offline also as the last will. Reconnects with backoff and "
             "re-sends what the broker has not acknowledged; at exit waits for every PUBACK. Needs "
             "pip install 'tinyad[mqtt]'.")


def _verdict_output_options(command):
    command = click.option("--mqtt-id", "mqtt_id", default=None, metavar="ID",
                           help="Device id in the MQTT topics (default: this host's name).")(command)
    command = click.option("--mqtt", "mqtt", default=None, metavar="URL", help=MQTT_HELP)(command)
    return click.option("--jsonl", "jsonl", default=None, metavar="PATH", help=JSONL_HELP)(command)


DEVICE_MQTT_QUEUE = 10_000     # MQTT messages the agent keeps while the broker is away (~2.5M verdicts)


def _echo_err(message: str) -> None:
    click.echo(message, err=True)


@main.command()
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("--input", "-i", "input_path", required=True, help="CSV with the bundle's feature columns, or - for stdin.")
@click.option("--output", "-o", "output_path", type=click.Path(dir_okay=False), default=None,
              help="Write verdicts to this CSV instead of stdout.")
@_explain_option
@_verdict_output_options
@click.option("--skip-self-test", is_flag=True, help="Serve even if this machine fails the golden-vector check (unsafe).")
@click.option("--batch-rows", default=1024, show_default=True,
              help="Most rows scored per batch (live input is scored as it arrives, never held back).")
def run(bundle, input_path, output_path, explain, jsonl, mqtt, mqtt_id, skip_self_test, batch_rows):
    """Score a CSV (or stdin) with a bundle's int8 model: one verdict per input row.

    Reads the bundle's feature columns by name, scales and quantizes them as the manifest
    says, and writes `row,status,score,unit_score,is_anomaly,class`: score is the detector's
    raw score (its own units), unit_score the adaptive anomaly level in [0, 1] that is_anomaly
    follows (empty for a bundle without adaptive scoring); a temporal bundle's first
    window-1 rows get status `warming_up`. Refuses a bundle whose model hash
    does not match its manifest, or whose golden vectors this machine does not reproduce.

    \b
    The same verdicts as JSON lines, or to an MQTT broker as well:
      tinyad run build/default --input flows.csv --output verdicts.csv --jsonl verdicts.jsonl
      tail -n +1 -f sensor.csv | tinyad run build/default --input - --mqtt mqtt://broker.lan/plant1
    """
    from .csv_input import atomic_output, open_text, score_csv
    from .outputs import open_outputs, status_record
    from .runner import Detector

    publisher = None
    if mqtt:
        # Publishing runs in a forked process (another core), which imports paho while the model loads.
        from .outputs.mqtt import default_device_id, preload
        from .outputs.publisher import fork_publisher
        publisher = fork_publisher(mqtt, mqtt_id or default_device_id(), _echo_err)
        if publisher is None:
            preload()                         # no fork here: paho imports in a thread meanwhile
    try:
        detector = Detector(bundle, self_test=not skip_self_test)
        if skip_self_test:
            click.echo("warning: golden-vector self-test skipped; verdicts are unchecked on this machine", err=True)
        stream, source = open_text(input_path)
        status = status_record(detector.manifest, self_test=detector.self_test_result,
                               interpreter=detector.runtime.describe(), source="run")
        with open_outputs(detector.manifest, jsonl=jsonl, mqtt=mqtt, mqtt_id=mqtt_id, status=status,
                          log=_echo_err, publisher=publisher) as outputs, atomic_output(output_path) as out:
            csv_out = None if jsonl == "-" and not output_path else out
            rows, anomalies = score_csv(detector, stream, source, csv_out, batch_rows, explain, outputs)
    finally:
        if publisher is not None:
            publisher.finish(kill=True)       # gone already unless the run failed before its outputs opened
    click.echo(f"{rows} rows, {anomalies} anomalies ({detector.runtime.describe()})", err=True)


@main.command()
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON.")
def info(bundle, as_json):
    """Describe a bundle: detector, features, quantization, threshold, metrics, sizes, interpreter."""
    from .interpreter import load_runtime
    from .manifest import load_manifest
    from .report_text import manifest_lines

    manifest = load_manifest(bundle)
    runtime = load_runtime()
    if as_json:
        click.echo(json.dumps({**manifest.to_dict(), "interpreter_here": runtime.describe()}, indent=2))
        return
    for line in manifest_lines(manifest, runtime.describe()):
        click.echo(line)


@main.command()
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("--invokes", default=2000, show_default=True, help="Single-sample invokes per model.")
@click.option("--json", "as_json", is_flag=True, help="Print the measurements as JSON.")
@click.option("--csv", "csv_path", default=None, metavar="FILE",
              help="Measure the run pipeline on this CSV (or .csv.gz) with the bundle's columns, read as "
                   "`tinyad run --input FILE` reads it, instead of synthetic rows.")
def bench(bundle, invokes, as_json, csv_path):
    """Measure int8 vs float in one run: invoke latency p50/p99, rows/s, sizes, memory, and the
    rows/s of `tinyad run`'s pipeline (CSV in, verdict text out, start-up excluded).

    \b
      tinyad bench build/default
      tinyad bench build/default --csv flows.csv    # the run figure on your own rows
    """
    from .bench import bench_bundle
    from .report_text import bench_lines

    result = bench_bundle(bundle, invokes=invokes, csv_path=csv_path)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    for line in bench_lines(result):
        click.echo(line)


@main.command()
@click.option("--port", "-p", required=True, help="Serial device the host is on, e.g. /dev/serial0 or /dev/ttyGS0.")
@click.option("--model", "-m", "bundle", required=True, type=click.Path(file_okay=False),
              help="Bundle directory to serve; 'tinyad deploy' replaces it in place.")
@click.option("--baud", default=115200, show_default=True, help="Baud rate (ignored by USB-CDC and pseudo-terminals).")
@click.option("--credit", default=4096, show_default=True, help="Bytes of DATA the host may have in flight.")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None, metavar="N",
              help="Also serve Prometheus metrics on http://0.0.0.0:N/metrics: counters of samples, anomalies, "
                   "link CRC errors, re-sends and reconnects, a self-test gauge (1 pass, 0 fail) and a "
                   "histogram of scores. Needs pip install 'tinyad[metrics]'.")
@click.option("--jsonl", "jsonl", default=None, metavar="PATH",
              help="Also append every verdict served to PATH as JSON lines (- for stdout), as `run --jsonl` "
                   "writes them; row is the sample's number on the link.")
@click.option("--mqtt", "mqtt", default=None, metavar="URL",
              help="Also publish every verdict served to an MQTT broker, as `run --mqtt` does (one message per "
                   "DATA frame, up to 256 rows); the broker may come and go: verdicts wait in a queue of "
                   "10,000 messages while it is away.")
@click.option("--mqtt-id", "mqtt_id", default=None, metavar="ID",
              help="Device id in the MQTT topics (default: this host's name).")
def device(port, bundle, baud, credit, metrics_port, jsonl, mqtt, mqtt_id):
    """Run the device agent: serve a bundle's verdicts over a serial line, until stopped.

    Checks the bundle's hash and replays its golden vectors first (and after every model
    push); if the bundle fails either and <bundle>.previous passes both, it rolls back to the
    previous one. A device that does not reproduce its bundle answers every request with an
    ERROR that names its interpreter, and never serves a verdict. Logs to stderr; reopens the
    port when it vanishes. A bug ends it with a traceback (systemd restarts it).

    \b
    On a Raspberry Pi (see the README for a systemd unit):
      tinyad device --port /dev/serial0 --model /var/lib/tinyad/bundle
    """
    import sys
    import time as _time

    import signal

    from .link.agent import serve_port
    from .outputs import open_outputs

    def log(message: str) -> None:
        print(f"{_time.strftime('%H:%M:%S')} tinyad device: {message}", file=sys.stderr, flush=True)

    def stop(signum, frame):
        raise KeyboardInterrupt          # systemd's SIGTERM: stop as Ctrl-C does, flushing the outputs

    signal.signal(signal.SIGTERM, stop)
    outputs = open_outputs(None, jsonl=jsonl, mqtt=mqtt, mqtt_id=mqtt_id, append=True, wait=False,
                           max_queued=DEVICE_MQTT_QUEUE, log=log)
    try:
        serve_port(port, bundle, baud=baud, log=log, credit=credit, metrics_port=metrics_port, outputs=outputs)
    except KeyboardInterrupt:
        log("stopped")
    finally:
        outputs.close()


@main.command()
@click.option("--port", "-p", required=True, help="Serial device the Pi is on, e.g. /dev/ttyUSB0.")
@click.option("--model", "-m", "bundle", required=True, type=click.Path(file_okay=False),
              help="The bundle the device serves (its manifest scales and quantizes the rows here).")
@click.option("--input", "-i", "input_path", required=True, help="CSV with the bundle's feature columns, or - for stdin.")
@click.option("--output", "-o", "output_path", type=click.Path(dir_okay=False), default=None,
              help="Write verdicts to this CSV instead of stdout.")
@click.option("--baud", default=115200, show_default=True, help="Baud rate of the line.")
@click.option("--batch-rows", default=256, show_default=True, help="CSV rows read per batch.")
@click.option("--give-up-after", default=30.0, show_default=True,
              help="Seconds without a verdict, or with the port gone, before failing.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@_explain_option
@_verdict_output_options
def stream(port, bundle, input_path, output_path, baud, batch_rows, give_up_after, quiet, explain, jsonl, mqtt,
           mqtt_id):
    """Stream a CSV to a device over serial and write one verdict per row, in input order.

    Rows are scaled and quantized here with the bundle's manifest and sent as int8, one byte
    per feature. Verdicts equal `tinyad run`'s on the same bundle and input. If the port
    vanishes (a pulled USB adapter), it reopens the same path until --give-up-after and goes
    on. Exits non-zero, naming how many rows got no verdict, if the device refuses or the link
    is gone for good; a bad input row stops the stream once every row before it has its
    verdict. Whatever stops it, the verdicts that arrived stay in --output. With --explain K
    the device names the features behind each flagged verdict, as `tinyad run --explain K` does.
    """
    from .csv_input import atomic_output, open_text, read_batches, verdict_header, verdict_rows
    from .link.host import Driver, stream as stream_samples
    from .link.session import StreamSession
    from .link.transport import SerialTransport
    from .manifest import load_manifest
    from .outputs import RowTimes, open_outputs, status_record
    from .report_text import stream_lines
    from .runner import prepare_rows

    def log(message: str) -> None:
        if not quiet:
            click.echo(f"\r\033[Kstream: {message}", err=True)

    manifest = load_manifest(bundle)
    text, source = open_text(input_path)
    rows_read = 0
    row_times = RowTimes()                    # time cells of rows sent, until their verdicts arrive
    outputs = None

    def prepared():
        nonlocal rows_read
        for batch in read_batches(text, manifest, source, batch_rows, with_time=bool(jsonl or mqtt)):
            raw, times = batch if (jsonl or mqtt) else (batch, None)
            if jsonl or mqtt:
                row_times.add(times, len(raw))
            rows_read += len(raw)
            yield prepare_rows(manifest, raw)

    bar = _RateBar(quiet)
    writer = out_file = None

    def deliver(first: int, verdicts) -> None:
        if writer is not None:
            writer.writerows(verdict_rows(first, verdicts, manifest))
            out_file.flush()                  # a live row's verdict goes out now, not when a buffer fills
        if outputs:
            outputs.write(first, verdicts, row_times.take(first, len(verdicts.scores)))

    session = StreamSession(manifest, deliver,
                            port=port, baud=baud, give_up_after=give_up_after, log=log, progress=bar.advance,
                            explain=explain)
    transport = SerialTransport(port, baud)
    failure = None
    try:
        driver = Driver(transport, give_up_after=give_up_after, log=log)
        driver.run(session, until=lambda: session.connected)    # a refusing device leaves no file
        status = status_record(manifest, self_test=session.caps.status, interpreter=f"the device on {port}",
                               source="stream")
        with open_outputs(manifest, jsonl=jsonl, mqtt=mqtt, mqtt_id=mqtt_id, status=status, log=log) as outputs, \
                atomic_output(output_path) as out:
            if jsonl != "-" or output_path:
                writer, out_file = csv.writer(out), out
                writer.writerow(verdict_header(explain > 0))
                out.flush()                   # a reader of a live pipe sees the columns at once
            try:
                stream_samples(driver, session, prepared())
            except BaseException as exc:      # whatever stops the stream, keep the verdicts that arrived
                failure = exc
            bar.close()
            try:
                outputs.close()               # the JSON lines in place; every PUBACK, or an error
            except TinyadError as exc:
                failure = failure or exc
    finally:
        transport.close()
    stats = session.stats
    stats.missing = max(rows_read - stats.samples, 0)
    for line in stream_lines(stats.summary(), manifest, port, baud):
        click.echo(line, err=True)
    kept = f" (the verdicts of the first {stats.samples} rows are in {output_path})" \
        if output_path and stats.samples else ""
    if failure is not None and not isinstance(failure, TinyadError):
        click.echo(f"stream stopped by {type(failure).__name__}{kept}", err=True)
        raise failure                         # a bug or Ctrl-C: its traceback, after the file is safe
    if failure is not None or stats.missing:
        problems = ([f"{stats.missing} of the {rows_read} rows read got no verdict"] if stats.missing else []) \
            + ([str(failure)] if failure else [])
        raise click.ClickException(": ".join(problems) + kept)


class _RateBar:
    """A one-line progress display on stderr: samples so far and samples per second."""

    def __init__(self, quiet: bool):
        import time as _time

        self.quiet = quiet
        self.done = 0
        self.started = _time.monotonic()
        self.last = 0.0

    def advance(self, n: int) -> None:
        import time as _time

        self.done += n
        now = _time.monotonic()
        if not self.quiet and now - self.last > 0.2:
            self.last = now
            rate = self.done / max(now - self.started, 1e-9)
            click.echo(f"\r\033[Kstreamed {self.done} samples, {rate:,.0f} samples/s", err=True, nl=False)

    def close(self) -> None:
        if not self.quiet:
            click.echo("\r\033[K", err=True, nl=False)


@main.command()
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("--port", "-p", required=True, help="Serial device the Pi is on.")
@click.option("--baud", default=115200, show_default=True)
@click.option("--give-up-after", default=30.0, show_default=True,
              help="Seconds without progress, or with the port gone, before failing.")
def deploy(bundle, port, baud, give_up_after):
    """Push BUNDLE (model, manifest, golden vectors) to a running device agent.

    The device writes it to a staging folder, fsyncs, checks the hashes and runs the golden
    self-test, then swaps it in by rename and keeps the previous bundle. If anything fails,
    or the push is cut off, the device keeps serving its old model. A port that vanishes
    mid-push is reopened until --give-up-after and the push goes on.
    """
    from .link.host import Driver, push
    from .link.transport import SerialTransport

    transport = SerialTransport(port, baud)
    try:
        result = push(Driver(transport, give_up_after=give_up_after), bundle, baud=baud)
    finally:
        transport.close()
    click.echo(f"pushed {result['bytes']} bytes in {result['chunks']} chunks ({result['resent']} re-sent, "
               f"{result['reconnects']} reconnects); device now serves {result['model_sha256'][:12]}... "
               f"({result['status']})")


if __name__ == "__main__":  # pragma: no cover
    main()
