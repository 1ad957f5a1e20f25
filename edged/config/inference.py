"""Configuration of a model: its file, kind, backend options, preprocessing overrides, and how its model
server batches and which input shapes it declares."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from edged.config.base import EdgedModel
from edged.decoders.registry import get_decoder, kinds
from edged.preprocess.spec import PreprocessSpec

# The versions of a model written beside it (edged.infer.quantize names the same suffixes), by the
# onnxruntime switch that loads them: (file name suffix, the command that makes the file; {source} is
# the model's own file).
MODEL_VERSIONS: dict[str, tuple[str, str]] = {
    "int8": (".int8.onnx", "scripts/quantize_models.py"),
    "fp16": (".fp16.onnx", "edged make-fp16 {source}"),
}


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
    fp16: bool = Field(
        False,
        description="Load the fp16 version of the model (`<name>.fp16.onnx` beside `path`, made by "
        "`edged make-fp16 <path>`) instead of `path`: for ONNX Runtime's CUDA provider only (on "
        "a CPU it runs, slower than fp32; TensorRT has its own `tensorrt.precision`). Inputs and outputs "
        "stay float32, so preprocessing is unchanged; spatial means stay float32 (in fp16 they overflow "
        "at 1080p: NaN). Measured for the PP-OCR detector on an H200 (2026-11-30): 271 vs 208 engine "
        "calls/s at 1 row of 1088x1920; `edged run` (16 1080p cameras, OCR chain) 233 vs 193 frames/s, every "
        "plate read as with fp32 (docs/benchmarks.md).",
    )
    cpu_memory: Literal["shrink", "arena", "no_arena"] = Field(
        "shrink",
        description="How ONNX Runtime's CPU provider holds memory for activations. shrink: its arena gives the chunks a call no longer uses back after every call, without pre-planned memory patterns (the demo config: 2.0 GB resident -> under 0.5 GB). arena: ONNX Runtime's default, the arena grows to the largest input shape run and keeps it. no_arena: plain allocations per tensor. Measured side by side in docs/benchmarks.md (Memory). Not used by the CUDA provider.",
    )
    tf32: bool = Field(
        True,
        description="Let the CUDA provider run fp32 convolutions and matmuls as TF32 on Ampere and newer "
        "GPUs (ONNX Runtime's default, faster); false keeps full fp32, as the CPU computes.",
    )
    conv_algo_search: Literal["heuristic", "exhaustive"] = Field(
        "heuristic",
        description="How the CUDA provider (on edged's device buffers) picks cuDNN convolution algorithms: "
        "heuristic (cuDNN's guess) or exhaustive (times every algorithm once per declared input shape, "
        "each in its own session, while the shapes are warmed at load: a slower start, then the fastest "
        "kernels; measured +7 % for the PP-OCR detector at 1080p on "
        "an H200 engines-only, slightly slower for the recognizer; not measured in `edged run` yet: "
        "docs/benchmarks.md).",
    )

    cuda_graph: bool = Field(
        False,
        description="CUDA provider: run each declared input shape as a CUDA graph (ONNX Runtime's enable_cuda_graph; inputs copied into fixed device buffers, the graph captured on the shape's first calls, during warm-up, and replayed): less launch overhead per call. Every node of the model must run on the CUDA provider. Not measured yet (docs/gpu.md says how); off by default.",
    )

    @model_validator(mode="after")
    def _one_version(self) -> OnnxRuntimeConfig:
        if self.int8 and self.fp16:
            raise ValueError(
                "int8 and fp16 are both true: a model loads one version of its file (int8 for CPUs, fp16 "
                "for the CUDA provider); set one of them to false"
            )
        return self


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
    cuda_graph: bool = Field(
        False,
        description="Capture execute_async_v3 as a CUDA graph per declared input shape (fixed I/O buffers) and replay it. Not executed yet (no TensorRT in development): off by default.",
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
        description="Most rows (frames or crops, of any cameras) in one engine call. Row counts are rounded up to powers of two (1, 2, 4, ...) so the model sees a few fixed shapes (or down, the rest leading the next call, when rounding up would pad more rows than it leaves).",
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
    warm_up: Literal["auto", "all"] = Field(
        "auto",
        description="Which declared shapes are warmed (run once before a batch may use them). auto: every one on backends that pay for a new shape (GPU: ONNX Runtime's CUDA provider, TensorRT), one call on ONNX Runtime's CPU provider, whose first call of a new shape costs what later calls cost (docs/benchmarks.md). all: every one on any backend. Either way the model serves after the first: the smallest row count at the largest size, which every request fits (padded, or split into one-row calls); the rest are warmed between batches, and a request is planned only into warm shapes.",
    )
    widths: list[Annotated[int, Field(gt=0)]] = Field(
        default_factory=list,
        description="fixed_height models (text recognizers): the crop widths declared; a crop is padded on the right to the smallest that holds it. Default: a ladder about 25 % apart from the minimum to the maximum width.",
    )


class UpdateConfig(EdgedModel):
    """Live model update (docs/engines.md): a new file for the model is loaded beside the running one and
    both run on the next requests; the new one takes over only when they agree within these tolerances."""

    shadow_frames: int = Field(
        20,
        ge=1,
        le=10000,
        description="Requests both engines run before deciding: frames for a first stage, one frame's crops for a later stage.",
    )
    min_iou: float = Field(
        0.5, gt=0, le=1, description="A candidate's box matches a serving box at this IoU or more."
    )
    max_score_drift: float = Field(
        0.05, ge=0, le=1, description="Largest score difference allowed between matched results."
    )
    max_disagreeing_frames: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Fraction of the compared requests allowed to disagree (missing, extra, relabelled, other read, drifted); 0: none.",
    )
    folders: list[Path] = Field(
        default_factory=list,
        description="Folders an MQTT update command may name a file in, besides the folder of `path` (relative paths are relative to the config file). Files elsewhere are refused.",
    )


# The kinds come from the decoders' registry (declared once, by `@register`); pydantic checks a config's
# `kind` against them and the JSON schema and docs/configuration.md list them.
if TYPE_CHECKING:
    ModelKind = str
else:
    ModelKind = Literal[kinds()]


class ModelConfig(EdgedModel):
    path: Path = Field(..., description="ONNX model file (relative paths are relative to the config file).")
    kind: ModelKind = Field(..., description="How outputs are decoded; also sets the default preprocessing.")
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
    precision: Literal["auto", "fp32", "fp16", "int8"] = Field(
        "auto",
        description="Numeric precision, a build product (docs/engines.md, Precision): the model serves in fp32 at once and the lower-precision engine is made in the background, shadow-checked against the serving one on the same requests and swapped in only when they agree (else fp32 stays, with the reason in the log, /stats and the status page). auto: fp16 on a GPU (ONNX Runtime's CUDA provider: the fp16 version built by the engine builder, numerically fragile ops kept fp32; TensorRT: its fp16 flag), fp32 on a CPU (fp16 runs slower there). fp16 / int8: that precision where it applies (int8: the `<name>.int8.onnx` beside `path` from scripts/quantize_models.py for ONNX Runtime, tensorrt.calibration_cache for TensorRT). fp32: no lower precision.",
    )
    onnxruntime: OnnxRuntimeConfig = Field(
        default_factory=OnnxRuntimeConfig, description="ONNX Runtime settings."
    )
    tensorrt: TensorRTConfig = Field(default_factory=TensorRTConfig, description="TensorRT settings.")
    batching: BatchingConfig = Field(
        default_factory=BatchingConfig, description="Cross-camera batching of this model's engine calls."
    )
    update: UpdateConfig = Field(
        default_factory=UpdateConfig,
        description="Live model update: shadow check of a new file before it serves (docs/engines.md).",
    )

    @model_validator(mode="after")
    def _one_precision(self) -> ModelConfig:
        switch = "fp16" if self.onnxruntime.fp16 else "int8" if self.onnxruntime.int8 else None
        if switch is not None and self.precision not in ("auto", switch):
            raise ValueError(
                f"precision: {self.precision} and onnxruntime.{switch}: true both choose the model's precision; "
                f"use precision (built and shadow-checked) or onnxruntime.{switch} (that file loaded as it is)"
            )
        trt = self.tensorrt
        if "precision" in trt.model_fields_set and self.precision not in ("auto", trt.precision):
            raise ValueError(
                f"precision: {self.precision} and tensorrt.precision: {trt.precision} disagree; "
                "set precision only (it sets TensorRT's too)"
            )
        return self

    @property
    def trt_precision(self) -> str:
        """TensorRT's build precision: `precision` when set, else `tensorrt.precision` (default fp16)."""
        return self.tensorrt.precision if self.precision == "auto" else self.precision

    @property
    def model_file(self) -> Path:
        """The file the engine loads: `path`, or its int8 or fp16 version (onnxruntime.int8, .fp16)."""
        for switch, (suffix, _) in MODEL_VERSIONS.items():
            if getattr(self.onnxruntime, switch):
                return self.path.with_name(self.path.stem + suffix)
        return self.path


def effective_preprocess(model: ModelConfig) -> PreprocessSpec:
    """The model kind's default preprocessing with the config's overrides applied."""
    return model.preprocess.apply(get_decoder(model.kind).default_preprocess)
