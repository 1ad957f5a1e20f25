"""Configuration: pydantic schema (models.py) and the YAML loader with exact error locations (loader.py)."""

from __future__ import annotations

from edged.config.loader import ConfigError, Problem, load_config
from edged.config.schema import CameraConfig, Config, ModelConfig, MqttConfig, StageConfig
from edged.preprocess.spec import PreprocessSpec

__all__ = [
    "CameraConfig",
    "Config",
    "ConfigError",
    "ModelConfig",
    "MqttConfig",
    "Problem",
    "StageConfig",
    "effective_preprocess",
    "load_config",
]


def effective_preprocess(model: ModelConfig) -> PreprocessSpec:
    """The model kind's default preprocessing with the config's overrides applied."""
    from edged.models.base import get_decoder

    return model.preprocess.apply(get_decoder(model.kind).default_preprocess)
