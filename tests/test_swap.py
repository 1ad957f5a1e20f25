"""`edged run` serves at once and swaps in the engine its background builder makes, between batches:
a real daemon, a cold engine cache, the real ONNX Runtime offline optimizer as the builder."""

from __future__ import annotations

import json
from pathlib import Path

from edged.demo.truth import sample_truth
from tests.support.broker import free_port
from tests.support.edged import EdgedProcess, camera, small_sample, wait_until, write_config


def test_the_built_engine_is_swapped_in_without_losing_reordering_or_repeating_a_frame(
    tmp_path: Path,
) -> None:
    video = small_sample(tmp_path, frames=60)  # every frame taken: the build finishes while frames flow
    cfg_path = write_config(
        tmp_path, {"gate": camera(video, fps=30, loop=False, realtime=False)}, health_port=free_port()
    )
    cfg = json.loads(cfg_path.read_text())
    cfg["models"]["text_det"]["tensorrt"] = {"cache_dir": str(tmp_path / "cache")}  # cold: nothing built yet
    cfg_path.write_text(json.dumps(cfg))
    with_text = [i for i, t in enumerate(sample_truth(video, 60)) if t]
    last = with_text[-1]
    proc = EdgedProcess(cfg_path)
    try:
        assert wait_until(lambda: "startup summary" in proc.text(), 120), proc.text()
        assert wait_until(lambda: "swapped between batches" in proc.text(), 120), proc.text()
        at_swap = len(proc.events())
        assert wait_until(lambda: "end of file" in proc.text(), 120), proc.text()
        assert wait_until(lambda: proc.events() and proc.events()[-1]["seq"] == last, 60), proc.text()
    finally:
        assert proc.stop() == 0, proc.text()
    log = proc.text()
    assert log.index("startup summary") < log.index("swapped between batches")  # ready before the build ended
    assert "now serving on onnxruntime/cpu, optimized model" in log
    seqs = [e["seq"] for e in proc.events()]
    assert seqs == sorted(set(seqs)), "an event was repeated or reordered"
    # Every frame with text gave its event (frames without text give none), before and after the swap.
    assert set(with_text) <= set(seqs), sorted(set(with_text) - set(seqs))
    assert 0 < at_swap < len(seqs), f"the swap came before the first or after the last event ({at_swap})"
