"""Preprocessing: one spec per model (spec.py), implemented on the CPU (cpu.py, the reference) and on
the GPU (edged.gpu: fused CUDA kernel, cv2.cuda). The chain only sees the `Preprocessor` protocol."""
