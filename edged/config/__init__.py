"""Configuration: data only, nothing here starts anything.

The pydantic schema (schema.py: the top level, device, MQTT, health, thumbnails, logging; cameras.py;
inference.py: models, preprocessing, batching, backends) and the loader that reads a YAML file into it
with every problem located at file:line:column (loader.py over yaml_source.py, partial.py, files.py;
the errors in problems.py). The names below are the package's public ones.
"""
