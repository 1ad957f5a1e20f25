"""Checks of the files a config names: a model file exists, reads, is ONNX and loads; a labels file exists.

Run at check time (`edged check-config`, every start and reload), so a bad model file is one clear line
naming the setting, not a failure on the first frame. ONNX Runtime is asked to load the model with every
optimization off (a fast structural check).
"""

from __future__ import annotations

from pathlib import Path

from edged.config.inference import MODEL_VERSIONS


def model_file_problems(path: Path, labels: Path | None) -> list[tuple[str, str]]:
    """('path'|'labels', reason) when a model or labels file is missing, unreadable or not ONNX."""
    out: list[tuple[str, str]] = []
    if not path.exists():
        out.append(("path", f"model file not found: {path} ({_how_to_make(path)})"))
    elif not path.is_file():
        out.append(("path", f"not a file: {path}"))
    else:
        try:
            with path.open("rb") as f:
                head = f.read(16)
        except OSError as e:
            out.append(("path", f"cannot read {path}: {e.strerror}"))
        else:
            if path.suffix in (".engine", ".plan"):
                pass  # a prebuilt TensorRT plan: checked when TensorRT deserializes it
            elif not _looks_like_onnx(head):
                out.append(("path", f"{path} is not an ONNX model (bad header)"))
            else:
                reason = _onnx_loads(path)
                if reason:
                    out.append(("path", reason))
    if labels is not None and not labels.is_file():
        out.append(("labels", f"labels file not found: {labels}"))
    return out


def _how_to_make(path: Path) -> str:
    for switch, (suffix, command) in MODEL_VERSIONS.items():
        if path.name.endswith(suffix):
            source = path.with_name(path.name[: -len(suffix)] + ".onnx")
            return f"make it with {command.format(source=source)}, or set onnxruntime.{switch}: false"
    return "run `edged install-models` for the bundled models"


def _looks_like_onnx(head: bytes) -> bool:
    # ModelProto starts with field 1 (ir_version, varint: tag 0x08) in every exporter we know of.
    return len(head) >= 2 and head[0] == 0x08


def _onnx_loads(path: Path) -> str | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 4
    try:
        ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises private exception types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return f"{path} is not a loadable ONNX model: {first}"
    return None
