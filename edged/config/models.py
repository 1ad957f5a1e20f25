"""The configuration schema: one YAML file on the device, validated by these pydantic models.

Every model forbids unknown keys (a typo is an error, not a silently ignored setting) and every
field has a description, which `edged schema` and docs/configuration.md show to users.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from edged.preprocess.spec import PreprocessSpec

NAME_RE = r"^[A-Za-z0-9_-]{1,64}$"


class EdgedModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class DeviceConfig(EdgedModel):
    name: str = Field(
        "edged", pattern=NAME_RE, description="Device name; part of the MQTT topic prefix and every event."
    )


class TlsConfig(EdgedModel):
    enabled: bool = Field(False, description="Connect to the broker over TLS.")
    ca_file: Path | None = Field(
        None, description="CA certificate(s) that signed the broker's certificate (PEM). None: system CAs."
    )
    cert_file: Path | None = Field(
        None, description="Client certificate (PEM), for brokers that require one."
    )
    key_file: Path | None = Field(None, description="Private key of the client certificate (PEM).")
    insecure: bool = Field(False, description="Skip the broker hostname check (testing only).")


class OutboxConfig(EdgedModel):
    dir: Path = Field(
        Path("/var/lib/edged/outbox"),
        description="Directory of the disk outbox (events wait here until the broker acknowledges them).",
    )
    max_bytes: int = Field(
        256 * 1024 * 1024,
        ge=1024,
        description="Cap on the outbox size; the oldest events are dropped (and counted) beyond it.",
    )
    max_age_s: float = Field(
        7 * 24 * 3600,
        gt=0,
        description="Events older than this are dropped (and counted) instead of replayed.",
    )
    fsync: Literal["always", "interval", "never"] = Field(
        "interval",
        description="When appended events are fsync'ed: after each event, at most every fsync_interval_s, or never (OS decides).",
    )
    fsync_interval_s: float = Field(
        1.0,
        gt=0,
        description="Longest time between fsyncs with fsync: interval (bounds the loss on power failure).",
    )
    replay_rate: float = Field(
        200.0,
        gt=0,
        description="Most backlog events replayed per second after a reconnect (live events go on alongside).",
    )
    max_memory_bytes: int = Field(
        8 * 1024 * 1024,
        ge=0,
        description="While the disk refuses writes (full, I/O error), events are held in memory up to this many bytes and written when it takes writes again; beyond it the oldest are dropped (reason disk_full).",
    )


class HassConfig(EdgedModel):
    enabled: bool = Field(
        False,
        description="Announce cameras to Home Assistant by MQTT discovery (retained configs) and publish their state.",
    )
    discovery_prefix: str = Field(
        "homeassistant",
        pattern=r"^[A-Za-z0-9_/-]{1,128}$",
        description="Home Assistant's MQTT discovery prefix (its `discovery_prefix` setting).",
    )
    state_interval_s: float = Field(
        10.0,
        gt=0,
        description="Period of the retained <prefix>/<camera>/state message (fps, online); events also update it.",
    )
    configuration_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="Link on the HA device page; default: the status page when the health server listens "
        "on a non-loopback address (http://<host>:<health.port>/), else none.",
    )


class MqttConfig(EdgedModel):
    enabled: bool = Field(
        True, description="Publish events over MQTT. When false, events only go to the stdout sink, if any."
    )
    host: str = Field("127.0.0.1", description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 is usual for TLS).")
    prefix: str | None = Field(None, description="Topic prefix; default edged/<device.name>.")
    client_id: str | None = Field(None, description="MQTT client id; default edged-<device.name>.")
    username: str | None = Field(None, description="User name for the broker.")
    password: SecretStr | None = Field(
        None, description="Password; prefer ${cred:NAME} (systemd LoadCredential) over plain text."
    )
    qos: Literal[0, 1] = Field(
        1, description="QoS of detection messages; 1 gives at-least-once delivery through the outbox."
    )
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive interval.")
    reconnect_min_s: float = Field(
        1.0, gt=0, description="First reconnect delay; doubles up to reconnect_max_s."
    )
    reconnect_max_s: float = Field(30.0, gt=0, description="Longest reconnect delay.")
    tls: TlsConfig = Field(default_factory=TlsConfig, description="TLS settings for the broker connection.")
    outbox: OutboxConfig = Field(default_factory=OutboxConfig, description="Store-and-forward disk outbox.")
    commands: bool = Field(
        False, description="Accept commands on <prefix>/<camera>/set/... (enable, snapshot)."
    )
    stats_interval_s: float = Field(
        60.0, ge=0, description="Period of the <prefix>/stats message; 0 disables it."
    )
    hass: HassConfig = Field(
        default_factory=HassConfig, description="Home Assistant MQTT discovery (opt-in)."
    )


class ThumbnailsConfig(EdgedModel):
    enabled: bool = Field(
        True, description="Keep the best crop of each event (each track with events: tracks) as a JPEG."
    )
    dir: Path | None = Field(
        None, description="Where the JPEGs go; default <state_dir>/thumbnails. Served at /events/<id>.jpg."
    )
    max_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Disk cap of the folder; the oldest files are deleted first."
    )
    max_side: int = Field(
        320,
        ge=16,
        le=4096,
        description="Longest side of a thumbnail in pixels (larger crops are scaled down).",
    )
    quality: int = Field(85, ge=10, le=100, description="JPEG quality.")
    queue: int = Field(
        32, ge=1, le=4096, description="Crops waiting for the encoder; beyond it they are dropped (counted)."
    )
    publish: bool = Field(
        False, description="Also publish each thumbnail, retained, on <prefix>/<camera>/<label>/thumbnail."
    )
    publish_max_bytes: int = Field(
        128 * 1024, ge=1024, description="Larger thumbnails are kept on disk but not published."
    )


class HealthConfig(EdgedModel):
    enabled: bool = Field(
        True, description="Serve /healthz, /readyz, /metrics, /stats and snapshots over HTTP."
    )
    bind: str = Field(
        "127.0.0.1", description="Address the health server listens on (keep it local unless firewalled)."
    )
    port: int = Field(8089, ge=0, le=65535, description="Port of the health server (0 picks a free port).")


class PreprocessConfig(EdgedModel):
    """Overrides of the model kind's default preprocessing; unset fields keep the kind's default."""

    resize: Literal["letterbox", "stretch", "limit_side", "fixed_height"] | None = Field(
        None,
        description="letterbox (keep aspect, pad), stretch, limit_side (PP-OCR detector sizing) or fixed_height (recognizer crops).",
    )
    size: tuple[int, int] | None = Field(
        None, description="Model input [width, height]; for fixed_height [max width, height]."
    )
    limit_side: int | None = Field(
        None, gt=0, description="limit_side mode: target length of the limited side."
    )
    limit_type: Literal["min", "max"] | None = Field(
        None, description="limit_side mode: limit the shorter (min) or longer (max) side."
    )
    width_multiple: int | None = Field(
        None,
        gt=0,
        description="fixed_height mode: round the batch width up to a multiple of this (fewer input shapes for GPU backends).",
    )
    multiple: int | None = Field(
        None, gt=0, description="limit_side mode: round both sides to a multiple of this."
    )
    color: Literal["bgr", "rgb"] | None = Field(None, description="Channel order the model expects.")
    mean: tuple[float, float, float] | None = Field(
        None, description="Per-channel mean subtracted from pixel/255."
    )
    std: tuple[float, float, float] | None = Field(
        None, description="Per-channel std dividing (pixel/255 - mean)."
    )
    pad_value: float | None = Field(
        None, ge=0, le=255, description="Padding value in pixel units (before normalization)."
    )
    layout: Literal["nchw", "nhwc"] | None = Field(None, description="Tensor layout of the model input.")
    dtype: Literal["float32", "float16"] | None = Field(None, description="Element type of the model input.")
    device: Literal["auto", "kernel", "cv2cuda", "cpu"] = Field(
        "auto",
        description="Where preprocessing runs: auto picks the fastest available (fused CUDA kernel, cv2.cuda, CPU).",
    )

    @field_validator("size")
    @classmethod
    def _positive_size(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and (v[0] <= 0 or v[1] <= 0):
            raise ValueError("width and height must be positive")
        return v

    def apply(self, base: PreprocessSpec) -> PreprocessSpec:
        overrides = {k: v for k, v in self.model_dump(exclude={"device"}).items() if v is not None}
        return PreprocessSpec(**{**base.__dict__, **overrides})


class OnnxRuntimeConfig(EdgedModel):
    intra_op_threads: int = Field(
        0, ge=0, description="Threads inside one operator; 0 lets ONNX Runtime decide."
    )
    inter_op_threads: int = Field(
        0, ge=0, description="Threads across operators; 0 lets ONNX Runtime decide."
    )
    providers: list[str] | None = Field(
        None,
        description="Execution providers in order of preference; default: CUDA when available, then CPU.",
    )
    int8: bool = Field(
        False,
        description="Load the int8 version of the model (static QDQ, `<name>.int8.onnx` beside `path`, made by scripts/quantize_models.py) instead of `path`: faster on CPUs. Measured for the PP-OCR detector (same strings on the sample, docs/benchmarks.md); the recognizer's int8 version misread a plate, so it is not used.",
    )
    tf32: bool = Field(
        True,
        description="Let the CUDA provider run fp32 convolutions and matmuls as TF32 on Ampere and newer "
        "GPUs (ONNX Runtime's default, faster); false keeps full fp32, as the CPU computes.",
    )


class TensorRTConfig(EdgedModel):
    precision: Literal["fp32", "fp16", "int8"] = Field(
        "fp16", description="Engine precision; int8 needs calibration_cache."
    )
    workspace_mb: int = Field(1024, gt=0, description="Builder workspace limit.")
    dla_core: int | None = Field(
        None, ge=0, description="Run on this DLA core (Jetson Orin/Xavier) with GPU fallback."
    )
    calibration_cache: Path | None = Field(None, description="INT8 calibration cache file.")
    max_batch: int = Field(
        16, ge=1, description="Largest batch in the optimization profile (secondary stages)."
    )
    cache_dir: Path = Field(
        Path("/var/cache/edged/engines"),
        description="The engine cache: TensorRT engines, ONNX Runtime's optimized models (CPU) and the timing cache (docs/engines.md).",
    )


class BatchingConfig(EdgedModel):
    """How the model's server batches the requests of all cameras, and the input shapes it declares."""

    max_batch: int = Field(
        4,
        ge=1,
        le=256,
        description="Most rows (frames or crops, of any cameras) in one engine call. Row counts are rounded up to powers of two (1, 2, 4, ...) so the model sees a few fixed shapes.",
    )
    max_wait_ms: float = Field(
        2.0,
        ge=0,
        description="Longest time the oldest request waits for other cameras' requests to join its batch (never waited when every camera that uses the model is already in the batch).",
    )
    pad_to_max: bool = Field(
        False,
        description="Always run max_batch rows (zero-padded): one row count only, which GPU backends like best; leave off on CPUs.",
    )
    decode_workers: int = Field(
        0,
        ge=0,
        le=64,
        description="Processes that decode the model's batches; 0 decodes on the server's decode thread. Raise it when many cameras make decoding, not the engine, the limit.",
    )
    source_sizes: list[Annotated[list[int], Field(min_length=2, max_length=2)]] = Field(
        default_factory=list,
        description="limit_side models (PP-OCR detector): camera resolutions [width, height] to declare input sizes for; frames of other sizes are padded into the smallest declared size that holds them, or scaled into the largest. Default: the chain's cameras' configured width/height, else 1920x1080, 1280x720 and 640x480.",
    )
    widths: list[Annotated[int, Field(gt=0)]] = Field(
        default_factory=list,
        description="fixed_height models (text recognizers): the crop widths declared; a crop is padded on the right to the smallest that holds it. Default: a ladder about 25 % apart from the minimum to the maximum width.",
    )


