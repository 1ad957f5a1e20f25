"""A real engine build that the test holds back: the builder process waits for a gate file before
building (so a test can look at the daemon side while a build is running, or SIGKILL the builder in
the middle), and appends its pid to a log file each time it really builds (so a test counts builds).

Lives in an importable module because the builder process is spawned: it unpickles `GatedPrepare`
by module path.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from edged.infer.builds import Build, BuildJob, PhaseCallback, prepare
from edged.infer.engine_cache import EngineKey


@dataclass
class GatedBuild:
    inner: Build
    gate: Path
    log: Path
    key: EngineKey = field(init=False)

    def __post_init__(self) -> None:
        self.key = self.inner.key

    def produce(self, dest: Path, progress: PhaseCallback | None = None) -> None:
        with self.log.open("a") as f:
            f.write(f"{os.getpid()}\n")
        if progress is not None:
            progress("held by the test", 0, 2)
        while not self.gate.exists():
            time.sleep(0.02)
        self.inner.produce(dest, progress)


@dataclass
class GatedPrepare:
    gate: Path
    log: Path

    def __call__(self, job: BuildJob) -> Build:
        return GatedBuild(prepare(job), self.gate, self.log)

    def builds(self) -> list[int]:
        """Pids of the processes that started a real build."""
        return [int(x) for x in self.log.read_text().split()] if self.log.exists() else []
