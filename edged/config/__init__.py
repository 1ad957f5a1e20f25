"""Configuration: data only, nothing here starts anything.

The pydantic schema (schema.py: the top level, device, MQTT, health, thumbnails, logging; cameras.py;
inference.py: models, preprocessing, batching, backends) and the loader that reads a YAML file into it
with every problem located at file:line:column (loader.py over yaml_source.py, partial.py, files.py;
the errors in problems.py). The names below are the package's public ones.
"""

from __future__ import annotations

from edged.config.cameras import CameraConfig, StageConfig
from edged.config.inference import ModelConfig
from edged.config.loader import load_config
from edged.config.problems import ConfigError, Problem
from edged.config.schema import Config, MqttConfig
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