class ModelConfig(EdgedModel):
    path: Path = Field(..., description="ONNX model file (relative paths are relative to the config file).")
    kind: Literal["ppocr_det", "ppocr_cls", "ppocr_rec", "yolo", "ssd", "classifier"] = Field(
        ..., description="How outputs are decoded; also sets the default preprocessing."
    )
    backend: Literal["auto", "onnxruntime", "tensorrt"] = Field(
        "auto",
        description="auto: TensorRT when importable, else ONNX Runtime (CUDA provider when available).",
    )
    labels: Path | None = Field(
        None, description="Text file with one class name per line (yolo, ssd, classifier)."
    )
    preprocess: PreprocessConfig = Field(
        default_factory=PreprocessConfig, description="Overrides of the kind's default preprocessing."
    )
    decode: dict[str, Any] = Field(
        default_factory=dict, description="Decoder parameters of the model kind (see docs/configuration.md)."
    )
    onnxruntime: OnnxRuntimeConfig = Field(
        default_factory=OnnxRuntimeConfig, description="ONNX Runtime settings."
    )
    tensorrt: TensorRTConfig = Field(default_factory=TensorRTConfig, description="TensorRT settings.")
    batching: BatchingConfig = Field(
        default_factory=BatchingConfig, description="Cross-camera batching of this model's engine calls."
    )

    @property
    def model_file(self) -> Path:
        """The file the engine loads: `path`, or its int8 version with onnxruntime.int8."""
        return self.path.with_name(self.path.stem + ".int8.onnx") if self.onnxruntime.int8 else self.path


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
        "(lowest latency on a clean LAN), or auto (FFmpeg tries UDP, then TCP). OpenCV backend only: "
        "jetson-utils has no such option.",
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
    width: int | None = Field(None, gt=0, description="Requested capture width (cameras that support it).")
    height: int | None = Field(None, gt=0, description="Requested capture height.")
    backend: Literal["auto", "opencv", "jetson"] = Field(
        "auto", description="Capture through jetson-utils (auto on Jetson) or OpenCV."
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


class LoggingConfig(EdgedModel):
    level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level (any case: `DEBUG` is `debug`)."
    )
    json_format: bool = Field(
        False,
        description="Log JSON lines (ISO 8601 UTC times) instead of text. Under systemd each line starts "
        "with the journald priority (`<3>` error, `<4>` warning, ...) either way.",
    )

    @field_validator("level", mode="before")
    @classmethod
    def _any_case(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v


class Config(EdgedModel):
    """Top level of edged.yaml."""

    device: DeviceConfig = Field(default_factory=DeviceConfig, description="This device.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Logging.")
    state_dir: Path = Field(
        Path("/var/lib/edged"), description="Persistent state (outbox); systemd's StateDirectory."
    )
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="MQTT broker and publishing.")
    health: HealthConfig = Field(
        default_factory=HealthConfig, description="Local health and metrics HTTP server."
    )
    thumbnails: ThumbnailsConfig = Field(
        default_factory=ThumbnailsConfig, description="Event thumbnails: best crop per event or track."
    )
    models: dict[str, ModelConfig] = Field(default_factory=dict, description="Models by name.")
    cameras: dict[str, CameraConfig] = Field(default_factory=dict, description="Cameras by name.")
    allow_no_cameras: bool = Field(
        False,
        description="Let `edged run` start, and SIGHUP reloads apply, with no cameras configured (a device "
        "that is dark on purpose). Off: such a config is refused (exit 78 at start; a reload keeps the "
        "running config), since an emptied file would otherwise turn the device dark while it reports ready.",
    )

    @field_validator("models", "cameras")
    @classmethod
    def _names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name in v:
            if not re.match(NAME_RE, name):
                raise ValueError(f"name {name!r} may only use letters, digits, '_' and '-'")
        return v

    @property
    def topic_prefix(self) -> str:
        return (self.mqtt.prefix or f"edged/{self.device.name}").rstrip("/")


def reference_problems(cfg: Config) -> list[tuple[tuple[str | int, ...], str]]:
    """Cross-references pydantic cannot see field by field: (key path, reason) for each problem."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for cam_name, cam in cfg.cameras.items():
        seen: set[str] = set()
        for i, stage in enumerate(cam.chain):
            at: tuple[str | int, ...] = ("cameras", cam_name, "chain", i)
            if stage.model not in cfg.models:
                known = ", ".join(sorted(cfg.models)) or "none defined"
                problems.append(((*at, "model"), f"unknown model {stage.model!r} (models: {known})"))
            if stage.stage_name in seen:
                problems.append(
                    ((*at, "name"), f"stage name {stage.stage_name!r} is used twice; set `name:`")
                )
            if stage.on is not None and stage.on not in seen:
                problems.append(((*at, "on"), f"{stage.on!r} is not an earlier stage of this chain"))
            if stage.on is None and i > 0:
                problems.append(
                    (at, "only the first stage runs on the whole frame; set `on:` to an earlier stage")
                )
            seen.add(stage.stage_name)
    return problems
