"""Plot bench_streams.py results: aggregate frames/s and p99 latency vs number of streams.

One line per chain and batching mode (frame / engine, decode workers), plus engine-only throughput.

Usage: python scripts/plot_streams.py docs/data/streams-det-h100.json docs/streams-h100.png
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
    series: dict[tuple[str, str, int], list[dict]] = {}
    for r in data["rows"]:
        series.setdefault((r["chain"], r.get("mux", "engine"), r.get("decode_workers", 0)), []).append(r)
    colors = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"])
    engine_only: dict[str, list[dict]] = {}
    for (chain, mux, workers), rows in sorted(series.items()):
        rows.sort(key=lambda r: r["streams"])
        engine_only.setdefault(chain, rows)
        n = [r["streams"] for r in rows]
        label = f"{chain}, {mux} batching" + (f" + {workers} decode workers" if workers else "")
        color = next(colors)
        ax_fps.plot(n, [r["fps"] for r in rows], "o-", color=color, label=label)
        ax_lat.plot(n, [r["p99_ms"] for r in rows], "o-", color=color, label=f"{label}: p99")
    for chain, rows in engine_only.items():
        ax_fps.plot(
            [r["streams"] for r in rows],
            [r["engine_only_fps"] for r in rows],
            "s--",
            color="black",
            alpha=0.6,
            label=f"{chain}: detector engine only (batch = streams)",
        )
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
