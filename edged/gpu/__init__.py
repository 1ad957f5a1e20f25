"""GPU layer: the one CUDA context, per-camera streams, device buffers, fused kernels, cv2.cuda path.

Importing this package never imports pycuda or cv2.cuda; they load on first use, so config checks and
CPU-only machines work. `preprocessors.make_preprocessor` picks the implementation for `preprocess.device`.
"""
