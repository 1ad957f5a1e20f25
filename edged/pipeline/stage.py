"""`Stage`: one step of a chain, and what it does to one frame's results.

A chain is a list of typed stages: the first runs on the whole frame, each later one on crops of
detections of an earlier stage; results nest under the detection they were cropped from. A stage's
methods are what happens to a frame's results at that step: `accept` (the first stage's detections:
filtered, tracked), `crops` (a later stage: which parents it runs on and their crop corners), `nest`
(that stage's per-crop results under their parents). A frame's results so far live in its
`FrameState`. Running the stages over the model servers, in capture order, is edged.pipeline.chain;
`build_stages` turns a camera's configured chain into stages over the loaded models' servers.

Threads: a stage's methods run on a model server's decode thread (`accept` and `nest` on that of the
server that ran the stage, `crops` on that of the server that ran the stage before); a frame is at one
step at a time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from edged.config.cameras import CameraConfig
from edged.decoders.base import Decoder
from edged.pipeline.filters import StageFilter
from edged.pipeline.motion import Box, hold_outside
from edged.pipeline.tracker import IouTracker, Track, TrackUpdate
from edged.preprocess.spec import upright_quad
from edged.serving.loading import LoadedModel
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


class FrameState:
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

    def result(self) -> FrameResult:
        """The frame's result once its last stage is done."""
        # "total" is capture -> result, so it includes queueing between pipelined stages.
        total = (time.monotonic_ns() - self.frame.t_mono_ns) / 1e6
        latency = {**self.latency_ms, "total": total}
        return FrameResult(frame=self.frame, detections=self.top, latency_ms=latency, tracks=self.tracks)


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

    def accept(self, state: FrameState, found: list[Detection]) -> None:
        """The first stage's detections of a frame: filtered, tracked, recorded."""
        kept = self.filter.select(found)
        state.top = kept
        state.by_stage[self.name] = kept
        if self.tracker is not None:
            if state.region is not None:  # tracks outside the region were not looked at: not unseen
                hold_outside(self.tracker, state.region, state.frame.seq)
            state.tracker = self.tracker
            state.tracks = self.tracker.update(kept, state.frame.seq)

    def crops(self, state: FrameState) -> tuple[list[Detection], list[np.ndarray]]:
        """The parents a later stage runs on (after its filter and track policy) and their crop quads."""
        parents = self.filter.select(state.by_stage.get(self.on or "", []))
        run = self._reuse_tracked(state, parents)
        text = self.decoder.text_crops  # other crops (a person box to a classifier) keep their shape
        quads = [
            upright_quad(p.quad(), rotate_tall=text, flip=text and p.attrs.get("angle") == 180) for p in run
        ]
        return run, quads

    def nest(self, state: FrameState, parents: list[Detection], results: list[list[Detection]]) -> None:
        """Nest a later stage's per-crop results under the detections they were cropped from."""
        produced: list[Detection] = []
        for parent, dets in zip(parents, results, strict=True):
            if self.decoder.per_crop:
                dets = [_inherit_geometry(d, parent) for d in dets if not d.attrs.get("rejected")]
                for d in dets:
                    if "angle" in d.attrs:
                        # Later text stages crop this parent upside down when the classifier says so.
                        parent.attrs["angle"] = d.attrs["angle"]
            if dets:
                parent.children.setdefault(self.name, []).extend(dets)
                produced.extend(dets)
        state.by_stage[self.name] = produced
        self._remember(state, parents)

    def _reuse_tracked(self, state: FrameState, parents: list[Detection]) -> list[Detection]:
        """Attach the track's earlier results to parents the policy skips; return the parents to run on."""
        if self.policy.mode == "always" or state.tracker is None:
            self.crops_run += len(parents)
            return parents
        run = []
        for p in parents:
            track = state.tracker.track_of(p)
            if self.policy.should_run(track, self.name, state.frame.seq, p.width * p.height):
                run.append(p)
            else:
                assert track is not None
                reused = [
                    Detection(d.label, d.score, p.box, d.class_id, p.polygon, dict(d.attrs))
                    for d in track.cache[self.name][0]
                ]
                for d in reused:
                    d.attrs["reused_from_seq"] = track.cache[self.name][2]
                p.children[self.name] = reused
        self.crops_run += len(run)
        self.crops_reused += len(parents) - len(run)
        return run

    def _remember(self, state: FrameState, ran: list[Detection]) -> None:
        if state.tracker is None or self.policy.mode == "always":
            return
        for p in ran:
            track = state.tracker.track_of(p)
            if track is not None:
                track.cache[self.name] = (
                    list(p.children.get(self.name, [])),
                    p.width * p.height,
                    state.frame.seq,
                )


def _inherit_geometry(d: Detection, parent: Detection) -> Detection:
    d.box = parent.box
    d.polygon = parent.polygon
    return d


def build_stages(cam: CameraConfig, models: Mapping[str, LoadedModel]) -> list[Stage]:
    """The camera's configured chain as stages over the loaded models' servers (a tracker on the first
    stage when tracking or analytics is on: lines and zones need tracks)."""
    stages = []
    tr = cam.tracking
    for s in cam.chain:
        flt = StageFilter(
            classes=frozenset(s.classes) if s.classes else None,
            min_score=s.min_score,
            min_size=s.min_size,
            roi=tuple(s.roi) if s.roi else None,
            max_count=s.max_crops if s.on is not None else None,
        )
        stages.append(
            Stage(
                s.stage_name,
                models[s.model].server,
                on=s.on,
                filter=flt,
                tracker=IouTracker(tr.iou, tr.max_age, tr.high_score, motion=tr.motion_model == "kalman")
                if (tr.enabled or cam.analytics.active) and s.on is None
                else None,
                policy=RunPolicy(s.run, s.every_k, s.grow_ratio),
            )
        )
    return stages
