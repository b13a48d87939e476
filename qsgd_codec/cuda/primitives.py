"""The only code that differs between a GPU and numba's CUDA simulator.

On a GPU, ``_mul``, ``_add``, ``_div`` and ``_sqrt`` are libdevice's ``dmul_rn``, ``dadd_rn``,
``ddiv_rn`` and ``dsqrt_rn``: an explicit rounding mode, which NVVM never contracts into a
fused multiply-add.  ``_ldexp`` is exact, and the generator ``_u53`` compiles
:func:`qsgd_codec.wire.rng.mix64`, the package's one SplitMix64, as a device function.

Under ``NUMBA_ENABLE_CUDASIM=1`` device functions are plain Python: the four operations are
Python's float arithmetic (IEEE binary64, round to nearest, never fused) and the generator
calls :func:`qsgd_codec.wire.rng.random_word` on ``np.uint64`` values.  The simulator also
gets a lock around its shared-array creation (:func:`_patch_simulator_shared_arrays`).
"""

import math
import sys
import threading

import numpy as np
from numba import cuda
from numba.cuda.core import config as _cuda_config

from ..wire import rng
from ..wire.rng import GAMMA, ONE, SH11

#: True when numba.cuda was imported with NUMBA_ENABLE_CUDASIM=1
SIMULATOR = bool(_cuda_config.ENABLE_CUDASIM)


def _patch_simulator_shared_arrays():
    """Make the simulator's ``cuda.shared.array`` safe when a block's threads race to it.

    The simulator (numba-cuda 0.30) keys a block's shared arrays by the calling source line
    and creates one on first use without a lock, so two threads arriving together can each
    create and keep a private "shared" array; a kernel then reads values other threads never
    wrote to it (seen here as rare wrong scales).  This replacement does the same lookup
    under a lock.  Only installed under NUMBA_ENABLE_CUDASIM=1.
    """
    from numba.cuda.simulator import kernelapi

    shared_cls = kernelapi.FakeCUDAShared
    if getattr(shared_cls, "_qsgd_locked", False):
        return
    original = shared_cls.array
    lock = threading.Lock()

    def array(self, shape, dtype, alignment=None):
        if alignment is not None or shape == 0:
            return original(self, shape, dtype, alignment)
        if isinstance(dtype, kernelapi.types.Type):
            dtype = kernelapi.numpy_support.as_dtype(dtype)
        frame = sys._getframe(1)
        caller = (frame.f_code.co_filename, frame.f_lineno)
        with lock:
            allocated = self._allocations.get(caller)
            if allocated is None:
                allocated = np.empty(shape, dtype)
                self._allocations[caller] = allocated
        return allocated

    shared_cls.array = array
    shared_cls._qsgd_locked = True


if SIMULATOR:
    _patch_simulator_shared_arrays()

    def _mul(a, b):
        return float(a) * float(b)

    def _add(a, b):
        return float(a) + float(b)

    def _div(a, b):
        return float(a) / float(b)

    def _sqrt(a):
        return math.sqrt(float(a))

    def _ldexp(a, k):
        return math.ldexp(float(a), int(k))

    def _u53(key, i):
        """Top 53 bits of the generator's output for element i (spec 8.3)."""
        with np.errstate(over="ignore"):  # uint64 arithmetic wraps, as specified
            return np.int64(rng.random_word(np.uint64(key), np.uint64(i)) >> SH11)
else:
    from numba.cuda import libdevice as _libdevice

    _mul = _libdevice.dmul_rn
    _add = _libdevice.dadd_rn
    _div = _libdevice.ddiv_rn
    _sqrt = _libdevice.dsqrt_rn

    @cuda.jit(device=True, cache=True)
    def _ldexp(a, k):
        return math.ldexp(a, np.int32(k))

    #: SplitMix64's output function: wire.rng.mix64 itself, compiled for the device
    _mix64 = cuda.jit(device=True, cache=True)(rng.mix64)

    @cuda.jit(device=True, cache=True)
    def _u53(key, i):
        """Top 53 bits of the generator's output for element i (spec 8.3), uint64 wrapping:
        mix64(key + (i + 1) * gamma) >> 11, as wire.rng.random_word."""
        return np.int64(_mix64(key + (np.uint64(i) + ONE) * GAMMA) >> SH11)
