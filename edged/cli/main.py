"""Command line: edged run | check-config | schema | install-models | make-fp16 | make-sample | build-engine |
doctor | predict."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edged import EX_CONFIG, EX_IOERR, __version__
from edged.cli.build_engine import cmd_build_engine
from edged.cli.configfile import DEFAULT_CONFIG, STDIN, STDIN_NAME, load_or_report
from edged.cli.install_models import cmd_install_models
from edged.cli.logsetup import LEVELS, setup_logging
from edged.cli.make_fp16 import cmd_make_fp16
from edged.cli.predict import add_parser as add_predict

log = logging.getLogger("edged")


def cmd_run(args: argparse.Namespace) -> int:
    from edged.daemon.signals import SignalFlags

    # Before anything slow (config validation, OpenCV/ONNX Runtime imports, model loading): a SIGHUP in
    # start-up is then applied after start instead of killing the process, a SIGTERM stops it after start.
    signals = SignalFlags().install()
    # The schema first (model files are opened below): the health server starts before the slow part,
    # so /healthz answers within a second of the spawn and /readyz says "starting", then the warm-up's
    # progress (edged.daemon.status).
    cfg = load_or_report(args.config, require_cameras=True, check_files=False)
    if cfg is None:
        return EX_CONFIG
    setup_logging(args.log_level or cfg.logging.level, cfg.logging.json_format)
    from edged.observability.health.server import start_early
    from edged.observability.metrics import Metrics

    metrics = Metrics()
    health = None
    if cfg.health.enabled:
        h = cfg.health
        from edged.observability.health.http_io import BodyRoute

        pc = h.predict  # POST /predict's body limits are fixed when the server binds (the same as Daemon's)
        route = (
            BodyRoute(pc.max_body_bytes, pc.max_in_flight, reply_timeout_s=pc.timeout_s + 5)
            if pc.enabled
            else None
        )
        health = start_early(
            h.bind, h.port, metrics, device=cfg.device.name, version=__version__, predict_route=route
        )
    checked = load_or_report(args.config, require_cameras=True)  # and now every file it names
    if checked is None:
        if health is not None:
            health.stop()
        return EX_CONFIG
    cfg = checked
    from edged.daemon.daemon import Daemon, StartupError

    daemon = Daemon(
        cfg,
        Path(args.config).resolve(),
        stdout=args.stdout,
        signals=signals,
        metrics=metrics,
        health=health,
    )
    try:
        return daemon.run_forever()
    except StartupError as e:
        log.error("cannot start: %s", e)
        daemon.shutdown(flush_timeout_s=0)
        return EX_CONFIG


def cmd_check_config(args: argparse.Namespace) -> int:
    if args.file and args.config and args.file != args.config:
        print(f"edged: check-config: two files given ({args.file}, --config {args.config})", file=sys.stderr)
        return 2
    args.config = args.file or args.config or DEFAULT_CONFIG
    cfg = load_or_report(args.config, require_cameras=True)  # what `run` would accept
    if cfg is None:
        return EX_CONFIG
    cams = ", ".join(cfg.cameras) or "none"
    name = STDIN_NAME if args.config == STDIN else args.config
    print(f"{name}: OK ({len(cfg.models)} model(s), camera(s): {cams})")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from edged.config.schema import Config

    if args.event:
        from edged.publish.event import event_schema

        print(json.dumps(event_schema(), indent=2))
    else:
        print(json.dumps(Config.model_json_schema(), indent=2))
    return 0


def cmd_make_sample(args: argparse.Namespace) -> int:
    if args.scene == "traffic":
        from edged.demo.sample_traffic import FRAMES, make_traffic_sample

        out = args.out or "samples/traffic.mp4"
        truth = make_traffic_sample(
            Path(out),
            frames=min(args.frames, FRAMES),
            fps=args.fps or 5.0,
            seed=25 if args.seed is None else args.seed,
        )
    elif args.scene == "gate":
        from edged.demo.sample_gate import make_gate_sample

        out = args.out or "samples/gate.mp4"
        fps = args.fps or 5.0
        truth = make_gate_sample(
            Path(out), seconds=args.seconds, fps=fps, seed=11 if args.seed is None else args.seed
        )
    else:
        from edged.demo.sample import make_sample

        out = args.out or "samples/plates.mp4"
        truth = make_sample(
            Path(out), frames=args.frames, seed=7 if args.seed is None else args.seed, fps=args.fps or 15.0
        )
    visible = sum(1 for plates in truth if plates)
    print(
        f"wrote {out}: {len(truth)} frames, plates in view in {visible} ({100 * visible / len(truth):.1f} %)"
    )
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from edged.cli.doctor import FAIL, render, run_checks

    results = run_checks(args.config)
    table, code = render(results)
    if args.json:
        failed = [c.name for c in results if c.status == FAIL]
        print(
            json.dumps({"ok": not failed, "failed": failed, "checks": [asdict(c) for c in results]}, indent=2)
        )
    else:
        print(table)
    return code


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions keep their line breaks; each option's help ends with its default when it has one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "default" not in text:
            text += " (default: %(default)s)"
        return text


def _log_level(value: str) -> str:
    name = value.strip().lower()  # DEBUG, Debug and debug are the same level
    if name not in LEVELS:
        raise argparse.ArgumentTypeError(f"invalid level {value!r} (choose from {', '.join(LEVELS)})")
    return name


def _sub(
    sub: argparse._SubParsersAction, name: str, summary: str, description: str
) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    return sub.add_parser(  # type: ignore[no-any-return]
        name, help=summary, description=f"{summary}.\n\n{description}", formatter_class=_HelpFormatter
    )


def _config_option(p: argparse.ArgumentParser, default: str | None, what: str) -> None:
    p.add_argument("--config", "-c", default=default, metavar="FILE", help=what)


def _level_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--log-level",
        type=_log_level,
        metavar="LEVEL",
        help=f"one of {', '.join(LEVELS)} (any case); default: the config's logging.level",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edged",
        description="Edge inference daemon: cameras -> model chains -> MQTT.",
        epilog="`edged COMMAND --help` describes each command.",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"edged {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = _sub(
        sub,
        "run",
        "run the daemon",
        "Starts every configured camera and model, publishes events to MQTT and serves the health\n"
        "endpoint until SIGTERM/SIGINT; SIGHUP reloads the config. Exit 78 on a bad config.",
    )
    _config_option(r, DEFAULT_CONFIG, "the config file")
    r.add_argument("--stdout", action="store_true", help="also print each event as one JSON line on stdout")
    _level_option(r)
    r.set_defaults(func=cmd_run)

    c = _sub(
        sub,
        "check-config",
        "validate a config file (exit 0, or 78 with every problem listed)",
        "Checks YAML syntax, the schema (with a suggestion for misspelt keys), references between\n"
        "cameras and models, and that model files exist and load, reporting all it finds at once.",
    )
    c.add_argument(
        "file",
        nargs="?",
        metavar="FILE",
        help=f"the config file (same as --config; `-` reads it from standard input; default {DEFAULT_CONFIG})",
    )
    _config_option(c, None, "the config file (same as the positional FILE)")
    c.set_defaults(func=cmd_check_config)

    s = _sub(
        sub,
        "schema",
        "print a JSON Schema",
        "The schema of the config file, or with --event the schema of the MQTT event messages.",
    )
    s.add_argument("--event", action="store_true", help="print the event schema instead of the config schema")
    _config_option(s, None, "ignored (accepted so every command takes --config)")
    s.set_defaults(func=cmd_schema)

    m = _sub(
        sub,
        "install-models",
        "copy the bundled PP-OCR models into a folder",
        "Copies the PP-OCR ONNX models out of the installed rapidocr wheel; nothing is downloaded.",
    )
    m.add_argument("--dest", default="models", metavar="DIR", help="folder to copy the models into")
    _config_option(m, None, "ignored (accepted so every command takes --config)")
    m.set_defaults(func=cmd_install_models)

    f = _sub(
        sub,
        "make-fp16",
        "write the fp16 version of ONNX models (for onnxruntime.fp16)",
        "Writes <stem>.fp16.onnx beside each model: float16 weights and activations for ONNX Runtime's\n"
        "CUDA provider, spatial means and float32 inputs/outputs kept. Needs the `onnx` package.",
    )
    f.add_argument("models", nargs="+", metavar="MODEL", help="an ONNX model file")
    f.add_argument("--force", action="store_true", help="make it again when the fp16 file exists")
    _config_option(f, None, "ignored (accepted so every command takes --config)")
    f.set_defaults(func=cmd_make_fp16)

    g = _sub(
        sub,
        "make-sample",
        "write a deterministic sample video and its ground truth",
        "Writes a synthetic video and, beside it, a JSON file with the true text per frame: moving plates (the demo), a mostly empty gate scene (motion gating) or a calibrated road (analytics: its crossings, zone visits, speeds and identities).",
    )
    g.add_argument(
        "--scene",
        choices=("plates", "gate", "traffic"),
        default="plates",
        help="plates: 10 s of plates moving all the time; gate: a mostly empty gate, a car now and then; "
        "traffic: 20 s of a calibrated road with lines, a zone, stops and crossing paths (docs/analytics.md)",
    )
    g.add_argument(
        "--out",
        default=None,
        help="video path (default samples/plates.mp4, samples/gate.mp4 or samples/traffic.mp4)",
    )
    g.add_argument(
        "--frames",
        type=int,
        default=150,
        help="plates scene: number of frames; traffic: at most 100 (its length)",
    )
    g.add_argument("--seconds", type=float, default=600.0, help="gate scene: length in seconds")
    g.add_argument(
        "--fps", type=float, default=None, help="frame rate (default 15 plates, 5 gate and traffic)"
    )
    g.add_argument(
        "--seed", type=int, default=None, help="random seed (default 7 plates, 11 gate, 25 traffic)"
    )
    _config_option(g, None, "ignored (accepted so every command takes --config)")
    g.set_defaults(func=cmd_make_sample)

    b = _sub(
        sub,
        "build-engine",
        "build (or refresh) the configured models' engines into the engine cache",
        "Builds each model's engine (TensorRT where it runs, else the ONNX Runtime optimized model) into the one engine cache ahead of `run`, under the key the daemon looks up (docs/engines.md).",
    )
    _config_option(b, DEFAULT_CONFIG, "the config file")
    b.add_argument(
        "--model", action="append", metavar="NAME", help="only this model (repeatable); default: all"
    )
    _level_option(b)
    b.set_defaults(func=cmd_build_engine)

    d = _sub(
        sub,
        "doctor",
        "check this machine for what edged needs, with a fix for each failure",
        "Exit 1 when a required check fails (a backend, a config, the outbox); absent accelerations\n"
        "on a plain PC are reported, not failed.",
    )
    _config_option(d, None, "also check this config, its outbox folder and its broker")
    d.add_argument("--json", action="store_true", help="print the checks as JSON instead of a table")
    d.set_defaults(func=cmd_doctor)

    add_predict(sub, _sub, _config_option)
    return p


class StdoutError(Exception):
    """Writing to standard output failed (a closed pipe, a full disk): the command's output is lost."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error.strerror or str(error))
        self.error = error


class _GuardedStdout:
    """sys.stdout, with its write errors told apart from those of the files a command writes."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def write(self, text: str) -> int:
        try:
            return int(self._inner.write(text))
        except OSError as e:
            raise StdoutError(e) from e

    def flush(self) -> None:
        try:
            self._inner.flush()
        except OSError as e:
            raise StdoutError(e) from e

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _subcommand_parser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # the sub-command's usage, not the top level's (clig.dev): `edged run --bogus`
        _subcommand_parser(parser, args.command).error(f"unrecognized arguments: {' '.join(unknown)}")
    real_stdout, sys.stdout = sys.stdout, _GuardedStdout(sys.stdout)  # type: ignore[assignment]
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe or a full disk shows here, inside the handler, not at exit
        return code
    except KeyboardInterrupt:
        return 130
    except StdoutError as e:
        # `edged schema > /dev/full`, `edged schema | head`: one line, EX_IOERR. Point stdout at /dev/null
        # so the interpreter's final flush of what is still buffered does not fail again.
        print(f"edged: {args.command}: cannot write to standard output: {e}", file=sys.stderr)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, real_stdout.fileno())
        return EX_IOERR
    finally:
        sys.stdout = real_stdout
