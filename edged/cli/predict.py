"""`edged predict IMAGE...`: pictures through a running daemon's chain (its POST /predict), the events
printed as JSON.

A client of the daemon, not a second one: the models stay loaded in `edged run`, and the pictures are
batched with its cameras' frames. The daemon is found at `--url`, else at the health address of
`--config` (default /etc/edged/edged.yaml when it exists), else at http://127.0.0.1:8089. `-` reads a
picture from standard input. Exit 0 with the daemon's answer on stdout; 1 with its one-line reason
when it refused (4xx/5xx); 69 (EX_UNAVAILABLE) when no daemon answers there.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from edged.cli.configfile import DEFAULT_CONFIG, STDIN

EX_UNAVAILABLE = 69
DEFAULT_URL = "http://127.0.0.1:8089"


def daemon_url(args: argparse.Namespace) -> str | None:
    """The daemon's base URL; None (after one line on stderr) when --config cannot be read."""
    if args.url:
        return str(args.url).rstrip("/")
    path = args.config or (DEFAULT_CONFIG if Path(DEFAULT_CONFIG).is_file() else None)
    if path is None:
        return DEFAULT_URL
    from edged.cli.configfile import load_or_report

    cfg = load_or_report(path)
    if cfg is None:
        return None
    host = cfg.health.bind
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    return f"http://{f'[{host}]' if ':' in host else host}:{cfg.health.port}"


def _read(name: str) -> bytes:
    return sys.stdin.buffer.read() if name == STDIN else Path(name).read_bytes()


def request_body(args: argparse.Namespace, pictures: list[bytes]) -> dict[str, Any]:
    """The DeepDetect-style JSON body of POST /predict (docs/predict.md)."""
    body: dict[str, Any] = {"data": [base64.b64encode(p).decode("ascii") for p in pictures]}
    if args.camera:
        body["camera"] = args.camera
    if args.chain:
        try:
            body["chain"] = json.loads(args.chain)
        except ValueError as e:
            raise ValueError(f"--chain is not JSON: {e}") from None
    if args.threshold is not None:
        body["parameters"] = {"output": {"confidence_threshold": args.threshold}}
    if args.publish:
        body["publish"] = True
    return body


def cmd_predict(args: argparse.Namespace) -> int:
    try:
        pictures = [_read(name) for name in args.images]
        body = json.dumps(request_body(args, pictures)).encode()
    except OSError as e:
        print(f"edged: predict: {e.filename or 'stdin'}: {e.strerror or e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"edged: predict: {e}", file=sys.stderr)
        return 2
    base = daemon_url(args)
    if base is None:
        return 78  # the config's problems are printed
    req = urllib.request.Request(
        f"{base}/predict", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=args.timeout) as r:
            answer = json.loads(r.read())
    except urllib.error.HTTPError as e:
        try:
            why = json.loads(e.read()).get("error", e.reason)
        except ValueError:
            why = e.reason
        hint = " (is health.predict.enabled on?)" if e.code == 405 else ""
        print(f"edged: predict: {base}: {e.code}: {why}{hint}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        print(
            f"edged: predict: no edged answers at {base} ({reason}); is `edged run` running?", file=sys.stderr
        )
        return EX_UNAVAILABLE
    print(json.dumps(answer, indent=2, ensure_ascii=False))
    return 0


def add_parser(sub: Any, make: Any, config_option: Any) -> None:
    """The `predict` sub-command (edged.cli.main builds the parser)."""
    p = make(
        sub,
        "predict",
        "run pictures through a running daemon's chain (POST /predict)",
        "Sends JPEG or PNG pictures to `edged run` (health.predict.enabled) and prints the events the\n"
        "camera's chain makes of them, as it would publish them (docs/predict.md). Exit 69 when no\n"
        "daemon answers, 1 when it refuses the request (the reason on stderr).",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="a JPEG or PNG file (`-`: standard input)")
    p.add_argument("--camera", metavar="NAME", help="the camera whose chain runs (default: the only one)")
    p.add_argument("--chain", metavar="JSON", help='a chain to run instead, e.g. \'[{"model": "text_det"}]\'')
    p.add_argument("--threshold", type=float, metavar="SCORE", help="the first stage's min_score instead")
    p.add_argument(
        "--publish", action="store_true", help="also publish the events to <prefix>/<camera>/predictions"
    )
    p.add_argument(
        "--url",
        metavar="URL",
        help=f"the daemon's health server (default: from --config, else {DEFAULT_URL})",
    )
    p.add_argument("--timeout", type=float, default=60.0, metavar="S", help="seconds to wait for the answer")
    config_option(p, None, "the daemon's config: where its health server listens")
    p.set_defaults(func=cmd_predict)
