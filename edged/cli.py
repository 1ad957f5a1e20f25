"""Command line: edged run | check-config | schema | install-models | make-sample | build-engine | doctor."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from pathlib import Path

from edged import EX_CONFIG, __version__

log = logging.getLogger("edged")

BUNDLED_MODELS = (
    "PP-OCRv6_det_small.onnx",
    "PP-OCRv6_rec_small.onnx",
    "ch_ppocr_mobile_v2.0_cls_mobile.onnx",
)


def setup_logging(level: str = "info", json_format: bool = False) -> None:
    # Under systemd (JOURNAL_STREAM set) journald adds timestamps; on a terminal we add them.
    under_journal = "JOURNAL_STREAM" in os.environ
    fmt = (
        "%(levelname)s %(name)s: %(message)s"
        if under_journal
        else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if json_format:
        fmt = '{"t":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":%(message)r}'
    logging.basicConfig(level=getattr(logging, level.upper()), format=fmt, stream=sys.stderr, force=True)


def _load(path: str):  # type: ignore[no-untyped-def]
    from edged.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as e:
        n = len(e.problems)
        print(f"edged: config {path}: {n} problem{'s' if n > 1 else ''}:\n{e}", file=sys.stderr)
        return None


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    if cfg is None:
        return EX_CONFIG
    setup_logging(args.log_level or cfg.logging.level, cfg.logging.json_format)
    from edged.app import Daemon, StartupError

    daemon = Daemon(cfg, Path(args.config).resolve(), stdout=args.stdout)
    try:
        return daemon.run_forever()
    except StartupError as e:
        log.error("cannot start: %s", e)
        daemon.shutdown(flush_timeout_s=0)
        return EX_CONFIG


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    if cfg is None:
        return EX_CONFIG
    cams = ", ".join(cfg.cameras) or "none"
    print(f"{args.config}: OK ({len(cfg.models)} model(s), camera(s): {cams})")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from edged.config import Config

    if args.event:
        from edged.publish.event import event_schema

        print(json.dumps(event_schema(), indent=2))
    else:
        print(json.dumps(Config.model_json_schema(), indent=2))
    return 0


def cmd_install_models(args: argparse.Namespace) -> int:
    """Copy the PP-OCR ONNX models out of the installed rapidocr wheel (no download at run time)."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("rapidocr")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        print(
            "edged: the `rapidocr` package is not installed: pip install --no-deps rapidocr==3.10.0 (it carries the models)",
            file=sys.stderr,
        )
        return 1
    src_dir = Path(next(iter(spec.submodule_search_locations))) / "models"
    from edged.progress import Progress

    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    with Progress("install-models", total=len(BUNDLED_MODELS), unit="files", stream=sys.stderr) as progress:
        for name in BUNDLED_MODELS:
            src = src_dir / name
            if not src.is_file():
                print(
                    f"edged: {src} is missing from the rapidocr package (rapidocr==3.10.0 ships it)",
                    file=sys.stderr,
                )
                return 1
            target = dest / name
            if not (target.is_file() and target.stat().st_size == src.stat().st_size):
                tmp = target.with_suffix(".part")
                shutil.copyfile(src, tmp)
                os.replace(tmp, target)  # atomic: a half-copied model is never picked up
            progress.advance()
    print(f"models ready in {dest} (PP-OCR, Apache-2.0, from rapidocr)")
    return 0


def cmd_make_sample(args: argparse.Namespace) -> int:
    if args.scene == "gate":
        from edged.sample_gate import make_gate_sample

        out = args.out or "samples/gate.mp4"
        fps = args.fps or 5.0
        truth = make_gate_sample(
            Path(out), seconds=args.seconds, fps=fps, seed=11 if args.seed is None else args.seed
        )
    else:
        from edged.sample import make_sample

        out = args.out or "samples/plates.mp4"
        truth = make_sample(
            Path(out), frames=args.frames, seed=7 if args.seed is None else args.seed, fps=args.fps or 15.0
        )
    visible = sum(1 for plates in truth if plates)
    print(
        f"wrote {out}: {len(truth)} frames, plates in view in {visible} ({100 * visible / len(truth):.1f} %)"
    )
    return 0


def cmd_build_engine(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    if cfg is None:
        return EX_CONFIG
    setup_logging(args.log_level or "info")
    try:
        from edged.infer.tensorrt import build_engine_for_config
    except ImportError as e:
        print(f"edged: TensorRT engine building is unavailable: {e}", file=sys.stderr)
        return 1
    return build_engine_for_config(cfg, args.model)


def cmd_doctor(args: argparse.Namespace) -> int:
    from edged.doctor import render, run_checks

    table, code = render(run_checks(args.config))
    print(table)
    return code


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edged", description="Edge inference daemon: cameras -> model chains -> MQTT"
    )
    p.add_argument("--version", action="version", version=f"edged {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run the daemon")
    r.add_argument("--config", "-c", default="/etc/edged/edged.yaml")
    r.add_argument("--stdout", action="store_true", help="also print each event as one JSON line on stdout")
    r.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    r.set_defaults(func=cmd_run)

    c = sub.add_parser(
        "check-config", help="validate a config file (exit 0, or 78 with every problem listed)"
    )
    c.add_argument("config")
    c.set_defaults(func=cmd_check_config)

    s = sub.add_parser(
        "schema", help="print the JSON Schema of the config (or of the MQTT event with --event)"
    )
    s.add_argument("--event", action="store_true")
    s.set_defaults(func=cmd_schema)

    m = sub.add_parser("install-models", help="copy the bundled PP-OCR models into a folder")
    m.add_argument("--dest", default="models")
    m.set_defaults(func=cmd_install_models)

    g = sub.add_parser("make-sample", help="write the deterministic demo video (moving license plates)")
    g.add_argument(
        "--scene",
        choices=("plates", "gate"),
        default="plates",
        help="plates: 10 s of plates moving all the time; gate: a mostly empty gate, a car now and then",
    )
    g.add_argument("--out", default=None, help="video path (default samples/plates.mp4 or samples/gate.mp4)")
    g.add_argument("--frames", type=int, default=150, help="plates scene: number of frames")
    g.add_argument("--seconds", type=float, default=600.0, help="gate scene: length in seconds")
    g.add_argument("--fps", type=float, default=None, help="frame rate (default 15 plates, 5 gate)")
    g.add_argument("--seed", type=int, default=None, help="random seed (default 7 plates, 11 gate)")
    g.set_defaults(func=cmd_make_sample)

    b = sub.add_parser("build-engine", help="build (or refresh) TensorRT engines for the configured models")
    b.add_argument("--config", "-c", default="/etc/edged/edged.yaml")
    b.add_argument("--model", action="append", help="only this model (repeatable)")
    b.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    b.set_defaults(func=cmd_build_engine)

    d = sub.add_parser("doctor", help="check this machine for what edged needs, with a fix for each failure")
    d.add_argument("--config", "-c", default=None)
    d.set_defaults(func=cmd_doctor)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
