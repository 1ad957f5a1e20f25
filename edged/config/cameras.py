"""Configuration of a camera: its source, capture, reconnect, RTSP options, tracking, motion gating and
the chain of stages it runs."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from edged.config.analytics import AnalyticsConfig
from edged.config.base import NAME_RE, EdgedModel


class StageConfig(EdgedModel):
    model: str = Field(..., description="Name of a model under `models`.")
    name: str | None = Field(
        None, pattern=NAME_RE, description="Stage name in events; default the model name."
    )
    on: str | None = Field(
        None, description="Run on crops of detections of this earlier stage; unset: the whole frame."
    )
    classes: list[str] | None = Field(
        None, description="Only keep (or, with `on`, only crop) detections with these labels."
    )
    min_score: float = Field(0.0, ge=0, le=1, description="Drop detections scoring below this.")
    min_size: tuple[float, float] = Field(
        (0, 0), description="Drop boxes smaller than [width, height] pixels."
    )
    roi: list[tuple[float, float]] | None = Field(
        None, description="Polygon [[x, y], ...] in frame pixels; keep only boxes whose centre lies inside."
    )
    max_crops: int = Field(
        32, ge=1, description="Most crops per frame sent to this stage (highest scores first)."
    )
    batch_size: int = Field(
        0,
        ge=0,
        description="Deprecated and ignored: rows per engine call come from the model's `batching` (its server batches the crops of all cameras).",
    )
    run: Literal["always", "new_track", "every_k", "box_grew"] = Field(
        "always",
        description="With tracking: run on every frame, once per track (until it gives a result), every k frames of a track, or when its box grew; otherwise the track's last result is reused.",
    )
    every_k: int = Field(10, ge=1, description="run: every_k: frames between runs on the same track.")
    grow_ratio: float = Field(
        1.25, gt=1, description="run: box_grew: area growth since the last run that triggers a new one."
    )

    @property
    def stage_name(self) -> str:
        return self.name or self.model

    @field_validator("roi")
    @classmethod
    def _polygon(cls, v: list[tuple[float, float]] | None) -> list[tuple[float, float]] | None:
        if v is not None and len(v) < 3:
            raise ValueError("an ROI polygon needs at least 3 points")
        return v


class TrackingConfig(EdgedModel):
    enabled: bool = Field(
        False,
        description="Track the first stage's detections across frames (IoU, ByteTrack-style); adds track_id.",
    )
    iou: float = Field(
        0.3, gt=0, lt=1, description="Least IoU between a track's last box and a detection to continue it."
    )
    max_age: int = Field(15, ge=1, description="Frames a track may go unseen before it ends.")
    high_score: float = Field(
        0.5, ge=0, le=1, description="Detections at or above start tracks; lower ones only continue them."
    )
    motion_model: Literal["kalman", "none"] = Field(
        "kalman",
        description="kalman: match detections to where each track's constant-velocity Kalman filter expects it, so tracks survive misses and crossing paths; none: to its last box (the tracker before issue 25).",
    )
    events: Literal["frames", "tracks"] = Field(
        "frames",
        description="frames: one message per frame with detections; tracks: one message per track event (new, update when its result changes, end) on <prefix>/<camera>/tracks.",
    )


class MotionConfig(EdgedModel):
    enabled: bool = Field(
        False,
        description="Run the chain only on frames where something moves (found with OpenCV on a small grey copy of the frame); other frames count as idle. See docs/motion.md.",
    )
    height: int = Field(120, ge=16, le=1080, description="Rows of the grey copy motion is found on.")
    threshold: int = Field(
        25,
        ge=1,
        le=255,
        description="Least grey-level change (0-255) from the background that counts as motion.",
    )
    min_area: float = Field(
        400.0, ge=0, description="Least area in frame pixels of a moving region; smaller ones are noise."
    )
    background_alpha: float = Field(
        0.05, gt=0, le=1, description="How fast the background follows the scene, per frame."
    )
    lighting_ratio: float = Field(
        0.5,
        gt=0,
        le=1,
        description="A change over more than this share of the frame at once is a lighting change: the background is reset and the frame is idle.",
    )
    masks: list[list[tuple[float, float]]] = Field(
        default_factory=list,
        description="Polygons [[x, y], ...] in frame pixels where motion is ignored (clocks, trees, flags).",
    )
    full_frame_every: int = Field(
        100, ge=0, description="While nothing moves, run the chain anyway every this many frames (0: never)."
    )
    redetect_every: int = Field(
        10,
        ge=0,
        description="With tracking, while nothing moves but tracks are live: run the chain every this many frames; the tracks are kept in between (0: only full_frame_every).",
    )

    region: bool = Field(
        False,
        description="When something moves, run the first stage on one region around the motion boxes instead of the whole frame (detections still come back in frame pixels). The start, full_frame and redetect runs stay whole-frame.",
    )
    region_margin: float = Field(
        0.25,
        ge=0,
        le=4,
        description="Region mode: the union of the motion boxes grows on every side by this share of its longer side (context around a moving car or plate).",
    )
    region_min: float = Field(
        0.25,
        gt=0,
        le=1,
        description="Region mode: least width and height of the region as a share of the frame's (a detector needs context; tiny regions save nothing).",
    )

    @field_validator("masks")
    @classmethod
    def _polygons(cls, v: list[list[tuple[float, float]]]) -> list[list[tuple[float, float]]]:
        for i, poly in enumerate(v):
            if len(poly) < 3:
                raise ValueError(f"mask {i} has {len(poly)} points; a polygon needs at least 3")
        return v


class ReconnectConfig(EdgedModel):
    min_s: float = Field(0.5, gt=0, description="First delay before reopening a failed source.")
    max_s: float = Field(
        30.0, gt=0, description="Longest delay between reopen attempts (exponential backoff)."
    )


class RtspConfig(EdgedModel):
    transport: Literal["auto", "tcp", "udp"] = Field(
        "auto",
        description="RTP transport of rtsp:// sources: tcp (through NAT/firewalls, no packet loss), udp "
        "(lowest latency on a clean LAN), or auto (FFmpeg tries UDP, then TCP). CPU decoding only (FFmpeg "
        "or OpenCV): jetson-utils and NVDEC have no such option.",
    )
    latency_ms: int | None = Field(
        None,
        ge=0,
        le=60000,
        description="Receive buffer of rtsp:// sources in ms (jetson-utils --input-latency, FFmpeg max_delay); "
        "lower is fresher, higher rides out jitter. None: the backend's default.",
    )


class CameraConfig(EdgedModel):
    source: str = Field(
        ...,
        description="As jetson-utils spells it: a path or file://path (a video, an image, a folder/ of images "
        "or a glob like frames/*.jpg, relative to the config file), rtsp://..., v4l2:///dev/videoN or "
        "/dev/videoN, csi://N; also dir://folder.",
    )
    enabled: bool = Field(True, description="Disabled cameras are not opened.")
    fps: float = Field(
        10.0, gt=0, le=1000, description="Frames per second taken from the source; extra frames are skipped."
    )
    loop: bool = Field(
        False, description="Restart file and image-folder sources at their end (demos, tests)."
    )
    realtime: bool = Field(
        True,
        description="Files play at their own frame rate (like a camera); false reads them as fast as the chain runs.",
    )
    frames_in_flight: int | None = Field(
        None,
        ge=1,
        le=8,
        description="Frames of this camera in its chain at once (capture to the last stage's result); unset: 4 when "
        "the chain's first model runs on a GPU, 2 on the CPU. More keeps a GPU that many cameras share busy, "
        "at the cost of latency and, while that many are in flight, one more frame buffer each (device and "
        "page-locked memory: 6.2 MB at 1080p). While the chain is full the capture keeps only the newest frame.",
    )
    width: int | None = Field(None, gt=0, description="Requested capture width (cameras that support it).")
    height: int | None = Field(None, gt=0, description="Requested capture height.")
    backend: Literal["auto", "opencv", "jetson"] = Field(
        "auto",
        description="Capture through jetson-utils (auto on Jetson), else files and streams through FFmpeg "
        "(PyAV: every frame at its real size, also when a stream changes resolution) and V4L2 cameras and "
        "image folders through OpenCV; opencv: OpenCV for everything (its FFmpeg backend scales every frame "
        "to the size the stream had when opened).",
    )
    decode: Literal["auto", "cpu", "gpu"] = Field(
        "auto",
        description="Where frames are decoded (backend auto): gpu = on the GPU into device memory (NVDEC for "
        "H.264/H.265/AV1/VP9 files and streams, nvJPEG for Motion-JPEG and JPEG folders; needs "
        "edged[gpu-decode]), cpu = FFmpeg or OpenCV (backend), auto = the GPU when it works for this source "
        "and the chain preprocesses on the GPU, else the CPU (the reason is logged once and shown in /stats). jetson-utils "
        "sources decode on the Jetson's NVDEC themselves.",
    )
    frame_timeout_s: float = Field(
        5.0, gt=0, description="A source with no frame for this long is considered stalled and reopened."
    )
    reconnect: ReconnectConfig = Field(default_factory=ReconnectConfig, description="Reopen backoff.")
    rtsp: RtspConfig = Field(default_factory=RtspConfig, description="Options of rtsp:// sources.")
    tracking: TrackingConfig = Field(
        default_factory=TrackingConfig, description="Multi-object tracking and per-track events."
    )
    motion: MotionConfig = Field(
        default_factory=MotionConfig, description="Motion gating: skip the chain while nothing moves."
    )
    chain: list[StageConfig] = Field(
        default_factory=list, description="Model stages run on each frame, in order."
    )
    analytics: AnalyticsConfig = Field(
        default_factory=AnalyticsConfig,
        description="Lines (tripwires), zones and a ground calibration over the tracks (docs/analytics.md); lines or zones turn tracking on.",
    )

    @model_validator(mode="after")
    def _decode_backend(self) -> CameraConfig:
        if self.decode == "gpu" and self.backend == "opencv":
            raise ValueError("decode: gpu needs backend: auto (backend: opencv decodes on the CPU)")
        if self.decode != "auto" and self.backend == "jetson":
            raise ValueError(
                "decode applies to backend: auto; jetson-utils decodes on the Jetson's NVDEC itself"
            )
        return self

    @field_validator("source")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if re.match(r"^(file|rtsp|rtsps|rtp|http|https|v4l2|csi|dir)://", v) or v.startswith("/dev/video"):
            return v
        if "://" in v or not v.strip():
            raise ValueError(
                "source must be a path, or start with file://, rtsp://, v4l2://, csi://, dir:// (or be /dev/videoN)"
            )
        return "file://" + v  # jetson-utils' shorthand: a bare path is a file (or folder, or glob)
