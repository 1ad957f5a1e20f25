"""Helpers for chain tests on the real models: a delegating spy engine and a stage builder."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edged.chain.chain import Stage
from edged.infer.base import Engine
from edged.models import build_decoder, get_decoder
from edged.preprocess import CpuPreprocessor


class SpyEngine:
    """Wraps a real engine, records the batch rows of each call and can fail one call on purpose.

    It delegates every call to the real engine: a spy for counting, not a fake of the model.
    """

    def __init__(self, engine: Engine, fail_on_call: int | None = None):
        self._engine = engine
        self.calls: list[int] = []
        self.fail_on_call = fail_on_call
        self.name, self.inputs, self.outputs = engine.name, engine.inputs, engine.outputs
        self.metadata, self.info = engine.metadata, engine.info

    @property
    def rows(self) -> int:
        return sum(self.calls)

    def infer(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        self.calls.append(int(next(iter(inputs.values())).shape[0]))
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise RuntimeError("engine failure injected by the test")
        return self._engine.infer(inputs)

    def close(self) -> None:
        self._engine.close()


def make_stage(kind: str, name: str, engine: Engine, **kw: Any) -> Stage:
    """A chain stage with the kind's default decoder params and preprocessing, on the CPU."""
    return Stage(
        name,
        engine,
        build_decoder(kind, {}, metadata=engine.metadata),
        get_decoder(kind).default_preprocess,
        CpuPreprocessor(),
        **kw,
    )
