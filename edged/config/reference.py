"""Markdown reference of every config option, generated from the pydantic schema (docs/configuration.md).

A test checks the committed file equals this output, so docs cannot drift from the code.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel

from edged.config.schema import Config


def _type_name(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "").replace("pathlib.", "").replace("pydantic.types.", "")
    for prefix in ("<class '", "'>"):
        text = text.replace(prefix, "")
    text = re.sub(r"edged\.config\.\w+\.", "", text)  # the schema's own classes, by bare name
    return text.replace("NoneType", "None").replace("|", "\\|")


def _default(field: Any) -> str:
    if field.default_factory is not None:
        factory = field.default_factory
        return "(see below)" if isinstance(factory, type) and issubclass(factory, BaseModel) else "`{}`"
    if field.is_required():
        return "**required**"
    value = field.default
    if hasattr(value, "get_secret_value"):
        return "null"
    return f"`{json.dumps(value, default=str)}`"


def _section(model: type[BaseModel], path: str, out: list[str], seen: set[str]) -> None:
    out.append(f"\n## `{path or '(top level)'}`\n")
    if model.__doc__ and model.__doc__.strip() and not model.__doc__.startswith("!!!"):
        out.append(model.__doc__.strip().splitlines()[0] + "\n")
    out.append("| key | type | default | description |\n|---|---|---|---|")
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, field in model.model_fields.items():
        out.append(
            f"| `{name}` | `{_type_name(field.annotation)}` | {_default(field)} | {field.description or ''} |"
        )
        for sub in _models_in(field.annotation):
            nested.append((name, sub))
    for name, sub in nested:
        key = f"{path}.{name}" if path else name
        if sub.__name__ in ("ModelConfig", "CameraConfig", "LineConfig", "ZoneConfig"):
            key += ".<name>"
        if sub.__name__ == "StageConfig":
            key += "[]"
        if key not in seen:
            seen.add(key)
            _section(sub, key, out, seen)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    found = []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    for arg in getattr(annotation, "__args__", ()) or ():
        found.extend(_models_in(arg))
    return found


def config_reference() -> str:
    from edged.decoders.base import DECODERS
    from edged.decoders.registry import get_decoder

    get_decoder("yolo")  # registers the built-in decoders
    out = [
        "# Configuration reference\n",
        "Generated from the pydantic schema by `python -m edged.config.reference` (a test keeps it current).",
        "Unknown keys are errors. Relative paths are relative to the config file. Strings may use `${VAR}`,",
        "`${VAR:-default}` and `${cred:NAME}` (a file in systemd's `$CREDENTIALS_DIRECTORY`).",
    ]
    _section(Config, "", out, set())
    out.append("\n## Decoder parameters (`models.<name>.decode`) per `kind`\n")
    for kind in sorted(DECODERS):
        dec = DECODERS[kind]
        spec = dec.default_preprocess
        out.append(f"\n### `{kind}`\n")
        out.append(
            f"Default preprocessing: resize `{spec.resize}`, size `{list(spec.size)}`, color `{spec.color}`, "
            f"mean `{list(spec.mean)}`, std `{list(spec.std)}`, pad `{spec.pad_value}`, layout `{spec.layout}`.\n"
        )
        out.append("| key | type | default | description |\n|---|---|---|---|")
        for name, field in dec.Params.model_fields.items():
            out.append(
                f"| `{name}` | `{_type_name(field.annotation)}` | {_default(field)} | {field.description or ''} |"
            )
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    import sys

    sys.stdout.write(config_reference())
