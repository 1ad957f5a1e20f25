"""Plot bench_streams.py results: aggregate frames/s and p99 latency vs number of streams.

Usage: python scripts/plot_streams.py docs/data/streams-h100.json docs/streams-h100.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main(src: str, dst: str) -> int:
    data = json.loads(Path(src).read_text())
    fig, (ax_fps, ax_lat) = plt.subplots(1, 2, figsize=(11, 4.2))
    for chain, color in (("det", "tab:blue"), ("ocr", "tab:orange")):
        rows = sorted((r for r in data["rows"] if r["chain"] == chain), key=lambda r: r["streams"])
        if not rows:
            continue
        n = [r["streams"] for r in rows]
        ax_fps.plot(n, [r["fps"] for r in rows], "o-", color=color, label=f"{chain}: edged pipeline")
        ax_fps.plot(
            n,
            [r["engine_only_fps"] for r in rows],
            "s--",
            color=color,
            alpha=0.6,
            label=f"{chain}: detector engine only (batch = streams)",
        )
        ax_lat.plot(n, [r["p99_ms"] for r in rows], "o-", color=color, label=f"{chain}: p99")
        ax_lat.plot(n, [r["p50_ms"] for r in rows], "^:", color=color, alpha=0.7, label=f"{chain}: p50")
    for ax in (ax_fps, ax_lat):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("synthetic 1080p streams")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    ax_fps.set_yscale("log")
    ax_fps.set_ylabel("aggregate frames/s")
    ax_lat.set_ylabel("capture -> result latency, ms")
    fig.suptitle(f"edged many-stream benchmark on {data.get('device', '?')} (ONNX Runtime CUDA EP)")
    fig.tight_layout()
    fig.savefig(dst, dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
