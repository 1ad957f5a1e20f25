"""TensorRT backend (placeholder until the GPU issue lands: reports itself unavailable)."""

from __future__ import annotations

from edged.infer.base import register_backend


def unavailable_reason() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT is not importable (it ships with JetPack / the TensorRT SDK)"
    return "the TensorRT backend is not implemented yet"


def _factory(*args, **kwargs):  # type: ignore[no-untyped-def]
    raise NotImplementedError("TensorRT backend not implemented yet")


register_backend("tensorrt", _factory, unavailable_reason)
