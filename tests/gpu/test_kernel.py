"""Fused preprocessing kernel vs the CPU reference (edged.preprocess.cpu) on real and odd-sized frames.

Differences are measured in *pixel levels* (normalized difference / per-channel scale a = 1/(255 std)),
so one bound holds for every normalization. Expected: cv2.resize (fixed-point weights, result rounded
to uint8) is within ~0.5-1 level of exact float bilinear; cv2.warpPerspective quantizes source
coordinates to 1/32 pixel, so on hard edges it differs by up to |gradient|/64 (a few levels) — the
kernel samples in float and is the more exact of the two.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edged.decoders.registry import get_decoder
from edged.gpu.kernels import ITEM_DTYPE
from edged.preprocess.cpu import preprocess_crops, preprocess_frame
from edged.preprocess.spec import PreprocessSpec, plan_frame
from edged.types import Frame
from tests.support.gpu import HALF, IMAGENET_MEAN, IMAGENET_STD, astronaut_bgr, textured

pytestmark = pytest.mark.gpu

SPECS = {
    "yolo_letterbox": PreprocessSpec(resize="letterbox", size=(640, 640), pad_value=114, color="rgb"),
    "letterbox_topleft_imagenet": PreprocessSpec(
        resize="letterbox", size=(320, 256), pad_align="top_left", mean=IMAGENET_MEAN, std=IMAGENET_STD
    ),
    "stretch_bgr": PreprocessSpec(resize="stretch", size=(300, 300), color="bgr", mean=HALF, std=HALF),
    "ppocr_det": PreprocessSpec(resize="limit_side", limit_side=736, color="bgr", mean=HALF, std=HALF),
    "fixed_height": get_decoder("ppocr_rec").default_preprocess,  # PP-OCR recognizer line crops
    "nhwc_fp16": PreprocessSpec(
        resize="letterbox", size=(416, 416), layout="nhwc", dtype="float16", pad_value=114
    ),
    "nchw_fp16": PreprocessSpec(
        resize="limit_side", limit_side=736, color="bgr", mean=HALF, std=HALF, dtype="float16"
    ),
}
SIZES = {"1x1": (1, 1), "4k": (2160, 3840), "w637": (481, 637), "odd": (563, 1000)}


def _is_resize_path(spec: PreprocessSpec, h: int, w: int) -> bool:
    """Whether the CPU reference used cv2.resize (else warpPerspective, coarser)."""
    from edged.preprocess.cpu import _is_axis_scale

    plan = plan_frame(spec, w, h)
    x, y, cw, ch = plan.content
    hc = plan.h_out_to_src @ np.array([[1, 0, x], [0, 1, y], [0, 0, 1]], dtype=np.float64)
    return _is_axis_scale(hc) and abs(hc[0, 0] - w / cw) < 1e-9 and abs(hc[1, 1] - h / ch) < 1e-9


def level_diff(got: np.ndarray, ref: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """|got - ref| in pixel levels, per element."""
    a, _ = spec.scale_bias
    shape = (1, 3, 1, 1) if spec.layout == "nchw" else (1, 1, 1, 3)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    return np.abs(got.astype(np.float64) - ref.astype(np.float64)) / a.reshape(shape)


def bounds(spec: PreprocessSpec, resize_path: bool) -> tuple[float, float]:
    """(max, mean) level bounds for this comparison."""
    fp16 = 0.25 if spec.dtype == "float16" else 0.0  # fp16 rounding of values up to ~2.6: < 0.2 level
    return (1.0 + fp16, 0.3) if resize_path else (6.0 + fp16, 0.6)


def run_kernel(
    pre: Any, image: np.ndarray, spec: PreprocessSpec, seq: int = 0, fmt: str = "bgr8"
) -> np.ndarray:
    tensor, _ = pre.frame(Frame("cam", seq, image, fmt=fmt), spec)  # type: ignore[arg-type]
    return tensor.to_host()


@pytest.fixture(scope="module")
def pre(gpu: Any) -> Any:
    from edged.gpu.preprocess import GpuPreprocessor

    return GpuPreprocessor()


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("name", list(SPECS))
def test_frame_matches_cpu_reference(pre: Any, name: str, size: str) -> None:
    spec = SPECS[name]
    h, w = SIZES[size]
    image = textured(h, w, seed=h + w)
    ref, _ref_plan = preprocess_frame(image, spec)
    got = run_kernel(pre, image, spec, seq=hash((name, size)) & 0xFFFF)
    assert got.dtype == ref.dtype
    d = level_diff(got, ref, spec)
    resize_path = _is_resize_path(spec, h, w)
    mx, mean = bounds(spec, resize_path)
    print(
        f"{name} {size}: max {d.max():.3f} levels, mean {d.mean():.4f}, p99 {np.percentile(d, 99):.3f} "
        f"({'resize' if resize_path else 'warp'} reference)"
    )
    assert d.max() <= mx and d.mean() <= mean


@pytest.mark.parametrize("fmt", ["bgr8", "rgb8"])
def test_real_image_and_channel_order(pre: Any, fmt: str) -> None:
    image = astronaut_bgr()
    if fmt == "rgb8":
        image = np.ascontiguousarray(image[:, :, ::-1])
    for spec in (SPECS["yolo_letterbox"], SPECS["letterbox_topleft_imagenet"], SPECS["ppocr_det"]):
        ref, _ = preprocess_frame(image, spec, fmt)
        got = run_kernel(pre, image, spec, seq=1 if fmt == "bgr8" else 2, fmt=fmt)
        d = level_diff(got, ref, spec)
        print(f"astronaut {fmt} {spec.resize} {spec.size}: max {d.max():.3f} levels, mean {d.mean():.4f}")
        assert d.max() <= 1.0


def _quads(h: int, w: int) -> list[np.ndarray]:
    axis = np.array([[40, 30], [300, 30], [300, 90], [40, 90]], np.float32)
    c, ang = np.array([w / 2, h / 2]), np.deg2rad(17)
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    rect = np.array([[-120, -25], [120, -25], [120, 25], [-120, 25]])
    rotated = (rect @ rot.T + c).astype(np.float32)
    persp = np.array([[500, 300], [760, 320], [750, 380], [505, 350]], np.float32)
    edge = np.array(
        [[-10, h - 40], [200, h - 40], [200, h + 10], [-10, h + 10]], np.float32
    )  # crosses border
    tall = np.array([[600, 50], [640, 50], [640, 260], [600, 260]], np.float32)
    return [axis, rotated, persp, edge, tall]


@pytest.mark.parametrize("name", ["fixed_height", "cls_stretch", "letterbox_crop"])
def test_crop_batch_matches_warp_reference(pre: Any, name: str) -> None:
    spec = {
        "fixed_height": SPECS["fixed_height"],
        "cls_stretch": PreprocessSpec(resize="stretch", size=(192, 48), color="bgr", mean=HALF, std=HALF),
        "letterbox_crop": PreprocessSpec(
            resize="letterbox", size=(224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD
        ),
    }[name]
    image = astronaut_bgr()
    image = np.ascontiguousarray(np.concatenate([image, textured(512, 512, 3)], axis=1))  # 512x1024
    quads = _quads(*image.shape[:2])
    ref, ref_plans = preprocess_crops(image, quads, spec)
    tensor, plans = pre.crops(Frame("cam", 10, image), quads, spec)
    got = tensor.to_host()
    d = level_diff(got, ref, spec)
    print(
        f"crops {name} x{len(quads)}: max {d.max():.3f} levels, mean {d.mean():.4f}, "
        f"p99 {np.percentile(d, 99):.3f} (warpPerspective reference)"
    )
    assert [p.content for p in plans] == [p.content for p in ref_plans]
    assert d.max() <= 6.0 and d.mean() <= 0.6 and np.percentile(d, 99) <= 2.5


def test_cross_camera_batch_one_launch_matches_each_frame(pre: Any) -> None:
    """Frames of different cameras, sizes and channel orders (host and device memory mixed) in one
    launch: every row equals that frame alone through the CPU reference; padding rows are zero."""
    cp = pytest.importorskip("cupy")
    from edged.gpu.context import GpuLane, gpu_thread

    spec = SPECS["yolo_letterbox"]  # fixed output size, so different source sizes batch together
    images = [textured(481, 637, seed=1), astronaut_bgr(), textured(1080, 1920, seed=3)]
    fmts = ["bgr8", "rgb8", "bgr8"]
    device = cp.asarray(images[2])
    cp.cuda.runtime.deviceSynchronize()
    frames = [
        Frame("north", 7, images[0], fmt="bgr8"),
        Frame("south", 3, np.ascontiguousarray(images[1][:, :, ::-1]), fmt="rgb8"),
        Frame("east", 9, device, fmt="bgr8"),
    ]
    pipe = GpuLane("batcher")
    with gpu_thread():
        plans = [plan_frame(spec, f.width, f.height) for f in frames]
        tensor = pre.rows(list(zip(frames, plans, strict=True)), spec, rows=4, lane=pipe)
        got = tensor.to_host(lane=pipe)
    assert got.shape[0] == 4 and len(plans) == 3
    for i, (frame, fmt) in enumerate(zip(frames, fmts, strict=True)):
        host = frame.image if isinstance(frame.image, np.ndarray) else images[i]
        ref, ref_plan = preprocess_frame(host, spec, fmt)
        assert plans[i].content == ref_plan.content
        d = level_diff(got[i : i + 1], ref, spec)
        print(f"batch row {i} ({frame.camera}, {fmt}): max {d.max():.3f} levels, mean {d.mean():.4f}")
        assert d.max() <= 1.0 and d.mean() <= 0.3
    assert not got[3].any()  # the padding row
    # Two host frames went up (once each); the device frame was read in place.
    assert pipe.h2d == images[0].nbytes + images[1].nbytes + 3 * ITEM_DTYPE.itemsize


def test_kernel_waits_for_its_frames_upload_on_the_copy_stream(pre: Any) -> None:
    """Frames go up on the lane's copy stream (so they overlap the previous batch's compute) and the
    kernel on the lane's stream waits for them: with the copy stream held up by ~2 GB of device copies,
    the second frame into a slot is still read new, not the frame before it (same slot, seq 1 then 3)."""
    import pycuda.driver as cuda

    from edged.gpu.context import GpuLane, gpu_thread

    spec = SPECS["yolo_letterbox"]
    first, second = textured(1080, 1920, seed=21), textured(1080, 1920, seed=22)
    pipe = GpuLane("overlap")
    with gpu_thread():
        plan = plan_frame(spec, 1920, 1080)
        pre.rows([(Frame("overlap", 1, first), plan)], spec, lane=pipe).to_host(lane=pipe)
        pipe.synchronize()
        a, b = cuda.mem_alloc(1 << 28), cuda.mem_alloc(1 << 28)
        for _ in range(8):  # 8 x 256 MB ahead of the upload on the copy stream
            cuda.memcpy_dtod_async(b, a, 1 << 28, pipe.copy_stream)
        got = pre.rows([(Frame("overlap", 3, second), plan)], spec, lane=pipe).to_host(lane=pipe)
        pipe.copy_stream.synchronize()
    ref, _ = preprocess_frame(second, spec)
    stale, _ = preprocess_frame(first, spec)
    assert level_diff(got, ref, spec).max() <= 1.0
    assert level_diff(got, stale, spec).max() > 10.0  # the two frames differ: the check can fail
    assert pipe.h2d >= first.nbytes + second.nbytes


def test_device_frame_zero_copy_and_pitch(pre: Any) -> None:
    """A device frame (CuPy, with a padded row pitch) crosses no bus (copied on the device into its
    slot): no frame upload, same result."""
    cp = pytest.importorskip("cupy")
    from edged.gpu.context import GpuLane, gpu_thread

    image = textured(481, 637, seed=5)
    padded = cp.zeros((481, 640, 3), dtype=cp.uint8)
    padded[:, :637] = cp.asarray(image)
    view = padded[:, :637]  # strides (1920, 3, 1): pitch > width * 3
    cp.cuda.runtime.deviceSynchronize()
    spec = SPECS["ppocr_det"]
    pipe = GpuLane("devcam")
    with gpu_thread():
        tensor, _ = pre.frame(Frame("devcam", 1, view), spec, lane=pipe)
        got = tensor.to_host(lane=pipe)
    ref, _ = preprocess_frame(image, spec)
    assert level_diff(got, ref, spec).max() <= 1.0
    assert pipe.h2d == ITEM_DTYPE.itemsize  # the kernel parameters only; the frame stayed in place
    assert pipe.d2h == got.nbytes


def test_traffic_one_upload_per_frame(pre: Any) -> None:
    """det + two crop batches of one frame: the frame goes up once; only the results come down."""
    from edged.gpu.context import GpuLane, gpu_thread
    from edged.gpu.kernels import ITEM_DTYPE
    from edged.observability.metrics import Metrics

    metrics = Metrics()
    pipe = GpuLane("traffic", metrics=metrics)
    image = textured(720, 1280, seed=9)
    quads = _quads(720, 1280)
    with gpu_thread():
        _det, _ = pre.frame(Frame("traffic", 42, image), SPECS["ppocr_det"], lane=pipe)
        _rec, _ = pre.crops(Frame("traffic", 42, image), quads, SPECS["fixed_height"], lane=pipe)
        _cls, _ = pre.crops(Frame("traffic", 42, image), quads[:2], SPECS["fixed_height"], lane=pipe)
        pipe.synchronize()
    params = ITEM_DTYPE.itemsize * (1 + len(quads) + 2)
    assert pipe.h2d == image.nbytes + params
    assert pipe.d2h == 0
    got = metrics.registry.get_sample_value("edged_gpu_h2d_bytes_total", {"camera": "traffic"})
    assert got == image.nbytes + params
    # The next frame is uploaded again (cache keyed by camera and seq).
    with gpu_thread():
        pre.frame(Frame("traffic", 43, image), SPECS["ppocr_det"], lane=pipe)
    assert pipe.h2d == 2 * image.nbytes + params  # same plan: the kernel parameters are not re-sent


def test_pool_does_not_allocate_per_frame(pre: Any) -> None:
    image = textured(480, 640, seed=1)
    spec = SPECS["yolo_letterbox"]
    run_kernel(pre, image, spec, seq=100)
    run_kernel(pre, image, spec, seq=101)  # both upload slots (frames alternate between two) now sized
    before = pre.pool.allocated_bytes
    for seq in range(102, 112):
        run_kernel(pre, image, spec, seq=seq)
    assert pre.pool.allocated_bytes == before


def test_worker_threads_with_own_pipelines(pre: Any) -> None:
    """Each camera thread pushes the shared primary context and uses its own stream; results match."""
    from concurrent.futures import ThreadPoolExecutor

    from edged.gpu.context import GpuLane, gpu_thread

    spec = SPECS["yolo_letterbox"]
    images = [textured(480 + 16 * i, 640 + 8 * i, seed=20 + i) for i in range(4)]

    def work(i: int) -> float:
        pipe = GpuLane(f"thread{i}")
        with gpu_thread():
            tensor, _ = pre.frame(Frame(f"thread{i}", 0, images[i]), spec, lane=pipe)
            got = tensor.to_host(lane=pipe)
            del tensor  # it holds the lane's stream: released here, where the context is current
        pipe.close()
        ref, _ = preprocess_frame(images[i], spec)
        return float(level_diff(got, ref, spec).max())

    with ThreadPoolExecutor(4) as ex:
        diffs = list(ex.map(work, range(4)))
    assert max(diffs) <= 1.0, diffs


def test_make_preprocessor_picks_kernel(gpu: Any) -> None:
    from edged.gpu.preprocess import GpuPreprocessor
    from edged.gpu.preprocessors import make_preprocessor
    from edged.preprocess.cpu import CpuPreprocessor

    assert isinstance(make_preprocessor("auto"), GpuPreprocessor)
    assert make_preprocessor("kernel") is make_preprocessor("auto")  # one shared instance (upload cache)
    assert isinstance(make_preprocessor("cpu"), CpuPreprocessor)


def test_frames_staged_on_a_camera_thread_upload_what_was_staged(pre: Any) -> None:
    """`stage()` copies a host frame into its slot's page-locked buffer on the calling thread (as a
    camera thread does when it submits); the server's thread then only starts the upload. Proof that
    the staged copy is what goes up: the host image is blanked after staging and still reads as itself.
    The next frame into the same slot (staged over the first) and a frame nobody staged also read right."""
    import threading

    from edged.gpu.context import GpuLane, gpu_thread

    spec = SPECS["yolo_letterbox"]
    images = [textured(720, 1280, seed=31 + i) for i in range(3)]
    refs = [preprocess_frame(img, spec)[0] for img in images]
    frames = [Frame("staged", seq, img.copy()) for seq, img in zip((0, 2, 4), images, strict=True)]
    pipe = GpuLane("staged")
    plan = plan_frame(spec, 1280, 720)
    got = []
    for i, frame in enumerate(frames):
        if i < 2:  # the third is not staged: the server's thread copies it itself
            t = threading.Thread(target=pre.stage, args=(frame,))
            t.start()
            t.join()
            frame.image[:] = 0  # what was staged must go up, not what the host array holds now
        with gpu_thread():
            got.append(pre.rows([(frame, plan)], spec, lane=pipe).to_host(lane=pipe))
    for i, ref in enumerate(refs):
        assert level_diff(got[i], ref, spec).max() <= 1.0, f"frame {i} did not read as itself"
    assert level_diff(got[1], refs[0], spec).max() > 10.0  # the frames differ: the check can fail
    assert pipe.h2d >= sum(img.nbytes for img in images)


def test_frames_in_flight_keep_their_own_slots_across_lanes(pre: Any) -> None:
    """Two frames of one camera in flight whose seqs have the same parity (the capture dropped the one
    between): the detector's lane reads the newer frame while the recognizer's lane still crops the
    older one. Each keeps the slot its flow gave it (`Frame.slot`), so the crops of the older frame do
    not re-upload it over the newer one before the detector's kernel (held up behind ~2 GB of device
    copies on its stream) has read it. With slots by seq parity both frames shared one device buffer."""
    import pycuda.driver as cuda

    from edged.gpu.context import GpuLane, gpu_thread

    det_spec, rec_spec = SPECS["yolo_letterbox"], SPECS["fixed_height"]
    older_img, newer_img = textured(720, 1280, seed=41), textured(720, 1280, seed=42)
    older, newer = Frame("lanes", 4, older_img, slot=0), Frame("lanes", 6, newer_img, slot=1)
    quads = _quads(720, 1280)
    det_lane, rec_lane = GpuLane("lanes-det"), GpuLane("lanes-rec")
    plan = plan_frame(det_spec, 1280, 720)
    with gpu_thread():
        pre.rows([(older, plan)], det_spec, lane=det_lane).to_host(lane=det_lane)  # older's detection: done
        a, b = cuda.mem_alloc(1 << 28), cuda.mem_alloc(1 << 28)
        for _ in range(8):  # the detector's stream is busy: newer's kernel waits behind these
            cuda.memcpy_dtod_async(b, a, 1 << 28, det_lane.stream)
        pending = pre.rows([(newer, plan)], det_spec, lane=det_lane)
        crops, _ = pre.crops(older, quads, rec_spec, lane=rec_lane)  # older's crops, meanwhile
        got_crops = crops.to_host(lane=rec_lane)
        got_det = pending.to_host(lane=det_lane)
    ref_det, stale_det = preprocess_frame(newer_img, det_spec)[0], preprocess_frame(older_img, det_spec)[0]
    assert level_diff(got_det, ref_det, det_spec).max() <= 1.0, "the detector read another frame"
    assert level_diff(got_det, stale_det, det_spec).max() > 10.0  # the frames differ: the check can fail
    ref_crops, _ = preprocess_crops(older_img, quads, rec_spec)
    d = level_diff(got_crops, ref_crops, rec_spec)
    assert d.max() <= 6.0 and np.percentile(d, 99) <= 2.5, "the crops read another frame"


def test_device_frame_is_copied_out_of_the_capture_ring(pre: Any) -> None:
    """A device frame lives in its capture's ring of buffers (jetson-utils `videoSource`), reused a few
    captures later while the frame may still be in flight: here the buffer is overwritten after the
    detector took the frame, and the recognizer's crops of the frame still read the frame as taken."""
    cp = pytest.importorskip("cupy")
    from edged.gpu.context import GpuLane, gpu_thread

    taken, later = textured(720, 1280, seed=51), textured(720, 1280, seed=52)
    ring = cp.asarray(taken)
    cp.cuda.runtime.deviceSynchronize()
    frame, quads, spec = Frame("ring", 7, ring, slot=0), _quads(720, 1280), SPECS["fixed_height"]
    pipe = GpuLane("ring")
    with gpu_thread():
        pre.frame(frame, SPECS["yolo_letterbox"], lane=pipe)[0].to_host(lane=pipe)
        ring[...] = cp.asarray(later)  # the capture reuses its buffer for a newer frame
        cp.cuda.runtime.deviceSynchronize()
        got = pre.crops(frame, quads, spec, lane=pipe)[0].to_host(lane=pipe)
    ref, stale = preprocess_crops(taken, quads, spec)[0], preprocess_crops(later, quads, spec)[0]
    d = level_diff(got, ref, spec)
    assert d.max() <= 6.0 and np.percentile(d, 99) <= 2.5, "the crops read the reused buffer"
    assert level_diff(got, stale, spec).max() > 10.0  # the two frames differ: the check can fail


