"""Warming a model server's declared input shapes: the exception a stopped warm-up raises."""

from __future__ import annotations


class WarmUpCancelled(Exception):
    """A warm-up stopped between two shapes because its `cancel()` said so (shutdown, a newer update)."""
