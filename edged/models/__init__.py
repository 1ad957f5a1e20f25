"""Decoders per model kind. Importing this package registers all of them."""

from edged.models.base import DECODERS, Decoder, build_decoder, get_decoder, register

__all__ = ["DECODERS", "Decoder", "build_decoder", "get_decoder", "register"]
