"""Shadow check: the comparison rules on hand-made detections, then two real recognizers on real plate
crops of the sample video: the same PP-OCRv6 recognizer after ONNX Runtime's offline optimization (a
real build through the engine cache) agrees; the PP-OCRv4 recognizer (rapidocr-onnxruntime wheel), a
different network with another character set, is refused with the reads that differ."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from edged.decoders.registry import build_decoder
from edged.infer.base import Engine, EngineOptions
from edged.infer.builds import BuildJob, build_now, load_engine
from edged.infer.factory import create_engine
from edged.preprocess.cpu import preprocess_crops
from edged.serving.slot.shadow import ShadowCheck, ShadowReport, ShadowTolerance, box_iou, compare
from edged.serving.slot.switch import Decision, EngineSwitch
from edged.types import Detection
from tests.support.paths import ROOT, need_models

NO_BOX = (0.0, 0.0, 0.0, 0.0)


def det(
    label: str, score: float, box: tuple[float, float, float, float] = NO_BOX, **children: list[Detection]
) -> Detection:
    return Detection(label, score, box, children=dict(children))


def test_identical_results_agree() -> None:
    frames = [[det("plate", 0.9, (10, 10, 110, 40))], [], [det("AB12", 0.97), det("CD34", 0.95)]]
    report = compare(frames, frames)
    assert report.agree and report.frames == 3 and report.matched == 3 and report.reasons == []


def test_boxes_are_matched_by_iou_not_order() -> None:
    old = [[det("a", 0.9, (0, 0, 100, 50)), det("b", 0.8, (200, 0, 300, 50))]]
    new = [[det("b", 0.81, (202, 1, 301, 50)), det("a", 0.9, (1, 0, 100, 51))]]  # reordered, moved a pixel
    assert compare(old, new).agree
    moved = [[det("a", 0.9, (60, 0, 160, 50)), det("b", 0.8, (200, 0, 300, 50))]]  # IoU 0.25 < 0.5
    report = compare(old, moved)
    assert not report.agree and report.missing == 1 and report.extra == 1
    assert report.reasons[0] == "frame 0: 'a' (0.90) at [0, 0, 100, 50] not found by the candidate"
    assert report.reasons[1] == "frame 0: the candidate adds 'a' (0.90) at [60, 0, 160, 50]"
    assert box_iou((0, 0, 100, 50), (60, 0, 160, 50)) == pytest.approx(0.25)


def test_strings_scores_and_children_are_compared() -> None:
    plate = (10, 10, 110, 40)
    old = [[det("text", 0.9, plate, rec=[det("DY03 UUR", 0.96)])]]
    relabelled = [[det("text", 0.9, plate, rec=[det("DY03UUR", 0.96)])]]
    report = compare(old, relabelled)
    assert not report.agree and report.label_mismatches == 1
    assert report.reasons == ["frame 0 > text/rec: 'DY03 UUR' (0.96) became 'DY03UUR' (0.96)"]
    drifted = [[det("text", 0.9, plate, rec=[det("DY03 UUR", 0.80)])]]
    report = compare(old, drifted)
    assert not report.agree and report.drifted == 1 and report.max_score_drift == pytest.approx(0.16)
    assert compare(old, drifted, ShadowTolerance(max_score_drift=0.2)).agree


def test_tolerated_fraction_of_disagreeing_frames() -> None:
    old = [[det("A", 0.9)] for _ in range(10)]
    new = [[det("A", 0.9)] for _ in range(9)] + [[det("B", 0.9)]]
    assert not compare(old, new).agree
    report = compare(old, new, ShadowTolerance(max_disagreeing_frames=0.1))
    assert report.agree and report.disagreeing_frames == 1 and "1 relabelled" in report.summary()


def test_nothing_compared_is_no_agreement() -> None:
    report = ShadowCheck().report()
    assert not report.agree and report.reasons == ["no frames were compared"]
    with pytest.raises(ValueError, match="same inputs"):
        compare([[]], [])


def v4_recognizer() -> Path:
    try:
        import rapidocr_onnxruntime
    except ImportError:
        pytest.fail("the PP-OCRv4 models are missing: pip install --no-deps rapidocr-onnxruntime==1.4.4")
    return Path(rapidocr_onnxruntime.__file__).parent / "models" / "ch_PP-OCRv4_rec_infer.onnx"


@pytest.fixture(scope="module")
def plate_crops() -> list[tuple[np.ndarray, list[np.ndarray]]]:
    """(frame, plate text quadrilaterals) for every other frame of the first 40 of the sample video (its ground truth)."""
    import cv2

    video = ROOT / "samples" / "plates.mp4"
    if not video.is_file():
        pytest.fail(f"{video} missing: run `edged make-sample --out {video}`")
    truth = json.loads(video.with_suffix(".json").read_text())["truth"]
    cap = cv2.VideoCapture(str(video))
    out = []
    for i in range(40):
        ok, frame = cap.read()
        assert ok, f"cannot read frame {i} of {video}"
        if i % 2 == 0:
            out.append((frame, [np.array(p["polygon"], np.float32) for p in truth[i]]))
    cap.release()
    return out


def read_frame(engine: Engine, frame: np.ndarray, quads: list[np.ndarray]) -> list[Detection]:
    """The recognizer's reads of the plates of one frame (crops at the ground-truth text boxes)."""
    if not quads:
        return []
    decoder = build_decoder("ppocr_rec", {}, metadata=engine.metadata)
    x, plans = preprocess_crops(frame, quads, decoder.default_preprocess)
    return [r[0] for r in decoder.decode(engine.infer({engine.inputs[0].name: x}), plans)]


