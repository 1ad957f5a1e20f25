"""Every model kind edged knows, by name: the registry behind `get_decoder`, `build_decoder` and the
config's `kind` choices (`kinds()`), so a kind is declared once, by its decoder's `@register`.

The built-in decoders register when their modules are imported; `_builtins()` imports them on the first
lookup (not at import time: the decoders' modules import `base`, and the config loader imports this)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

from edged.decoders.base import DECODERS, Decoder

BUILTIN_MODULES = ("classifier", "ppocr", "ssd", "yolo")
_loaded = False


def _builtins() -> dict[str, type[Decoder]]:
    global _loaded
    if not _loaded:
        for name in BUILTIN_MODULES:
            importlib.import_module(f"edged.decoders.{name}")
        _loaded = True
    return DECODERS


def kinds() -> tuple[str, ...]:
    """The model kinds a config may name, sorted."""
    return tuple(sorted(_builtins()))


def get_decoder(kind: str) -> type[Decoder]:
    try:
        return _builtins()[kind]
    except KeyError:
        raise KeyError(f"no decoder for model kind {kind!r} (known: {', '.join(kinds())})") from None


def build_decoder(
    kind: str,
    params: Mapping[str, Any],
    labels: Sequence[str] = (),
    metadata: Mapping[str, str] | None = None,
) -> Decoder:
    cls = get_decoder(kind)
    return cls(cls.Params.model_validate(dict(params)), labels, metadata)
