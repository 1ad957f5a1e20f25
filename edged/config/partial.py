"""What `load_config` can still say about a config that failed its schema, so one run lists it all.

- `suggest_key(loc)`: the closest known key for an unknown one ("did you mean `fps`?"), found by
  walking the pydantic models along the error's key path.
- `raw_problems(data, base)`: the cross-reference and model-file checks, run on the raw YAML data
  (whatever parts of it have the right shape), because a schema error stops pydantic from building
  the `Config` these checks normally read.

Pure functions over data: no threads, nothing started; model files are only opened to check them.
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from edged.config.files import model_file_problems
from edged.config.problems import Loc
from edged.config.schema import Config


def _unwrap(ann: Any) -> Any:
    """`X | None` -> X; other unions and plain types as they are."""
    if typing.get_origin(ann) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return ann


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The pydantic model class that holds the keys at `loc` (a path of keys and list indexes)."""
    ann: Any = Config
    for part in loc:
        ann = _unwrap(ann)
        origin = typing.get_origin(ann)
        if isinstance(ann, type) and issubclass(ann, BaseModel) and isinstance(part, str):
            field = ann.model_fields.get(part)
            if field is None:
                return None
            ann = field.annotation
        elif origin is dict:
            ann = typing.get_args(ann)[1]  # `part` is a name the user chose (a camera, a model)
        elif origin is list and isinstance(part, int):
            ann = typing.get_args(ann)[0]
        else:
            return None
    ann = _unwrap(ann)
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def suggest_key(loc: Loc) -> str | None:
    """For an unknown key at `loc`, the known key it most likely meant, else None."""
    if not loc or not isinstance(loc[-1], str):
        return None
    model = _model_at(loc[:-1])
    if model is None:
        return None
    known = [f.alias or name for name, f in model.model_fields.items()]
    close = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.6)
    return close[0] if close else None


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def raw_problems(data: dict[str, Any], base: Path, check_files: bool) -> list[tuple[Loc, str]]:
    """Unknown `model:` references and missing/unloadable model files, read from raw config data."""
    problems: list[tuple[Loc, str]] = []
    models = _mapping(data.get("models"))
    for cam_name, cam in _mapping(data.get("cameras")).items():
        chain = _mapping(cam).get("chain")
        for i, stage in enumerate(chain if isinstance(chain, list) else []):
            model = _mapping(stage).get("model")
            if isinstance(model, str) and model not in models:
                known = ", ".join(sorted(models)) or "none defined"
                problems.append(
                    (("cameras", cam_name, "chain", i, "model"), f"unknown model {model!r} (models: {known})")
                )
    if not check_files:
        return problems
    for name, m in models.items():
        path, labels = _mapping(m).get("path"), _mapping(m).get("labels")
        if not isinstance(path, str):
            continue
        p = Path(path) if Path(path).is_absolute() else base / path
        lp = (
            None
            if not isinstance(labels, str)
            else (Path(labels) if Path(labels).is_absolute() else base / labels)
        )
        problems.extend((("models", name, key), msg) for key, msg in model_file_problems(p, lp))
    return problems
