#!/usr/bin/env python3
"""Screenshot of the status page of a real `edged run` (the README picture, docs/status-page.png).

    python scripts/status_screenshot.py                     # 120 s of the demo video, then the picture
    python scripts/status_screenshot.py --seconds 30 --out /tmp/status.png

It starts a mosquitto and edged on the demo video (samples/plates.mp4, the PP-OCR models in models/;
`./scripts/demo.sh` or `edged install-models` + `edged make-sample` put them there), lets the plot's
history fill for `--seconds`, and saves what headless Chromium (Debian's `chromium`, as in
tests/test_status_page.py) renders. State (outbox, thumbnails) goes to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from _broker import free_port, mosquitto

ROOT = Path(__file__).resolve().parent.parent


def write_config(tmp: Path, video: Path, models: Path, broker: int, health: int, fps: float) -> Path:
    cfg = {
        "device": {"name": "demo"},
        "state_dir": str(tmp / "state"),
        "mqtt": {"host": "127.0.0.1", "port": broker, "outbox": {"dir": str(tmp / "outbox")}},
        "health": {"port": health},
        "models": {
            "text_det": {"path": str(models / "PP-OCRv6_det_small.onnx"), "kind": "ppocr_det"},
            "text_rec": {"path": str(models / "PP-OCRv6_rec_small.onnx"), "kind": "ppocr_rec"},
        },
        "cameras": {
            "gate": {
                "source": f"file://{video}",
                "loop": True,
                "fps": fps,
                "chain": [{"model": "text_det", "min_score": 0.5}, {"model": "text_rec", "on": "text_det"}],
            }
        },
    }
    path = tmp / "edged.yaml"
    path.write_text(json.dumps(cfg, indent=1))  # JSON is YAML
    return path


def wait_http(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"{url} did not answer within {timeout_s:.0f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--out", type=Path, default=ROOT / "docs/status-page.png", help="PNG to write")
    ap.add_argument("--seconds", type=float, default=120, help="how long edged runs before the picture")
    ap.add_argument("--fps", type=float, default=5, help="camera fps (the demo's 15 needs a fast machine)")
    ap.add_argument("--video", type=Path, default=ROOT / "samples/plates.mp4", help="source video")
    ap.add_argument("--models", type=Path, default=ROOT / "models", help="folder with the PP-OCR models")
    ap.add_argument("--size", default="1280,1000", help="window WIDTH,HEIGHT")
    args = ap.parse_args(argv)
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("chromium is not installed (apt install chromium)", file=sys.stderr)
        return 1
    if not args.video.is_file():
        print(f"{args.video}: no such video (python scripts/make_sample.py)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp_s, mosquitto(Path(tmp_s) / "broker") as broker_port:
        tmp, health = Path(tmp_s), free_port()
        config = write_config(tmp, args.video.resolve(), args.models.resolve(), broker_port, health, args.fps)
        with (tmp / "edged.log").open("wb") as log:
            edged = subprocess.Popen(
                [sys.executable, "-m", "edged", "run", "--config", str(config)], stderr=log
            )
        try:
            wait_http(f"http://127.0.0.1:{health}/healthz", 120)
            time.sleep(args.seconds)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 f"--user-data-dir={tmp / 'profile'}", "--virtual-time-budget=5000", "--hide-scrollbars",
                 f"--window-size={args.size}", f"--screenshot={args.out}", f"http://127.0.0.1:{health}/"],
                check=True, capture_output=True, timeout=120,
            )  # fmt: skip
        finally:
            edged.send_signal(signal.SIGTERM)
            edged.wait(30)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
