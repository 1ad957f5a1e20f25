"""Decoders per model kind: a model's raw outputs -> Detections. `registry.py` knows every kind (the
config's `kind` choices come from it); one file per decoder family, registered with `base.register`."""
