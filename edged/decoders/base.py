"""Decoder protocol and registry: raw engine outputs -> Detections, one decoder class per model kind.

A decoder knows its model kind's default preprocessing and its own parameters (a pydantic model,
so `models.<name>.decode` in the YAML is validated with exact error locations). It never builds
messages and never touches the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from edged.preprocess.spec import Plan, PreprocessSpec
from edged.types import Detection


class DecodeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Decoder:
    """Base class. Subclasses set `kind`, `Params`, `default_preprocess` and implement `decode`."""

    kind: ClassVar[str]
    Params: ClassVar[type[DecodeParams]] = DecodeParams
    default_preprocess: ClassVar[PreprocessSpec]
    # True for models that run on crops and return one result per crop (classifier, recognizer).
    per_crop: ClassVar[bool] = False
    # True for models fed text-line crops: a crop much taller than wide is turned upright, and one an
    # orientation classifier marked 180 degrees is flipped, before this model sees it.
    text_crops: ClassVar[bool] = False

    def __init__(
        self, params: DecodeParams, labels: Sequence[str] = (), metadata: Mapping[str, str] | None = None
    ):
        self.params = params
        self.labels = list(labels)
        self.metadata = dict(metadata or {})

    def label(self, class_id: int) -> str:
        return self.labels[class_id] if 0 <= class_id < len(self.labels) else str(class_id)

    def decode(self, outputs: Mapping[str, np.ndarray], plans: Sequence[Plan]) -> list[list[Detection]]:
        """One list of detections per batch item, geometry mapped to source coordinates via `plans`.

        Per-crop decoders return exactly one Detection per item (its box is filled in by the chain).
        `outputs` may be reused once this returns: keep no views of them in the results.
        """
        raise NotImplementedError

    def reduce_on_device(self, outputs: Mapping[str, Any], rows: int) -> dict[str, Any] | None:
        """Optional: shrink the engine's device outputs (DeviceTensors, first `rows` items) on the GPU
        before they are downloaded (edged.gpu.postprocess), into a form `decode` also accepts. None:
        download the outputs as they are. Runs on the model server's batch thread, enqueued on the
        outputs' stream; must not wait for the GPU."""
        return None


DECODERS: dict[str, type[Decoder]] = {}


def register(kind: str) -> Callable[[type[Decoder]], type[Decoder]]:
    def wrap(cls: type[Decoder]) -> type[Decoder]:
        cls.kind = kind
        DECODERS[kind] = cls
        return cls

    return wrap
