"""One search worker process: ``python -m toolchain.search.worker CONFIG_JSON INDEX``.

``tinyad search --jobs N`` starts N of these; each runs trials of the study named in the
coordinator's search.json until the study holds the budget. TensorFlow runs one thread per
worker (the coordinator sets TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    from firmware_host.errors import TinyadError

    from .study import work

    config = json.loads(Path(argv[0]).read_text())
    try:
        _one_thread()
        work(config, int(argv[1]))
    except TinyadError as exc:
        print(exc, file=sys.stderr)     # the coordinator reports it as one line
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _one_thread() -> None:
    """TensorFlow's own thread pools at one thread (the environment variables set by the
    coordinator cover its start-up; this covers the pools created later)."""
    from ..keras_env import import_tf

    tf, _ = import_tf()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
