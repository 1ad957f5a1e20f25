"""The PP-OCR decoders with the real rapidocr ONNX models, checked against rapidocr itself."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest
from _models import OcrChain, quad_iou, rapidocr_models_dir, rotate, text_image

from edged.preprocess.cpu import preprocess_frame

MODELS = rapidocr_models_dir()

S, D = cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX
LINES = [("AB12 CDE", S), ("KX-4471", D), ("7ZT 903", S)]
TEXTS = [t for t, _ in LINES]


@pytest.fixture(scope="module")
def chain() -> OcrChain:
    # A missing reference is a broken dev environment, not a reason to pass quietly.
    if MODELS is None:
        pytest.fail("rapidocr 3.10.0 with its ONNX models is needed: pip install 'edged[models]'")
    return OcrChain.load(MODELS)


@pytest.fixture(scope="module")
def plates() -> np.ndarray:
    return text_image(LINES)


@pytest.fixture(scope="module")
def plates_read(chain: OcrChain, plates: np.ndarray) -> list[Any]:
    return chain.read(plates)


@pytest.fixture(scope="module")
def reference(plates: np.ndarray) -> Any:
    from rapidocr import RapidOCR

    return RapidOCR(params={"Global.log_level": "warning"})(plates)


def test_reads_known_strings_in_reading_order(plates_read: list[Any]) -> None:
    assert [rec.label for _, rec, _ in plates_read] == TEXTS
    assert all(rec.score > 0.9 for _, rec, _ in plates_read)
    assert all(angle == 0 for _, _, angle in plates_read)


def test_same_boxes_and_texts_as_rapidocr(plates_read: list[Any], reference: Any) -> None:
    assert list(reference.txts) == TEXTS
    assert len(plates_read) == len(reference.boxes)
    for (box, rec, _), ref_box, ref_text, ref_score in zip(
        plates_read, reference.boxes, reference.txts, reference.scores, strict=True
    ):
        assert quad_iou(box.quad(), np.asarray(ref_box, dtype=np.float32)) > 0.9
        assert rec.label == ref_text
        assert rec.score == pytest.approx(ref_score, abs=0.05)


def test_db_postprocess_matches_rapidocr_on_the_real_probability_map(
    chain: OcrChain, plates: np.ndarray
) -> None:
    """Same map in, same boxes out: the edged DB port against rapidocr's DBPostProcess + sorted_boxes."""
    from rapidocr.ch_ppocr_det.main import TextDetector
    from rapidocr.ch_ppocr_det.utils import DBPostProcess

    # Turned by 10 degrees so the rotated-rectangle path runs on real output.
    img = rotate(plates, 10)
    x, plan = preprocess_frame(img, chain.det.decoder.default_preprocess)
    prob = chain.det.engine.infer({chain.det.engine.inputs[0].name: x})
    prob_map = next(iter(prob.values()))
    ours = chain.det.decoder.decode(prob, [plan])[0]

    ref = DBPostProcess(thresh=0.3, box_thresh=0.5, max_candidates=1000, unclip_ratio=1.6, use_dilation=True)
    ref_boxes, ref_scores = ref(prob_map, img.shape[:2])
    assert len(ref_boxes) == len(ours) == len(TEXTS)
    ref_sorted = TextDetector.sorted_boxes(ref_boxes)
    score_of = {tuple(b.reshape(-1)): s for b, s in zip(ref_boxes, ref_scores, strict=True)}
    for det, ref_box in zip(ours, ref_sorted, strict=True):
        assert quad_iou(det.quad(), ref_box.astype(np.float32)) > 0.95
        # Same mini box before unclip -> the very same mean probability.
        assert det.score == pytest.approx(score_of[tuple(ref_box.reshape(-1))], abs=1e-5)
    angles = [np.degrees(np.arctan2(*(d.quad()[1] - d.quad()[0])[::-1])) for d in ours]
    assert all(a == pytest.approx(-10, abs=2) for a in angles), angles


def test_rotated_line_reads(chain: OcrChain, plates: np.ndarray) -> None:
    got = chain.read(rotate(plates, 5))
    assert [rec.label for _, rec, _ in got] == TEXTS


def test_upside_down_line_reads_only_with_the_orientation_classifier(chain: OcrChain) -> None:
    flipped = rotate(text_image([("KX-4471", D)]), 180)
    ((_, rec, angle),) = chain.read(flipped)
    assert (rec.label, angle) == ("KX-4471", 180)
    ((_, unturned, _),) = chain.read(flipped, use_cls=False)
    assert unturned.label != "KX-4471"


