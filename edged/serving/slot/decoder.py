"""`SwitchableDecoder`: a model server's decoder across a switch of its engine (edged.serving.slot).

Two engines of one model may need two decoders (a recognizer's character set comes from its file). The
slot switches engines between two batches on the batch thread while the decode thread may still be
decoding older batches, so the switch point travels with the data: the batch thread marks the outputs
of the first batch of the new engine (`switch_at`), and the decode thread, which decodes in order,
changes decoders when it reaches them. Only used with in-thread decoding (`batching.decode_workers: 0`): worker processes
hold their own copy of the decoder.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping, Sequence

import numpy as np

from edged.decoders.base import Decoder
from edged.preprocess.spec import Plan
from edged.types import Detection


class SwitchableDecoder(Decoder):
    """The server's decoder across switches (decode thread). `switch_at(outputs, decoder)` (batch
    thread): from that batch's outputs on, decode with `decoder`. Made per decoder class by `wrap`, so
    the class attributes the chain reads (per_crop, text_crops, ...) stay those of the model's kind."""

    def __init__(self, decoder: Decoder) -> None:
        super().__init__(decoder.params, decoder.labels, decoder.metadata)
        self.current = decoder
        self._marks: deque[tuple[Mapping[str, np.ndarray], Decoder]] = deque()
        self._lock = threading.Lock()

    @staticmethod
    def wrap(decoder: Decoder) -> SwitchableDecoder:
        return _switchable(type(decoder))(decoder)

    def switch_at(self, outputs: Mapping[str, np.ndarray], decoder: Decoder) -> None:
        with self._lock:
            self._marks.append((outputs, decoder))

    def decode(self, outputs: Mapping[str, np.ndarray], plans: Sequence[Plan]) -> list[list[Detection]]:
        with self._lock:
            if self._marks and self._marks[0][0] is outputs:
                self.current = self._marks.popleft()[1]
        return self.current.decode(outputs, plans)


_SWITCHABLE: dict[type[Decoder], type[SwitchableDecoder]] = {}


def _switchable(cls: type[Decoder]) -> type[SwitchableDecoder]:
    if cls not in _SWITCHABLE:
        _SWITCHABLE[cls] = type(f"Switchable{cls.__name__}", (SwitchableDecoder, cls), {})
    return _SWITCHABLE[cls]
