"""`edged build-engine`: build the configured models' engines into the engine cache, ahead of `run`.

TensorRT plans where TensorRT runs (strict `tensorrt` and `auto` models), else ONNX Runtime's optimized
models for CPU sessions, under the key the daemon looks up (docs/engines.md). An entry already there is
verified (its recorded size and SHA-256, then a load) and, when damaged, moved to the cache's
quarantine/ and built again. Progress is a bar on a
terminal and throttled lines under systemd (progress.py). Runs in the CLI's main thread.
"""

from __future__ import annotations

import argparse
import sys

from edged import EX_CONFIG
from edged.cli.configfile import load_or_report
from edged.cli.logsetup import setup_logging


def cmd_build_engine(args: argparse.Namespace) -> int:
    """Build into the engine cache what the daemon will load: TensorRT plans where TensorRT runs (strict
    `tensorrt` and `auto` models), else ONNX Runtime's optimized models for CPU sessions."""
    cfg = load_or_report(args.config)
    if cfg is None:
        return EX_CONFIG
    setup_logging(args.log_level or "info")
    from edged.cli.progress import Progress
    from edged.infer.base import ModelLoadError
    from edged.infer.builds import BuildJob, verify_and_build
    from edged.infer.factory import choose_backend
    from edged.infer.onnxruntime import cpu_only
    from edged.serving.loading import engine_options

    for name in args.model or list(cfg.models):
        m = cfg.models.get(name)
        if m is None:
            print(f"edged: no model {name!r} in {args.config}", file=sys.stderr)
            return EX_CONFIG
        options = engine_options(m)
        try:
            backend, _ = choose_backend(m.backend)
        except ModelLoadError as e:
            print(f"edged: model {name}: {e}", file=sys.stderr)
            return 1
        if backend == "onnxruntime" and not cpu_only(options):
            print(f"model {name}: nothing to build (ONNX Runtime on CUDA optimizes at load)")
            continue
        # A bar on a terminal, plain throttled lines under systemd (journald).
        with Progress(f"{backend} engine {name}", stream=sys.stderr) as progress:
            try:
                path, done = verify_and_build(
                    BuildJob(name, m.model_file, backend, options), progress.phase_callback()
                )
            except ModelLoadError as e:
                progress.close("failed")
                print(f"edged: model {name}: {e}", file=sys.stderr)
                return EX_CONFIG
        print(f"model {name} ({done}): {backend} engine {path}")
    return 0
