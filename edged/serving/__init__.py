"""Model serving: one `ModelServer` per loaded model, the only caller of its engine, batching the
requests of every camera into a fixed, declared set of input shapes (edged.serving.shapes)."""

from edged.serving.queue import ServerClosed
from edged.serving.server import Deliver, ModelServer
from edged.serving.shapes import ShapeError, ShapeSet, declare_shapes

__all__ = ["Deliver", "ModelServer", "ServerClosed", "ShapeError", "ShapeSet", "declare_shapes"]
