"""Exploration on the GPU machine (not product code, not a product figure): the real APIs of PyNvVideoCodec 2.2.4 and
nvImageCodec 0.9 as edged uses them (plane views, surface reuse, colour, latency modes, speed). Run from a folder
holding the videos it names: `python scripts/explore_gpu_decode.py` (results in $OUT/probe.json)."""
# ruff: noqa: E402, F841, RUF059, SIM115  (an exploration script, kept as it ran)

import ctypes
import hashlib
import json
import os
import sys
import time
import traceback

import numpy as np

OUT = os.environ.get("OUT", "/tmp/out")
P = os.path.dirname(os.path.abspath(__file__))
res = {}


def step(name):
    def deco(fn):
        t = time.perf_counter()
        try:
            res[name] = fn()
        except Exception as e:
            res[name] = {"error": f"{type(e).__name__}: {e}", "tb": traceback.format_exc()[-1500:]}
        print(
            f"== {name} ({time.perf_counter() - t:.2f} s)",
            json.dumps(res[name], default=str)[:3000],
            flush=True,
        )
        return fn

    return deco


import pycuda.driver as cuda

cuda.init()
ctx = cuda.Device(0).retain_primary_context()
ctx.push()
stream = cuda.Stream()
import PyNvVideoCodec as nvc

res["nvc_dir"] = [n for n in dir(nvc) if not n.startswith("_")]
print(res["nvc_dir"])


def cai_of(o):
    try:
        return o.__cuda_array_interface__
    except Exception as e:
        return f"no CAI: {e}"


def dl(ptr, n):
    h = np.empty(n, np.uint8)
    cuda.memcpy_dtoh(h, ptr)
    return h


@step("demux_h264")
def _():
    d = nvc.CreateDemuxer(filename=f"{P}/plates-1080.mp4")
    out = {"dir": [n for n in dir(d) if not n.startswith("_")]}
    for m in (
        "GetNvCodecId",
        "Width",
        "Height",
        "FrameRate",
        "ColorSpace",
        "ColorRange",
        "BitDepth",
        "ChromaFormat",
        "GetContainerName",
        "AvgFrameRateNum",
        "AvgFrameRateDen",
        "GetTimebaseNum",
        "GetTimebaseDen",
    ):
        try:
            v = getattr(d, m)()
            out[m] = f"{v!r} / {v}"
        except Exception as e:
            out[m] = f"ERR {e}"
    return out


