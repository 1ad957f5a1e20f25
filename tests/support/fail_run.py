"""`edged run` with one model failing to load for a machine state (test support, run as
`python -m tests.support.fail_run`).

The fault is a boundary that cannot run here: CUDA running out of device memory while the engine is
made. It is injected by the test through the daemon's `engine_wrap` argument, which raises the
ModelLoadError ONNX Runtime's CUDA provider would cause; the daemon has no fault hook of its own.

Usage: python -m tests.support.fail_run --config FILE --model text_cls [--stdout]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edged.infer.base import Engine, ModelLoadError

# What ONNX Runtime's CUDA provider says when the device has no memory left for a session.
CUDA_OOM = (
    "ONNX Runtime (CUDA) cannot load it: CUDA failure 2: out of memory ; GPU=0 ; "
    "expr=cudaMalloc((void**)&p, size)"
)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--stdout", action="store_true")
    a = ap.parse_args()
    from edged.daemon.signals import SignalFlags

    signals = SignalFlags().install()
    from edged.cli.logsetup import setup_logging
    from edged.config.loader import load_config

    cfg = load_config(a.config, require_cameras=True)
    setup_logging(cfg.logging.level, cfg.logging.json_format)
    from edged.daemon.daemon import Daemon

    def wrap(model: str, engine: Engine) -> Engine:
        if model == a.model:
            raise ModelLoadError(f"{cfg.models[model].path}: {CUDA_OOM}")
        return engine

    daemon = Daemon(cfg, Path(a.config).resolve(), stdout=a.stdout, signals=signals, engine_wrap=wrap)
    return daemon.run_forever()


if __name__ == "__main__":
    sys.exit(main())