@pytest.mark.parametrize("crop_wh", [(300, 50), (455, 50), (40, 48)])
def test_crop_tensors_equal_rapidocr_resize_norm(plates: np.ndarray, crop_wh: tuple[int, int]) -> None:
    """Default cls/rec preprocessing of a whole crop gives rapidocr's tensors (padding included)."""
    from types import SimpleNamespace

    from rapidocr.ch_ppocr_cls.main import TextClassifier
    from rapidocr.ch_ppocr_rec.main import TextRecognizer

    from edged.decoders.registry import get_decoder

    w, h = crop_wh
    crop = np.ascontiguousarray(plates[60 : 60 + h, 30 : 30 + w])
    rec_ref = TextRecognizer.resize_norm_img(
        SimpleNamespace(rec_image_shape=[3, 48, 320]), crop, max(320 / 48, w / h)
    )
    rec_ours, _ = preprocess_frame(crop, get_decoder("ppocr_rec").default_preprocess)
    assert rec_ours.shape == (1, *rec_ref.shape)
    np.testing.assert_allclose(rec_ours[0], rec_ref, atol=1e-5)
    cls_ref = TextClassifier.resize_norm_img(SimpleNamespace(cls_image_shape=[3, 48, 192]), crop)
    cls_ours, _ = preprocess_frame(crop, get_decoder("ppocr_cls").default_preprocess)
    np.testing.assert_allclose(cls_ours[0], cls_ref, atol=1e-5)


def test_ctc_decode_equals_rapidocr_on_real_output(chain: OcrChain, plates: np.ndarray) -> None:
    from rapidocr.ch_ppocr_rec.utils import CTCLabelDecode

    crops = [np.ascontiguousarray(plates[y : y + 70, 20:420]) for y in (70, 190, 310)]
    spec = chain.rec.decoder.default_preprocess
    batch = np.concatenate([preprocess_frame(c, spec)[0] for c in crops])
    out = chain.rec.engine.infer({chain.rec.engine.inputs[0].name: batch})
    ours = chain.rec.decoder.decode(out, [preprocess_frame(c, spec)[1] for c in crops])
    ref = CTCLabelDecode(character=chain.rec.engine.metadata["character"].splitlines())(
        next(iter(out.values()))
    )[0]
    assert [r[0].label for r in ours] == [t for t, _ in ref]
    # Loose crops (lots of margin) may lose the spaces; the characters must all be there.
    assert [r[0].label.replace(" ", "") for r in ours] == [t.replace(" ", "") for t in TEXTS]
    assert [r[0].score for r in ours] == pytest.approx([s for _, s in ref], abs=1e-4)


def test_reduced_forms_decode_like_the_full_outputs(chain: OcrChain, plates: np.ndarray) -> None:
    """What the GPU reductions hand the decoders (edged.gpu.postprocess: the detector map as bytes
    round(p * 255), the recognizer's best class and score per step) decodes to the same boxes and
    texts as the full outputs. Built here with numpy the way the kernels compute them; the kernels
    themselves are checked against numpy in tests/gpu."""
    from edged.decoders.ppocr import CTC_BEST, CTC_CLASSES, CTC_SCORE, PROB_U8

    img = rotate(plates, 10)
    x, plan = preprocess_frame(img, chain.det.decoder.default_preprocess)
    full = chain.det.engine.infer({chain.det.engine.inputs[0].name: x})
    prob = next(iter(full.values()))
    as_bytes = {PROB_U8: np.rint(np.clip(prob, 0, 1) * 255).astype(np.uint8)}
    ours, reduced = chain.det.decoder.decode(full, [plan])[0], chain.det.decoder.decode(as_bytes, [plan])[0]
    assert len(ours) == len(reduced) == len(TEXTS)
    for a, b in zip(ours, reduced, strict=True):
        assert quad_iou(a.quad(), b.quad()) > 0.98
        assert b.score == pytest.approx(a.score, abs=2 / 255)

    crops = [np.ascontiguousarray(plates[y : y + 70, 20:420]) for y in (70, 190, 310)]
    spec = chain.rec.decoder.default_preprocess
    batch = np.concatenate([preprocess_frame(c, spec)[0] for c in crops])
    plans = [preprocess_frame(c, spec)[1] for c in crops]
    scores = next(iter(chain.rec.engine.infer({chain.rec.engine.inputs[0].name: batch}).values()))
    best = {
        CTC_BEST: scores.argmax(-1).astype(np.int32),
        CTC_SCORE: scores.max(-1),
        CTC_CLASSES: np.array([scores.shape[2]]),
    }
    texts = [r[0].label for r in chain.rec.decoder.decode({"out": scores}, plans)]
    assert texts == [r[0].label for r in chain.rec.decoder.decode(best, plans)]
    assert all(texts)
