"""Async downloads into page-locked buffers (edged.gpu.transfer): what the model servers use for every
GPU engine's outputs. The copy is enqueued on the producing stream and waited for on another thread;
buffers come back for the next batch."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


def _root(x: Any) -> int:
    """Identity of the allocation under a view."""
    while isinstance(x, np.ndarray) and x.base is not None:
        x = x.base
    return id(x)


def test_download_waits_on_another_thread_and_reuses_buffers(
    gpu: Any, recwarn: pytest.WarningsRecorder
) -> None:
    """A download waited for on another thread (no CUDA context of its own, as a server's decode
    thread) gives the right arrays, leaves nothing pycuda could not clean up (it warns and leaks an
    event dropped outside the context), and its pinned buffers are reused."""
    import pycuda.driver as cuda

    from edged.gpu.buffers import DeviceTensor
    from edged.gpu.transfer import HostBuffers, download

    stream = cuda.Stream()
    a = np.arange(3 * 1000 * 7, dtype=np.float32).reshape(3, 1000, 7)
    b = np.arange(5 * 13, dtype=np.int32).reshape(5, 13)
    dev_a, dev_b = cuda.mem_alloc(a.nbytes), cuda.mem_alloc(b.nbytes)
    cuda.memcpy_htod_async(dev_a, a, stream)
    cuda.memcpy_htod_async(dev_b, b, stream)
    tensors = {
        "a": DeviceTensor(int(dev_a), a.shape, a.dtype, owner=dev_a, stream=stream).first(2),
        "b": DeviceTensor(int(dev_b), b.shape, b.dtype, owner=dev_b, stream=stream),
        "n": np.array([42]),  # host values pass through
    }
    pool = HostBuffers()
    got: dict[str, np.ndarray] = {}
    d = download(tensors, pool)
    t = threading.Thread(target=lambda: got.update({k: v.copy() for k, v in d.wait().items()}))
    t.start()
    t.join(10)
    assert np.array_equal(got["a"], a[:2]) and np.array_equal(got["b"], b) and got["n"].tolist() == [42]
    assert not [w for w in recwarn if "could not be cleaned up" in str(w.message)]
    first = {_root(v) for k, v in d.wait().items() if k != "n"}
    d.release()
    again = download(tensors, pool)
    assert {_root(v) for k, v in again.wait().items() if k != "n"} == first  # the same pinned buffers
    again.release()
