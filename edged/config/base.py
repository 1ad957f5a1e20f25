"""The base of every configuration model: unknown keys are errors (a typo is not a silently ignored
setting), defaults are validated, names follow one pattern."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

NAME_RE = r"^[A-Za-z0-9_-]{1,64}$"


class EdgedModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)
