"""The machine a benchmark ran on: its CPU, the float32 matmul rates it reaches, peak memory.

Shared by the benchmarks that quote a roofline or a memory figure (``benchmarks/train.py``), so a
result can be read against the CPU it was measured on.
"""

from __future__ import annotations

import os
import time

MATMUL_REPEATS = 7  # products per matmul measurement (after each timing round)


def median(values) -> float:
    import numpy as np

    return float(np.median(values))



def numpy_matmul_gflops(n: int = 2048, repeats: int = MATMUL_REPEATS) -> tuple[float, float]:
    """float32 ``n x n`` numpy matmul rates of ``repeats`` products after a warm-up:
    ``(fastest, median)``.

    The fastest is the best estimate of what the machine can do (other processes can only slow
    a product down); the median is summarized like the training steps are.
    """
    import numpy as np

    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    a @ a
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ a
        times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times) / 1e9, 2 * n**3 / median(times) / 1e9


def tf_matmul_gflops(n: int = 2048, repeats: int = MATMUL_REPEATS) -> tuple[float, float]:
    """The same product through TensorFlow's CPU matmul kernel: ``(fastest, median)`` of ``repeats``.

    TensorFlow's kernel (oneDNN where it is on) and numpy's (OpenBLAS) may use different
    instruction sets on the same CPU (see :func:`describe_cpu`), so both rates are reported.
    """
    import tensorflow as tf

    a = tf.random.normal((n, n))
    matmul = tf.function(lambda x: tf.matmul(x, x))
    matmul(a).numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a).numpy()
        times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times) / 1e9, 2 * n**3 / median(times) / 1e9


CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")


def describe_cpu() -> dict:
    """What the two matmul rates depend on: the CPU, its vector extensions, and the kernels
    OpenBLAS (numpy) and TensorFlow pick for it.

    Returns:
        ``{"model", "features", "openblas_core", "tensorflow", "onednn"}``; fields that cannot be
        read on this platform are ``None``.
    """
    import ctypes
    import glob

    import numpy as np
    import tensorflow as tf

    model, flags = None, set()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                name, _, value = line.partition(":")
                if name.strip() == "model name" and model is None:
                    model = value.strip()
                elif name.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    core = None  # the kernel set OpenBLAS's DYNAMIC_ARCH chose for this CPU, e.g. "Haswell" (AVX2)
    for lib in glob.glob(os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs", "*openblas*")):
        handle = ctypes.CDLL(lib)
        for symbol in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename", "openblas_get_corename"):
            if hasattr(handle, symbol):
                getattr(handle, symbol).restype = ctypes.c_char_p
                core = getattr(handle, symbol)().decode()
                break
    return {
        "model": model,
        "features": [f for f in CPU_FEATURES if f in flags] if flags else None,
        "openblas_core": core,
        "tensorflow": tf.__version__,
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset (on by default on x86 Linux)"),
    }


def reset_peak_rss() -> None:
    """Resets the kernel's high-water mark of this process's RSS (Linux; no-op elsewhere)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    """Peak RSS since the last :func:`reset_peak_rss` (VmHWM), else since process start."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
