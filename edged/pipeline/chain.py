"""A chain is a list of typed stages: the first runs on the whole frame, each later one on crops of
detections of an earlier stage; results nest under the detection they were cropped from. This module
holds what a stage does to one frame's results (filters, tracks, crop choice, nesting); running the
stages over the model servers is edged.pipeline.flow.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from edged.decoders.base import Decoder
from edged.pipeline.filters import StageFilter
from edged.pipeline.motion import Box, hold_outside
from edged.pipeline.tracker import IouTracker, Track, TrackUpdate
from edged.preprocess.spec import upright_quad
from edged.serving.server import ModelServer
from edged.types import Detection, Frame, FrameResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunPolicy:
    """When a secondary stage runs on a tracked parent: always, once per track (until it produced a
    result), every k frames of the track, or when the box grew by `grow_ratio` since the last run."""

    mode: str = "always"  # always | new_track | every_k | box_grew
    every_k: int = 10
    grow_ratio: float = 1.25

    def should_run(self, track: Track | None, stage: str, seq: int, area: float) -> bool:
        if self.mode == "always" or track is None:
            return True
        cached = track.cache.get(stage)
        if cached is None or not cached[0]:
            return True
        _, cached_area, cached_seq = cached
        if self.mode == "every_k":
            return seq - cached_seq >= self.every_k
        if self.mode == "box_grew":
            return area >= cached_area * self.grow_ratio
        return False  # new_track: ran once with a result


@dataclass
class Stage:
    """One step of a camera's chain: which model server runs it and how its results are chosen."""

    name: str
    server: ModelServer
    on: str | None = None
    filter: StageFilter = field(default_factory=StageFilter)
    # First stage only: associates its detections into tracks (attrs["track_id"]).
    tracker: IouTracker | None = None
    # Secondary stages only: when to run on a tracked parent instead of reusing the track's last result.
    policy: RunPolicy = field(default_factory=RunPolicy)
    crops_run: int = 0
    crops_reused: int = 0

    @property
    def decoder(self) -> Decoder:
        return self.server.decoder


class StageState:
    """What the stages of one frame have produced so far (flat per stage; nesting lives in the tree).
    `region`: the first stage runs on this rectangle of the frame only (motion gating), else the whole."""

    def __init__(self, frame: Frame, region: Box | None = None):
        self.frame = frame
        self.region = region
        self.by_stage: dict[str, list[Detection]] = {}
        self.top: list[Detection] = []
        self.latency_ms: dict[str, float] = {}
        self.tracker: IouTracker | None = None
        self.tracks: TrackUpdate | None = None


def accept_primary(stage: Stage, state: StageState, found: list[Detection]) -> None:
    """The first stage's detections of a frame: filtered, tracked, recorded."""
    kept = stage.filter.select(found)
    state.top = kept
    state.by_stage[stage.name] = kept
    if stage.tracker is not None:
        if state.region is not None:  # tracks outside the region were not looked at: not unseen
            hold_outside(stage.tracker, state.region, state.frame.seq)
        state.tracker = stage.tracker
        state.tracks = stage.tracker.update(kept, state.frame.seq)


def crop_parents(stage: Stage, state: StageState) -> tuple[list[Detection], list[np.ndarray]]:
    """The parents a later stage runs on (after its filter and track policy) and their crop quads."""
    parents = stage.filter.select(state.by_stage.get(stage.on or "", []))
    run = _reuse_tracked(stage, state, parents)
    text = stage.decoder.text_crops  # other crops (a person box to a classifier) keep their shape
    quads = [upright_quad(p.quad(), rotate_tall=text, flip=text and p.attrs.get("angle") == 180) for p in run]
    return run, quads


def attach_results(
    stage: Stage, state: StageState, parents: list[Detection], results: list[list[Detection]]
) -> None:
    """Nest a later stage's per-crop results under the detections they were cropped from."""
    produced: list[Detection] = []
    for parent, dets in zip(parents, results, strict=True):
        if stage.decoder.per_crop:
            dets = [_inherit_geometry(d, parent) for d in dets if not d.attrs.get("rejected")]
            for d in dets:
                if "angle" in d.attrs:
                    # Later text stages crop this parent upside down when the classifier says so.
                    parent.attrs["angle"] = d.attrs["angle"]
        if dets:
            parent.children.setdefault(stage.name, []).extend(dets)
            produced.extend(dets)
    state.by_stage[stage.name] = produced
    _remember(stage, state, parents)


def _reuse_tracked(stage: Stage, state: StageState, parents: list[Detection]) -> list[Detection]:
    """Attach the track's earlier results to parents the policy skips; return the parents to run on."""
    if stage.policy.mode == "always" or state.tracker is None:
        stage.crops_run += len(parents)
        return parents
    run = []
    for p in parents:
        track = state.tracker.track_of(p)
        if stage.policy.should_run(track, stage.name, state.frame.seq, p.width * p.height):
            run.append(p)
        else:
            assert track is not None
            reused = [
                Detection(d.label, d.score, p.box, d.class_id, p.polygon, dict(d.attrs))
                for d in track.cache[stage.name][0]
            ]
            for d in reused:
                d.attrs["reused_from_seq"] = track.cache[stage.name][2]
            p.children[stage.name] = reused
    stage.crops_run += len(run)
    stage.crops_reused += len(parents) - len(run)
    return run


def _remember(stage: Stage, state: StageState, ran: list[Detection]) -> None:
    if state.tracker is None or stage.policy.mode == "always":
        return
    for p in ran:
        track = state.tracker.track_of(p)
        if track is not None:
            track.cache[stage.name] = (
                list(p.children.get(stage.name, [])),
                p.width * p.height,
                state.frame.seq,
            )


def _inherit_geometry(d: Detection, parent: Detection) -> Detection:
    d.box = parent.box
    d.polygon = parent.polygon
    return d


def finish(state: StageState) -> FrameResult:
    # "total" is capture -> result, so it includes queueing between pipelined stages.
    total = (time.monotonic_ns() - state.frame.t_mono_ns) / 1e6
    latency = {**state.latency_ms, "total": total}
    return FrameResult(frame=state.frame, detections=state.top, latency_ms=latency, tracks=state.tracks)
