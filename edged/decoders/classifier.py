"""Image classifiers run on crops: softmax (optional), top-k, labels from the labels file."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from pydantic import Field

from edged.decoders._common import check_batch, pick_output, shape_error, softmax
from edged.decoders.base import DecodeParams, Decoder, register
from edged.preprocess.spec import Plan, PreprocessSpec
from edged.types import Detection

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ClassifierParams(DecodeParams):
    top_k: int = Field(1, ge=1, description="How many classes to report; above 1 they go to attrs.topk.")
    softmax: bool = Field(
        True, description="Apply softmax to the outputs (off when the model already outputs probabilities)."
    )
    output: str = Field("", description="Output tensor name; empty = the model's first output.")


def top_k(probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """[N, nc] -> (indices [N, k], values [N, k]) in descending order."""
    k = min(k, probs.shape[1])
    part = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(probs, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(vals, order, axis=1)


@register("classifier")
class ClassifierDecoder(Decoder):
    Params = ClassifierParams
    per_crop = True
    default_preprocess = PreprocessSpec(
        resize="stretch", size=(224, 224), color="rgb", mean=IMAGENET_MEAN, std=IMAGENET_STD
    )

    def decode(self, outputs: Mapping[str, np.ndarray], plans: Sequence[Plan]) -> list[list[Detection]]:
        p = self.params
        assert isinstance(p, ClassifierParams)
        raw = pick_output(outputs, self.kind, p.output)
        # [N, nc, 1, 1] from conv heads is the same thing as [N, nc].
        if raw.ndim == 4 and raw.shape[2:] == (1, 1):
            raw = raw[:, :, 0, 0]
        if raw.ndim != 2 or raw.shape[1] < 1:
            raise shape_error(self.kind, "output", raw.shape, "[N, num_classes]")
        check_batch(self.kind, "output", raw, plans)
        probs = softmax(raw.astype(np.float32), axis=1) if p.softmax else raw.astype(np.float32)
        idx, vals = top_k(probs, p.top_k)
        results: list[list[Detection]] = []
        for ids, vs in zip(idx, vals, strict=True):
            attrs = (
                {"topk": [[self.label(int(i)), round(float(v), 4)] for i, v in zip(ids, vs, strict=True)]}
                if p.top_k > 1
                else {}
            )
            results.append(
                [
                    Detection(
                        label=self.label(int(ids[0])),
                        score=float(vs[0]),
                        box=(0.0, 0.0, 0.0, 0.0),
                        class_id=int(ids[0]),
                        attrs=attrs,
                    )
                ]
            )
        return results
