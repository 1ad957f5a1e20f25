"""Precision as a build product (issue 28, item 1): which lower-precision engine a model is given in
the background, how it is made, and where that stands.

A model always starts in the precision it was loaded in (fp32 unless `onnxruntime.fp16`/`int8` load a
version directly). `plan_precision` then says what to reach and how:

  ONNX Runtime, CUDA provider   auto/fp16: the fp16 version, made by the engine builder (edged.infer.
                                builder, builder `ort-fp16`: float16 weights and activations, the fragile
                                ops of edged.infer.quantize.FP16_KEEP_FP32 kept in fp32) into the cache,
                                or the `<name>.fp16.onnx` beside the model (`edged make-fp16`) if there;
                                int8: the `<name>.int8.onnx` beside the model, if there is one.
  ONNX Runtime, CPU provider    auto/fp32: nothing (fp16 runs slower on CPUs); int8: the `.int8.onnx`
                                file if there is one; fp16: nothing, with the reason.
  TensorRT (background build)   the build's own flags (fp16/int8, `ModelConfig.trt_precision`); a
                                lower-precision plan is adopted through the shadow check too.
  TensorRT (strict)             built in its precision at load: nothing to compare it against.

Whatever the way, the candidate goes through the slot's shadow check (edged.serving.slot,
trigger "precision"): it runs beside the serving engine on the same requests and takes over only when
the decoded results agree; a refusal keeps the serving engine and says why. `PrecisionState` is that
story for /stats, the log and the status page. Plain logic and data; `PrecisionState.record` is called
on the model server's batch or loader threads, `as_dict` on any thread (attribute reads).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class PrecisionPlan:
    configured: str  # auto | fp32 | fp16 | int8
    serving: str  # the precision of the engine that serves from the start
    target: str | None  # the precision to reach in the background; None: stay
    source: str  # "build" (ort-fp16) | "file" (.int8.onnx) | "tensorrt" (its build) | ""
    reason: str  # what happens and why, one line
    path: Path | None = None  # source "file": the file


def plan_precision(
    configured: str,
    *,
    backend: str,
    device: str,
    switch: str | None,
    int8_file: Path,
    trt_precision: str,
    fp16_file: Path | None = None,
    background_build: bool,
) -> PrecisionPlan:
    """What `configured` means for an engine of `backend` on `device` ("cpu" | "cuda" | "dla0"...).
    `switch`: onnxruntime.fp16/int8 loaded a version directly; `int8_file` / `fp16_file`: where the int8
    and fp16 versions would be beside the model (an fp16 file there, made by `edged make-fp16` on another
    machine, is used instead of building one: the builder needs the `onnx` package); `trt_precision`: TensorRT's build precision; `background_build`: a TensorRT engine builds now
    beside the ONNX Runtime one (backend auto)."""
    if switch is not None:
        return PrecisionPlan(
            configured,
            switch,
            None,
            "",
            f"onnxruntime.{switch} loads that version as it is (no shadow check)",
        )
    if background_build:
        if trt_precision == "fp32":
            return PrecisionPlan(configured, "fp32", None, "", "the TensorRT engine builds in fp32")
        return PrecisionPlan(
            configured,
            "fp32",
            trt_precision,
            "tensorrt",
            f"the TensorRT engine builds in {trt_precision}; shadow-checked before it serves",
        )
    if backend == "tensorrt":
        return PrecisionPlan(configured, trt_precision, None, "", f"TensorRT engine built in {trt_precision}")
    gpu = device != "cpu"
    if configured == "fp32":
        return PrecisionPlan(configured, "fp32", None, "", "fp32 configured")
    if configured == "int8":
        if int8_file.is_file():
            return PrecisionPlan(
                configured,
                "fp32",
                "int8",
                "file",
                f"{int8_file.name} is shadow-checked against fp32 before it serves",
                int8_file,
            )
        return PrecisionPlan(
            configured,
            "fp32",
            None,
            "",
            f"no {int8_file.name} beside the model (make it with scripts/quantize_models.py): fp32 serves",
        )
    if not gpu:
        why = "fp16 runs slower than fp32 on ONNX Runtime's CPU provider"
        return PrecisionPlan(
            configured, "fp32", None, "", f"{why}: fp32 serves" if configured == "fp16" else why
        )
    if fp16_file is not None and fp16_file.is_file():
        return PrecisionPlan(
            configured,
            "fp32",
            "fp16",
            "file",
            f"{fp16_file.name} is shadow-checked against fp32 before it serves",
            fp16_file,
        )
    return PrecisionPlan(
        configured,
        "fp32",
        "fp16",
        "build",
        "the fp16 version is built in the background and shadow-checked against fp32 before it serves",
    )


@dataclass
class PrecisionState:
    """Where one model's precision stands: planned, building, shadowing, switched or refused (why)."""

    plan: PrecisionPlan
    state: str = ""  # "" (nothing to do) | building | loading | shadowing | switched | refused | failed
    detail: str = ""
    serving: str = field(default="")
    build: Any = None  # the BackgroundBuild of the fp16 version, while it runs

    def __post_init__(self) -> None:
        self.serving = self.serving or self.plan.serving
        if self.plan.target is not None and not self.state:
            self.state = "building" if self.plan.source in ("build", "tensorrt") else "loading"

    def record(self, result: str, reason: str = "") -> None:
        """A switch event of the precision candidate (edged.serving.slot.requests.RESULTS)."""
        if result == "shadow_started":
            self.state, self.detail = "shadowing", ""
        elif result in ("switched", "forced"):
            self.state, self.detail = "switched", reason
            self.serving = self.plan.target or self.serving
        elif result in ("refused", "failed", "rejected"):
            self.state, self.detail = ("refused" if result == "refused" else "failed"), reason
        elif result == "rolled_back":
            self.state, self.detail, self.serving = "rolled back", reason, self.plan.serving

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "configured": self.plan.configured,
            "serving": self.serving,
            "target": self.plan.target,
            "state": self.state or "none",
            "reason": self.detail or self.plan.reason,
        }
        if self.build is not None and self.state == "building":
            out["build"] = self.build.status()
        return out
