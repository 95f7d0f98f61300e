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
}


class TinyadGroup(click.Group):
    """Lists build commands without importing them; a missing [train] extra becomes a clear error."""

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


def fail(exc: TinyadError) -> click.ClickException:
    return click.ClickException(str(exc))


@click.group(cls=TinyadGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tinyad")
def main():
    """tinyad: IoT anomaly detectors small enough for a Raspberry Pi.

    \b
    Build (needs pip install 'tinyad[train]'):
      tinyad build models/default.toml --out build/default
    Run (on the device or host; numpy + a TFLite interpreter only):
      tinyad run build/default --input data.csv --output verdicts.csv
      tinyad info build/default
      tinyad bench build/default
    """


@main.command()
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("--input", "-i", "input_path", required=True, help="CSV with the bundle's feature columns, or - for stdin.")
@click.option("--output", "-o", "output_path", type=click.Path(dir_okay=False), default=None,
              help="Write verdicts to this CSV instead of stdout.")
@click.option("--skip-self-test", is_flag=True, help="Serve even if this machine fails the golden-vector check (unsafe).")
@click.option("--batch-rows", default=256, show_default=True, help="Rows read per batch.")
def run(bundle, input_path, output_path, skip_self_test, batch_rows):
    """Score a CSV (or stdin) with a bundle's int8 model: one verdict per input row.

    Reads the bundle's feature columns by name, scales and quantizes them as the manifest
    says, and writes `row,status,score,is_anomaly,class`; a temporal bundle's first
    window-1 rows get status `warming_up`. Refuses a bundle whose model hash
    does not match its manifest, or whose golden vectors this machine does not reproduce.
    """
    from .csv_input import VERDICT_HEADER, open_text, read_batches, verdict_rows
    from .runner import Detector

    from .csv_input import atomic_output

    try:
        detector = Detector(bundle, self_test=not skip_self_test)
        if skip_self_test:
            click.echo("warning: golden-vector self-test skipped; verdicts are unchecked on this machine", err=True)
        stream, source = open_text(input_path)
        batches = read_batches(stream, detector.manifest, source, batch_rows)
        anomalies = rows = 0
        scorer = detector.stream()
        with atomic_output(output_path) as out:
            writer = csv.writer(out)
            writer.writerow(VERDICT_HEADER)
            for raw in batches:
                verdicts = scorer.push(detector.prepare(raw))
                writer.writerows(verdict_rows(rows, verdicts, detector.manifest))
                rows += len(raw)
                anomalies += int(verdicts.is_anomaly.sum())
    except TinyadError as exc:
        raise fail(exc)
    click.echo(f"{rows} rows, {anomalies} anomalies ({detector.runtime.describe()})", err=True)


@main.command()
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON.")
def info(bundle, as_json):
    """Describe a bundle: detector, features, quantization, threshold, metrics, sizes, interpreter."""
    from .interpreter import load_runtime
    from .manifest import load_manifest
    from .report_text import manifest_lines

    try:
        manifest = load_manifest(bundle)
        runtime = load_runtime()
    except TinyadError as exc:
        raise fail(exc)
    if as_json:
        click.echo(json.dumps({**manifest.to_dict(), "interpreter_here": runtime.describe()}, indent=2))
        return
    for line in manifest_lines(manifest, runtime.describe()):
        click.echo(line)


@main.command()
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("--invokes", default=2000, show_default=True, help="Single-sample invokes per model.")
@click.option("--json", "as_json", is_flag=True, help="Print the measurements as JSON.")
def bench(bundle, invokes, as_json):
    """Measure int8 vs float in one run: invoke latency p50/p99, rows/s, sizes, memory."""
    from .bench import bench_bundle
    from .report_text import bench_lines

    try:
        result = bench_bundle(bundle, invokes=invokes)
    except TinyadError as exc:
        raise fail(exc)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    for line in bench_lines(result):
        click.echo(line)


if __name__ == "__main__":  # pragma: no cover
    main()
