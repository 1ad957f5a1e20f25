"""Which declared input shapes a model server warms, in which order, and which it may use meanwhile.

A GPU backend pays for the first call of every new input shape (ONNX Runtime's CUDA provider builds a
session per shape and picks cuDNN algorithms; TensorRT sets up a profile), so no batch may use a shape
before it ran once. Warming all of them before serving kept a restarted device blind for 27-30 s on an
H100. `StagedWarmUp` makes the server ready after ONE shape that every request can be planned into:

  stage 0   the smallest row bucket at the largest declared size: a frame or crop fits it (padded on
            the right or bottom, or scaled down into it), and any number of rows runs as that many
            one-row calls;
  stage 1   the smallest row bucket at every other size, smallest first: rows go back to their own
            (natural) size as each is warm;
  stage k   row bucket k at every size warm so far: batches of more rows once the whole bucket is warm.

`usable` is always a product of warm row buckets x warm sizes (a `ShapeSet`), so the planning functions
(edged.serving.shapes) and the row buckets work on it unchanged: no batch ever runs an unwarmed shape.
The model server runs stage 0 at load and one later step between two batches on its batch thread (the
engine keeps its one caller); a shape that fails to warm is left out of `usable` and logged.

ONNX Runtime on the CPU needs none of it: its first call of a new shape costs what later calls cost
(measured, docs/benchmarks.md "First call of a new input shape"), so with `batching.warm_up: auto` a CPU
engine runs one call (the smallest shape: the decoder's warm-up sample) and uses every declared shape at
once; `warm_up: all` stages every declared shape on any backend (tests use it to exercise this path).

Pure logic, no threads; the server guards it with its own lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edged.serving.shapes import ShapeSet

Step = tuple[int, tuple[int, int]]  # (rows, (width, height))


class WarmUpCancelled(Exception):
    """A warm-up stopped between two shapes because its `cancel()` said so (shutdown, a newer update)."""


@dataclass
class StagedWarmUp:
    """The warm-up plan of one server's engine over its declared `shapes` (see the module docstring).
    `every_shape`: the engine pays for new shapes (a GPU backend, or `warm_up: all`); False: one call."""

    shapes: ShapeSet
    every_shape: bool = True
    usable: ShapeSet = field(init=False)
    done: int = field(init=False, default=0)
    failed: list[tuple[Step, str]] = field(init=False, default_factory=list)
    _queue: list[Step] = field(init=False, default_factory=list)
    _rows_stage: int = field(init=False, default=0)  # row bucket index whose pairs are being warmed
    _stage_ok: bool = field(init=False, default=True)
    _sizes: list[tuple[int, int]] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        rows, sizes = self.shapes.rows, self.shapes.sizes
        if not self.every_shape:
            self.usable = self.shapes  # nothing to wait for: the first call is only the decoder's sample
            return
        self.usable = ShapeSet((), ())
        self._queue = [(rows[0], sizes[-1])] + [(rows[0], s) for s in sizes[:-1]]

    @property
    def total(self) -> int:
        """The shapes this plan runs: every declared one, or the one sample call."""
        return len(self.shapes.rows) * len(self.shapes.sizes) if self.every_shape else 1

    @property
    def ready(self) -> bool:
        """Every request can be planned into `usable` (stage 0 is warm)."""
        return bool(self.usable.rows and self.usable.sizes)

    @property
    def finished(self) -> bool:
        return self.next() is None

    def first(self) -> list[Step]:
        """What runs before the server serves: stage 0 (or the one sample call)."""
        if not self.every_shape:
            return [(self.shapes.rows[0], self.shapes.sizes[0])]
        return self._queue[:1]

    def next(self) -> Step | None:
        """The next shape to warm, or None when every declared shape was tried."""
        self._refill()
        return self._queue[0] if self._queue else None

    def record(self, step: Step, error: str | None = None) -> None:
        """`step` ran (or failed with `error`): what it makes usable becomes usable."""
        if self._queue and self._queue[0] == step:
            self._queue.pop(0)
        elif not self.every_shape:  # the one sample call
            self.done = 1
            return
        self.done += 1
        rows, size = step
        if error is not None:
            self.failed.append((step, error))
            if rows != self.shapes.rows[0]:
                self._stage_ok = False  # this row bucket stays out
        elif rows == self.shapes.rows[0]:
            self._sizes.append(size)
            self.usable = ShapeSet((rows,), tuple(s for s in self.shapes.sizes if s in self._sizes))
        self._refill()

    def _refill(self) -> None:
        """Start the next row bucket's stage once the current one has run."""
        rows = self.shapes.rows
        if self._queue or not self.every_shape or self._rows_stage >= len(rows):
            return
        if self._rows_stage > 0 and self._stage_ok:  # the bucket just warmed at every usable size
            bucket = rows[self._rows_stage]
            self.usable = ShapeSet(tuple(sorted({*self.usable.rows, bucket})), self.usable.sizes)
        self._rows_stage += 1
        self._stage_ok = True
        if self._rows_stage < len(rows) and self.usable.sizes:
            self._queue = [(rows[self._rows_stage], s) for s in self.usable.sizes]
        else:
            self._rows_stage = len(rows)

    def mark_all_warm(self) -> None:
        """Another engine, warmed on every shape it needs before it was switched in, serves now."""
        self.usable, self._queue, self._rows_stage = self.shapes, [], len(self.shapes.rows)
        self.done = self.total

    def progress(self) -> str:
        """e.g. "8/27" (shapes run of those this plan runs)."""
        return f"{self.done}/{self.total}"
