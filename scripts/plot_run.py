"""Plot bench_run.py results: `edged run` frames/s beside the engines-only rate, and p50/p99 latency,
against the number of cameras; one pair of lines per chain.

Usage: python scripts/plot_run.py docs/run-h200.png docs/data/run-det-h200.jsonl docs/data/run-ocr-h200.jsonl
A source may pick rows of a file that holds several: `FILE#CHAIN#PRECISION`, e.g. `run-h-h200.jsonl#det#fp32`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main(dst: str, sources: list[str]) -> int:
    fig, (ax_fps, ax_lat) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"])
    for src in sources:
        path, *pick = src.split("#")
        rows = sorted(
            (json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()),
            key=lambda r: r["cameras"],
        )
        if pick:
            rows = [r for r in rows if r.get("chain") == pick[0]]
        if len(pick) > 1:
            rows = [r for r in rows if ("fp16" if r.get("fp16") else "fp32") == pick[1]]
        assert rows, f"no rows in {src}"
        chain = rows[0].get("chain") or Path(path).stem.split("-")[1]
        cams = [r["cameras"] for r in rows]
        c = next(colors)
        ax_fps.plot(
            cams, [r["steady_fps"] for r in rows], "o-", color=c, label=f"{chain}: edged run (steady)"
        )
        ax_fps.plot(
            cams,
            [r["engines_only_fps"] for r in rows],
            "s--",
            color=c,
            alpha=0.6,
            label=f"{chain}: engines only",
        )
        ax_lat.plot(cams, [r["latency_p50_ms"] for r in rows], "o-", color=c, label=f"{chain}: p50")
        ax_lat.plot(cams, [r["latency_p99_ms"] for r in rows], "^:", color=c, label=f"{chain}: p99")
    for ax, ylabel in ((ax_fps, "aggregate frames/s"), (ax_lat, "capture -> event latency, ms")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("cameras (1080p MJPEG files)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    ax_lat.set_yscale("log")
    fig.suptitle("edged run on N cameras, NVIDIA H200 (docs/benchmarks.md)")
    fig.tight_layout()
    fig.savefig(dst, dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