def read_plates(engine: Engine, crops: list[tuple[np.ndarray, list[np.ndarray]]]) -> list[list[Detection]]:
    return [read_frame(engine, frame, quads) for frame, quads in crops]


def test_real_recognizers_agreeing_is_accepted_different_is_refused(
    plate_crops: list[tuple[np.ndarray, list[np.ndarray]]], tmp_path: Path
) -> None:
    rec = need_models() / "PP-OCRv6_rec_small.onnx"
    options = EngineOptions(providers=("CPUExecutionProvider",), cache_dir=tmp_path / "cache")
    serving = read_plates(create_engine("rec", rec, "onnxruntime"), plate_crops)
    assert sum(len(f) for f in serving) >= 30 and all(d.label for f in serving for d in f)

    job = BuildJob("rec", rec, "onnxruntime", options)
    optimized = load_engine(job, build_now(job))
    assert optimized.info.detail.startswith("optimized model ")
    same = compare(serving, read_plates(optimized, plate_crops))
    assert same.agree, same.summary()
    assert same.matched == sum(len(f) for f in serving) and same.max_score_drift < 1e-3

    v4 = create_engine("rec_v4", v4_recognizer(), "onnxruntime")
    other = compare(serving, read_plates(v4, plate_crops))
    # PP-OCRv4 reads some plates differently (spaces): refused, and the report says which reads changed,
    # frame by frame (which plates differ depends on the machine's float kernels, not on edged).
    assert not other.agree and other.label_mismatches > 0, other.summary()
    assert all(re.match(r"frame \d+: ", r) for r in other.reasons), other.reasons
    became = r"frame \d+: '.+' \(\d\.\d\d\) became '.+' \(\d\.\d\d\)"
    assert any(re.fullmatch(became, r) for r in other.reasons), other.reasons
    assert other.summary().startswith("disagree: ")


def test_live_swap_takes_the_agreeing_model_refuses_the_other_and_rolls_back(
    plate_crops: list[tuple[np.ndarray, list[np.ndarray]]], tmp_path: Path
) -> None:
    rec = need_models() / "PP-OCRv6_rec_small.onnx"
    options = EngineOptions(providers=("CPUExecutionProvider",), cache_dir=tmp_path / "cache")
    job = BuildJob("rec", rec, "onnxruntime", options)
    crops = plate_crops  # every frame: which plates PP-OCRv4 reads differently depends on the machine
    events: list[Decision] = []
    swap = EngineSwitch(
        "text_rec",
        create_engine("rec", rec, "onnxruntime"),
        "v6",
        frames=len(crops),
        on_event=events.append,
    )

    def run_frames() -> ShadowReport | None:
        """What the model server does: every frame on the active engine, and on the candidate too."""
        final = None
        for i, (frame, quads) in enumerate(crops):
            served = read_frame(swap.active, frame, quads)
            if swap.candidate is not None:
                final = swap.observe(i, served, read_frame(swap.candidate, frame, quads)) or final
        return final

    swap.propose(load_engine(job, build_now(job)), "v6-optimized")
    assert (
        swap.status()["candidate"] == "v6-optimized" and swap.status()["shadow_frames"] == f"0/{len(crops)}"
    )
    report = run_frames()
    assert report is not None and report.agree, report
    assert swap.active_label == "v6-optimized" and swap.previous_label == "v6" and swap.candidate is None

    swap.propose(create_engine("rec_v4", v4_recognizer(), "onnxruntime"), "v4")
    report = run_frames()
    # refused for what differs (a changed read or a drifted score: which one depends on the float kernels)
    assert report is not None and not report.agree and report.label_mismatches + report.drifted > 0, report
    assert swap.active_label == "v6-optimized" and swap.candidate is None  # the old model keeps serving
    assert swap.status()["last_report"]["agree"] is False

    assert swap.rollback() and swap.active_label == "v6" and swap.previous_label == ""
    assert not swap.rollback()  # nothing further back
    assert [e.what for e in events] == [
        "shadow_started",
        "switched",
        "shadow_started",
        "refused",
        "rolled_back",
        "rollback_refused",
    ]
    swap.propose(create_engine("rec_v4", v4_recognizer(), "onnxruntime"), "v4", force=True)
    assert swap.active_label == "v4" and swap.previous_label == "v6"
    assert swap.status()["counts"] == {
        "shadow_started": 2,
        "switched": 1,
        "forced": 1,
        "refused": 1,
        "rolled_back": 1,
    }