@step("decode_h264")
def _():
    d = nvc.CreateDemuxer(filename=f"{P}/plates-1080.mp4")
    dec = nvc.CreateDecoder(
        gpuid=0,
        codec=d.GetNvCodecId(),
        cudacontext=ctx.handle,
        cudastream=stream.handle,
        usedevicememory=True,
    )
    out = {"dec_dir": [n for n in dir(dec) if not n.startswith("_")]}
    per_packet, frames, pkts, sums_at, kept = [], 0, 0, {}, []
    first = None
    t0 = time.perf_counter()
    for pkt in d:
        pkts += 1
        if pkts <= 3:
            out[f"pkt{pkts}"] = {
                a: str(getattr(pkt, a, "?"))
                for a in ("bsl", "key", "pts", "dts", "decode_flag", "is_video", "bDiscontinuity")
            }
        fs = dec.Decode(pkt)
        per_packet.append(len(fs))
        for f in fs:
            if first is None:
                first = f
                out["frame_dir"] = [n for n in dir(f) if not n.startswith("_")]
                out["frame_shape"] = str(getattr(f, "shape", "?"))
                out["frame_cai"] = str(cai_of(f))
                try:
                    views = f.cuda()
                    out["cuda()"] = [str(cai_of(v)) for v in views]
                except Exception as e:
                    out["cuda()"] = f"ERR {e}"
                for m in ("framesize", "getPTS", "GetPixelFormat", "format", "timestamp"):
                    try:
                        a = getattr(f, m)
                        out[m] = str(a() if callable(a) else a)
                    except Exception as e:
                        out[m] = f"ERR {e}"
                try:
                    out["plane0"] = int(f.GetPtrToPlane(0))
                    out["plane1"] = int(f.GetPtrToPlane(1))
                except Exception as e:
                    out["planes"] = f"ERR {e}"
            if frames < 8:
                stream.synchronize()
                p0 = int(f.GetPtrToPlane(0))
                n = int(f.framesize())
                sums_at[frames] = hashlib.md5(dl(p0, n).tobytes()).hexdigest()
                kept.append((frames, f, p0, n))
            frames += 1
    stream.synchronize()
    out["t_decode_s"] = round(time.perf_counter() - t0, 3)
    out["packets"], out["frames"] = pkts, frames
    out["per_packet_head"] = per_packet[:12]
    out["per_packet_tail"] = per_packet[-6:]
    later = {i: hashlib.md5(dl(p0, n).tobytes()).hexdigest() for i, f, p0, n in kept}
    out["overwritten_after_more_decodes"] = {i: sums_at[i] != later[i] for i in sums_at}
    out["ptrs"] = [p0 for _, _, p0, _ in kept]
    # NV12 correctness vs OpenCV on the CPU (if the machine's cv2 reads mp4)
    try:
        import cv2

        cap = cv2.VideoCapture(f"{P}/plates-1080.mp4")
        ok, bgr = cap.read()
        out["cv2"] = f"{cv2.__version__} read={ok}"
        if ok:
            i, f, p0, n = kept[0]
            nv12 = dl(p0, n)  # may be overwritten: compare a freshly decoded first frame
            d2 = nvc.CreateDemuxer(filename=f"{P}/plates-1080.mp4")
            dec2 = nvc.CreateDecoder(
                gpuid=0,
                codec=d2.GetNvCodecId(),
                cudacontext=ctx.handle,
                cudastream=stream.handle,
                usedevicememory=True,
            )
            for pkt in d2:
                fs = dec2.Decode(pkt)
                if fs:
                    stream.synchronize()
                    nv12 = dl(int(fs[0].GetPtrToPlane(0)), int(fs[0].framesize()))
                    break
            h, w = bgr.shape[:2]
            out["nv12_len_vs_expected"] = [len(nv12), h * w * 3 // 2]
            conv = cv2.cvtColor(nv12[: h * w * 3 // 2].reshape(h * 3 // 2, w), cv2.COLOR_YUV2BGR_NV12)
            diff = np.abs(conv.astype(int) - bgr.astype(int))
            out["nv12_vs_cv2_bgr"] = {
                "mean": float(diff.mean()),
                "p99": float(np.percentile(diff, 99)),
                "max": int(diff.max()),
            }
    except Exception as e:
        out["cv2_cmp"] = f"ERR {e}"
    return out


@step("decode_low_latency")
def _():
    d = nvc.CreateDemuxer(filename=f"{P}/plates-1080.mp4")
    out = {"enums": [str(x) for x in dir(nvc.DisplayDecodeLatencyType) if not x.startswith("_")]}
    dec = nvc.CreateDecoder(
        gpuid=0,
        codec=d.GetNvCodecId(),
        cudacontext=ctx.handle,
        cudastream=stream.handle,
        usedevicememory=True,
        latency=nvc.DisplayDecodeLatencyType.LOW,
    )
    per, n = [], 0
    for pkt in d:
        pkt.decode_flag = nvc.VideoPacketFlag.ENDOFPICTURE
        fs = dec.Decode(pkt)
        per.append(len(fs))
        n += len(fs)
    out["frames"], out["per_packet_head"], out["per_packet_tail"] = n, per[:10], per[-4:]
    return out


def count_decode(path, **kw):
    d = nvc.CreateDemuxer(filename=path)
    dec = nvc.CreateDecoder(
        gpuid=0,
        codec=d.GetNvCodecId(),
        cudacontext=ctx.handle,
        cudastream=stream.handle,
        usedevicememory=True,
        **kw,
    )
    n, t0, shape = 0, time.perf_counter(), None
    for pkt in d:
        for f in dec.Decode(pkt):
            n += 1
            shape = str(f.shape) if shape is None else shape
    stream.synchronize()
    return {
        "codec": str(d.GetNvCodecId()),
        "frames": n,
        "fps": round(n / (time.perf_counter() - t0), 1),
        "shape": shape,
        "cs": str(d.ColorSpace()),
        "cr": str(d.ColorRange()),
    }


for name in ("h265.mp4", "full709.mp4", "mjpeg.avi"):
    step(f"count_{name}")(lambda name=name: count_decode(f"{P}/{name}"))


@step("h264_speed_copy")
def _():
    """One decoder, every frame copied into a fresh pooled buffer (what the source will do)."""
    from pycuda.tools import DeviceMemoryPool

    pool = DeviceMemoryPool()
    d = nvc.CreateDemuxer(filename=f"{P}/plates-1080.mp4")
    dec = nvc.CreateDecoder(
        gpuid=0,
        codec=d.GetNvCodecId(),
        cudacontext=ctx.handle,
        cudastream=stream.handle,
        usedevicememory=True,
    )
    n, t0 = 0, time.perf_counter()
    c0 = time.process_time()
    for pkt in d:
        for f in dec.Decode(pkt):
            size = int(f.framesize())
            buf = pool.allocate(size)
            cuda.memcpy_dtod_async(buf, int(f.GetPtrToPlane(0)), size, stream)
            stream.synchronize()
            n += 1
    dt = time.perf_counter() - t0
    return {
        "frames": n,
        "fps": round(n / dt, 1),
        "cpu_ms_per_frame": round(1000 * (time.process_time() - c0) / n, 3),
    }


@step("nvimgcodec")
def _():
    from nvidia import nvimgcodec

    out = {"version": nvimgcodec.__version__}
    dec = nvimgcodec.Decoder()
    files = sorted(os.listdir(f"{P}/jpegs"))
    data = [open(f"{P}/jpegs/{f}", "rb").read() for f in files]
    img = dec.decode(data[0])
    out["img"] = {
        "cai": str(img.__cuda_array_interface__),
        "shape": str(img.shape),
        "buffer_kind": str(img.buffer_kind),
        "dtype": str(img.dtype),
        "color_spec": str(img.color_spec),
        "dir": [n for n in dir(img) if not n.startswith("_")],
    }
    cuda.Context.synchronize()
    t0 = time.perf_counter()
    for b in data:
        im = dec.decode(b, cuda_stream=stream.handle)
    stream.synchronize()
    out["one_by_one_fps"] = round(len(data) / (time.perf_counter() - t0), 1)
    t0 = time.perf_counter()
    for _ in range(4):
        ims = dec.decode(data, cuda_stream=stream.handle)
    stream.synchronize()
    out["batch16_fps"] = round(4 * len(data) / (time.perf_counter() - t0), 1)
    # MJPEG packets from the PyNvVideoCodec demuxer
    d = nvc.CreateDemuxer(filename=f"{P}/mjpeg.avi")
    out["mjpeg_codec"] = str(d.GetNvCodecId())
    pk = next(iter(d))
    raw = ctypes.string_at(int(pk.bsl_data), int(pk.bsl))
    out["mjpeg_pkt"] = {"bsl": int(pk.bsl), "head": raw[:4].hex()}
    im = dec.decode(raw)
    out["mjpeg_decoded"] = str(None if im is None else im.shape)
    try:
        import cv2

        ref = cv2.imdecode(np.frombuffer(data[0], np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
        host = np.asarray(img.cpu())
        out["vs_cv2"] = float(np.abs(host.astype(int) - ref.astype(int)).mean())
    except Exception as e:
        out["vs_cv2"] = f"ERR {e}"
    return out


@step("env")
def _():
    import subprocess

    return {
        "python": sys.version,
        "nvidia-smi": subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
        ).stdout,
        "ffmpeg": subprocess.run(
            ["which", "ffmpeg", "gst-launch-1.0"], capture_output=True, text=True
        ).stdout,
    }


os.makedirs(OUT, exist_ok=True)
json.dump(res, open(f"{OUT}/probe.json", "w"), indent=1, default=str)
