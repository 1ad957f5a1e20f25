"""Decoders per model kind. Importing this package registers all of them."""

from edged.models import classifier, ppocr, ssd, yolo  # noqa: F401  (register the built-in decoders)
from edged.models.base import DECODERS, Decoder, build_decoder, get_decoder, register
from edged.models.ppocr import load_charset

__all__ = ["DECODERS", "Decoder", "build_decoder", "get_decoder", "load_charset", "register"]