def test_forget_frees_a_stopped_cameras_frame_buffers(pre: Any) -> None:
    """A stopped camera's frame slots are freed (`forget`, called once its flow has drained): the pool
    shrinks by its two frame buffers; another camera's slot is untouched (read again from its cache
    after the freed memory was handed out anew); the camera can come back under its name and read."""
    from edged.gpu.context import GpuLane, gpu_thread

    spec = SPECS["yolo_letterbox"]
    gone, back, stays = (textured(720, 1280, seed=s) for s in (61, 62, 63))
    lane, plan = GpuLane("forget"), plan_frame(spec, 1280, 720)

    def read(frame: Frame) -> np.ndarray:
        return np.asarray(pre.rows([(frame, plan)], spec, lane=lane).to_host(lane=lane))

    kept = Frame("stays", 0, stays, slot=0)
    with gpu_thread():
        for slot in (0, 1):
            frame = Frame("gone", slot, gone, slot=slot)
            pre.stage(frame)
            read(frame)
        read(kept)
    before = pre.pool.allocated_bytes
    pre.forget("gone")  # as a stopping camera calls it: from a thread with no CUDA context current
    freed = before - pre.pool.allocated_bytes
    left = [k for k in pre._frame_staging if k[0] == "gone"]
    with gpu_thread():
        got_back = read(Frame("gone", 9, back, slot=0))
        got_kept = read(kept)
    assert freed >= 2 * gone.nbytes and left == []
    assert level_diff(got_back, preprocess_frame(back, spec)[0], spec).max() <= 1.0
    assert level_diff(got_kept, preprocess_frame(stays, spec)[0], spec).max() <= 1.0
    assert level_diff(got_kept, preprocess_frame(back, spec)[0], spec).max() > 10.0  # the check can fail
