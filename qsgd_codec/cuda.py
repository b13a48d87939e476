"""The GPU codec: QSGD wire format 1.0 encoded and decoded by CUDA kernels (numba-cuda).

The bytes are the reference's (:mod:`qsgd_codec.reference`), bit for bit, for every input,
coding, scale kind and dtype.  docs/gpu.md explains the kernels, the stream rules and how
to measure them; this docstring is the short version.

Public functions
----------------
- :func:`encode` (``x`` a device array) -> host ``bytes``, or a device ``uint8`` array with
  ``device_output=True``.
- :func:`decode` (``data`` host bytes or a device ``uint8`` array) -> a device array, or fills
  the device array ``out``.
- :func:`encode_device` / :func:`decode_device`: the hooks :mod:`qsgd_codec.api` calls when
  ``encode`` gets a device array or ``decode`` gets a device ``out``.
- :func:`is_available`, :func:`audit_ptx`, :func:`kernel_signatures`.

Device arrays are whatever :func:`qsgd_codec.interop.as_device_array` takes: numba device
arrays (also the simulator's), objects exposing ``__cuda_array_interface__`` (CuPy, PyTorch
CUDA tensors, JAX GPU arrays), CUDA DLPack producers.  The input is never copied to the host;
it must be C-contiguous.

Exactness
---------
The spec (sections 8.2-9) writes every floating-point operation out.  On the GPU, NVVM
contracts a multiply feeding an add into an FMA by default, which changes a rounding and so a
byte.  The kernels do every binary64 product, sum, quotient and square root through ``_mul``,
``_add``, ``_div`` and ``_sqrt``: on a GPU the libdevice intrinsics ``dmul_rn``, ``dadd_rn``,
``ddiv_rn`` and ``dsqrt_rn``, which lower to ``mul.rn.f64`` etc. (an explicit rounding mode
is never contracted).  :func:`audit_ptx` checks the generated PTX for any FMA, approximate or
flush-to-zero instruction.  The counter-based generator runs in uint64 arithmetic.  Rounding
up to float32 and the float16/bfloat16 conversions use exact operations (``frexp``,
``ldexp``, integer rounding).

Under ``NUMBA_ENABLE_CUDASIM=1`` six primitives are plain Python instead: the four above
(Python's float arithmetic is IEEE binary64, round to nearest, never fused), ``_ldexp`` and
the generator ``_u53`` (Python integers masked to 64 bits; the GPU version is checked against
the spec by compiling it for the CPU in tests/test_cuda.py).  Every other line of every kernel
is the code the GPU runs.  The simulator also gets a lock around its shared-array creation
(:func:`_patch_simulator_shared_arrays`).

Streams
-------
Every kernel, allocation and copy of one call is queued on ``stream`` (default: numba's
default stream).  ``stream`` may be a numba stream, a raw ``cudaStream_t`` handle (int), or an
object with a ``cuda_stream`` (PyTorch) or ``ptr`` (CuPy) attribute.  Inputs imported through
``__cuda_array_interface__`` are synchronised with the stream their producer exported (CAI v3).
Each call synchronises ``stream`` before it returns: to raise errors (non-finite input, corrupt
messages) and, for elias encoding, to size the output from the bit lengths.  The returned
arrays are complete when the call returns.

CRC-32
------
Computed on the device (the message never passes through the host for it): each thread
takes the CRC register of a 1 KiB chunk with slicing-by-4 tables, multiplies it by
x^(8 * bytes after the chunk) modulo the polynomial (crc32_combine's algebra), the
contributions are XORed, and the last block to finish applies the initial and final XOR.
"""

import math
import mmap
import struct

import numpy as np

from . import format as fmt
from . import interop
from . import reference
from .errors import (
    ChecksumError, CorruptDataError, DTypeError, LengthError, NonFiniteError, ParameterError,
)

try:
    from numba import cuda
    from numba.cuda import types as _nbt
    from numba.cuda.core import config as _cuda_config
except ImportError as exc:  # pragma: no cover - numba-cuda is an optional extra
    raise ParameterError(
        "the GPU codec needs the numba-cuda package: pip install 'qsgd_codec[cuda]' "
        f"({exc})") from exc

__all__ = ["encode", "decode", "encode_device", "decode_device", "is_available", "audit_ptx",
           "kernel_signatures", "SIMULATOR"]

#: True when numba.cuda was imported with NUMBA_ENABLE_CUDASIM=1
SIMULATOR = bool(_cuda_config.ENABLE_CUDASIM)

# ----------------------------------------------------------------------------- constants

C_F16, C_BF16, C_F32, C_F64 = (fmt.DTYPE_CODES[k] for k in ("float16", "bfloat16", "float32",
                                                              "float64"))
K_L2, K_MAX = fmt.SCALE_CODES["l2"], fmt.SCALE_CODES["max"]
DBL_MAX = 1.7976931348623157e308
FLT_MAX = float(np.finfo(np.float32).max)
TWO_M53 = 2.0 ** -53
I64_MAX = (1 << 63) - 1
MAX_ENTRY_BITS = fmt.MAX_ENTRY_BITS

#: most threads per block of the bucket kernels; shared arrays are sized for it.  Block sizes
#: are powers of two: on a GPU 32 .. MAX_T from the bucket size, SIM_THREADS in the simulator.
MAX_T = 128
SCAN_SIZE = 2 * MAX_T
#: elements per thread in one elias tile; a tile is T * E_PER_THREAD consecutive elements
E_PER_THREAD = 4
#: squares staged per round of the l2 sum (a multiple of 32, so lane = element index mod 32)
SQ_TILE = 512
#: most elements in an elias tile
TILE_MAX = MAX_T * E_PER_THREAD
#: threads of the element-wise kernels
ELEM_T = 256
#: bytes per thread of the CRC kernel
CRC_CHUNK = 1024
MAX_GRID = 1 << 20

#: threads per block of the bucket kernels under the simulator (tests vary it)
SIM_THREADS = 8

if SIMULATOR:
    # The simulator runs each thread as a Python thread and every syncthreads() costs
    # milliseconds: small blocks, few blocks, long tiles.
    ELEM_T = 8
    CRC_CHUNK = 64
    MAX_GRID = 3
    TILE_MAX = 4096

#: shared bit buffer of the elias writer: one tile's longest code plus a carried partial byte
BUF_WORDS = (7 + TILE_MAX * MAX_ENTRY_BITS + 31) // 32 + 2

# error slots of the int64 error array every launch shares (atomic.min; I64_MAX = no error)
E_INPUT = 0      # first non-finite input element
E_SCALE = 1      # first bucket whose scale exceeds the dtype's range (encoder)
E_CRC = 2        # decoder: 0 = checksum ok, 1 = mismatch
E_BADSCALE = 3   # decoder: first bucket with an invalid scale
E_CODES = 4      # decoder: first element / bucket with invalid codes, times 8, plus a reason
E_TOTAL = 5      # elias: total code bytes (written by the offsets scan)
E_ACC = 6        # CRC: XOR of the chunks' contributions
E_DONE = 7       # CRC: blocks finished
N_ERR = 8

# decoder reasons (E_CODES & 7)
R_RANGE, R_ZERO_SCALE, R_PADDING = 1, 2, 3          # dense
R_TOO_LONG, R_PAST_END, R_GAP, R_LEVEL, R_GROUP = 1, 3, 4, 5, 6   # elias (and 2, 3 above)
_REASONS_DENSE = {R_RANGE: "a field outside -s..s", R_ZERO_SCALE: "a non-zero field in a "
                  "bucket whose scale is 0", R_PADDING: "non-zero padding bits after the last "
                  "field"}
_REASONS_ELIAS = {R_TOO_LONG: "more code bits than its elements can use",
                  R_ZERO_SCALE: "scale 0 but non-zero code bits",
                  R_PAST_END: "an elias code that runs past the declared bit length",
                  R_GAP: "a gap past the end of the bucket",
                  R_LEVEL: "a level above s",
                  R_GROUP: "an elias omega group longer than 25 bits",
                  7: "non-zero padding bits"}

_U64 = np.uint64
GAMMA = _U64(reference.GAMMA)
MIX_1 = _U64(reference.MIX_1)
MIX_2 = _U64(reference.MIX_2)
U1, U11, U27, U30, U31 = _U64(1), _U64(11), _U64(27), _U64(30), _U64(31)

# ----------------------------------------------------------------------------- simulator fix

def _patch_simulator_shared_arrays():
    """Make the simulator's ``cuda.shared.array`` safe when a block's threads race to it.

    The simulator (numba-cuda 0.30) keys a block's shared arrays by the calling source line
    and creates one on first use without a lock, so two threads arriving together can each
    create and keep a private "shared" array; a kernel then reads values other threads never
    wrote to it (seen here as rare wrong scales).  This replacement does the same lookup
    under a lock.  Only installed under NUMBA_ENABLE_CUDASIM=1.
    """
    import sys
    import threading
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


# ----------------------------------------------------------------------------- primitives
# The only code that differs between the GPU and the simulator.

if SIMULATOR:
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

    _M64 = (1 << 64) - 1

    def _u53(key, i):
        """Top 53 bits of the generator's output for element i (spec 8.3)."""
        z = (int(key) + (int(i) + 1) * reference.GAMMA) & _M64
        z = ((z ^ (z >> 30)) * reference.MIX_1) & _M64
        z = ((z ^ (z >> 27)) * reference.MIX_2) & _M64
        return np.int64((z ^ (z >> 31)) >> 11)
else:
    from numba.cuda import libdevice as _libdevice

    _mul = _libdevice.dmul_rn
    _add = _libdevice.dadd_rn
    _div = _libdevice.ddiv_rn
    _sqrt = _libdevice.dsqrt_rn

    @cuda.jit(device=True, cache=True)
    def _ldexp(a, k):
        return math.ldexp(a, np.int32(k))

    @cuda.jit(device=True, cache=True)
    def _u53(key, i):
        """Top 53 bits of the generator's output for element i (spec 8.3), uint64 wrapping."""
        z = key + (np.uint64(i) + U1) * GAMMA
        z = (z ^ (z >> U30)) * MIX_1
        z = (z ^ (z >> U27)) * MIX_2
        z = z ^ (z >> U31)
        return np.int64(z >> U11)


def _mix64_host(z):
    m = (1 << 64) - 1
    z = ((z ^ (z >> 30)) * reference.MIX_1) & m
    z = ((z ^ (z >> 27)) * reference.MIX_2) & m
    return z ^ (z >> 31)


# ----------------------------------------------------------------------------- device helpers

@cuda.jit(device=True, cache=True)
def _small_to_f64(bits, mant_bits, bias):
    """Exact binary64 value of a float16 (10, 15) or bfloat16 (7, 127) bit pattern."""
    emask = (1 << (15 - mant_bits)) - 1
    e = (bits >> mant_bits) & emask
    m = bits & ((1 << mant_bits) - 1)
    if e == emask:
        v = math.inf if m == 0 else math.nan
    elif e == 0:
        v = _ldexp(np.float64(m), 1 - bias - mant_bits)
    else:
        v = _ldexp(np.float64(m + (1 << mant_bits)), e - bias - mant_bits)
    if (bits >> 15) & 1:
        v = -v
    return v


@cuda.jit(device=True, cache=True)
def _load(x, i, code):
    """Element i of the input as binary64 (spec 8.1).  16-bit inputs arrive as uint16 bits."""
    if code == C_F16:
        return _small_to_f64(np.int64(x[i]), 10, 15)
    if code == C_BF16:
        return _small_to_f64(np.int64(x[i]), 7, 127)
    return np.float64(x[i])


@cuda.jit(device=True, cache=True)
def _round_up_f32(y):
    """RU32(y) for y >= 0 (or NaN): the smallest float32 >= y, returned as binary64."""
    if y > FLT_MAX:
        return math.inf
    g = np.float64(np.float32(y))
    if g < y:
        if g == 0.0:
            g = _ldexp(1.0, -149)
        else:
            mant, ex = math.frexp(g)
            e_ulp = ex - 24
            if e_ulp < -149:
                e_ulp = -149
            g = _add(g, _ldexp(1.0, e_ulp))
        g = np.float64(np.float32(g))
    return g


@cuda.jit(device=True, cache=True)
def _quantize(v, r, s, u53):
    """Signed level q of value v in a bucket of scale r (spec 8.4)."""
    if not (r > 0.0 and r <= DBL_MAX):
        return np.int64(0)
    a = abs(v)
    if not (a <= DBL_MAX):
        return np.int64(0)
    a = _div(a, r)
    t = _mul(a, np.float64(s))
    lvl = np.int64(math.floor(t))
    if lvl >= s:
        zeta = np.int64(s)
    else:
        p = t - np.float64(lvl)
        u = _mul(np.float64(u53), TWO_M53)
        zeta = lvl + 1 if u < p else lvl
    if v < 0.0:
        return -zeta
    return zeta


@cuda.jit(device=True, cache=True)
def _bit_length(v):
    """bit_length of 1 <= v < 2^31."""
    return np.int64(32 - cuda.clz(np.int32(v)))


@cuda.jit(device=True, cache=True)
def _omega_len(v):
    """Length in bits of the Elias omega code of v >= 1."""
    n = np.int64(1)
    while v > 1:
        b = _bit_length(v)
        n += b
        v = b - 1
    return n


@cuda.jit(device=True, cache=True)
def _put_bits(buf, pos, value, nbits):
    """OR the nbits-bit value (MSB first) into the shared bit buffer at bit pos.

    The buffer's bit k is bit 31 - (k mod 32) of word k // 32, so byte j of the stream is
    bits 31-8*(j%4) .. 24-8*(j%4) of word j // 4.
    """
    wi = pos >> 5
    off = pos & 31
    if off + nbits <= 32:
        cuda.atomic.or_(buf, wi, np.uint32(value << (32 - off - nbits)))
    else:
        over = off + nbits - 32
        cuda.atomic.or_(buf, wi, np.uint32(value >> over))
        cuda.atomic.or_(buf, wi + 1, np.uint32((value << (32 - over)) & 0xFFFFFFFF))


@cuda.jit(device=True, cache=True)
def _put_omega(buf, pos, v):
    """Write omega(v) at bit pos of the (zeroed) buffer; return the position after it."""
    end = pos + _omega_len(v)
    p = end - 1                      # the terminating 0 bit is already 0
    while v > 1:
        b = _bit_length(v)
        p -= b
        _put_bits(buf, p, v, b)
        v = b - 1
    return end


@cuda.jit(device=True, cache=True)
def _block_scan(sh, t, nthreads, v, is_max):
    """Block-wide exclusive scan (max or sum) of int64 v over threads 0..nthreads-1.

    Returns (the scan of threads before t, the total).  The identity is -1 for max (positions)
    and 0 for sum.  ``sh`` is a shared int64 array of 2 * MAX_T.
    """
    sh[t] = v
    cuda.syncthreads()
    src = 0
    off = 1
    while off < nthreads:
        dst = MAX_T - src
        acc = sh[src + t]
        if t >= off:
            other = sh[src + t - off]
            if is_max:
                if other > acc:
                    acc = other
            else:
                acc += other
        sh[dst + t] = acc
        cuda.syncthreads()
        src = dst
        off <<= 1
    if t > 0:
        before = sh[src + t - 1]
    elif is_max:
        before = np.int64(-1)
    else:
        before = np.int64(0)
    total = sh[src + nthreads - 1]
    cuda.syncthreads()
    return before, total


@cuda.jit(device=True, cache=True)
def _bucket_scale(x, code, lo, m, kind, b, dmax, sh_sq, sh_red, err):
    """The scale r_b of the bucket x[lo:lo+m] (spec 8.2), as binary64, in every thread.

    ``max``: any order is exact.  ``l2``: all threads square a round of up to SQ_TILE elements
    into shared memory, then the thread owning lane j (j < 32) adds elements j, j+32, ... to
    the lane's partial sum, so acc[j mod 32] sees its terms in the spec's order; thread 0 then
    folds the 32 sums.
    Records non-finite inputs (E_INPUT) and out-of-range scales (E_SCALE).
    """
    t = cuda.threadIdx.x
    nthreads = cuda.blockDim.x
    if kind == K_MAX:
        local = 0.0
        for j in range(t, m, nthreads):
            a = abs(_load(x, lo + j, code))
            if not (a <= DBL_MAX):
                cuda.atomic.min(err, E_INPUT, lo + j)
                a = 0.0
            if a > local:
                local = a
        sh_red[t] = local
        cuda.syncthreads()
        h = nthreads >> 1
        while h > 0:
            if t < h and sh_red[t + h] > sh_red[t]:
                sh_red[t] = sh_red[t + h]
            cuda.syncthreads()
            h >>= 1
        y = sh_red[0]
    else:
        for lane in range(t, 32, nthreads):
            sh_red[lane] = 0.0
        for base in range(0, m, SQ_TILE):
            cnt = min(SQ_TILE, m - base)
            for j in range(t, cnt, nthreads):
                v = _load(x, lo + base + j, code)
                if not (abs(v) <= DBL_MAX):
                    cuda.atomic.min(err, E_INPUT, lo + base + j)
                    v = 0.0
                sh_sq[j] = _mul(v, v)
            cuda.syncthreads()
            for lane in range(t, 32, nthreads):
                acc = sh_red[lane]
                for j in range(lane, cnt, 32):
                    acc = _add(acc, sh_sq[j])
                sh_red[lane] = acc
            cuda.syncthreads()
        if t == 0:
            h = 16
            while h > 0:
                for k in range(h):
                    sh_red[k] = _add(sh_red[k], sh_red[k + h])
                h >>= 1
            sh_red[0] = _sqrt(sh_red[0])
        cuda.syncthreads()
        y = sh_red[0]
    r = _round_up_f32(y)
    if t == 0 and not (r <= dmax):
        cuda.atomic.min(err, E_SCALE, b)
    return r


@cuda.jit(device=True, cache=True)
def _elias_thread_bits(q_src, lo, j0, j1, last_in):
    """Bits of the entries at positions j0..j1-1 that follow a non-zero at last_in (or -1)."""
    bits = np.int64(0)
    last = last_in
    for j in range(j0, j1):
        q = np.int64(q_src[lo + j])
        if q != 0:
            bits += 1 + _omega_len(abs(q)) + _omega_len(j - last)
            last = j
    return bits


@cuda.jit(device=True, cache=True)
def _narrow_bits(v, mant_bits, emin, bias):
    """Bits of binary64 v >= 0 rounded to nearest-even float16/bfloat16, subnormals kept."""
    if v == 0.0:
        return np.int64(0)
    mant, ex = math.frexp(v)
    e = np.int64(ex) - 1
    normal = e >= emin
    if not normal:
        e = np.int64(emin)
    k = e - mant_bits
    y = _ldexp(v, -k)          # exact: v / 2^k < 2^(mant_bits + 1)
    f = np.int64(math.floor(y))
    rem = y - np.float64(f)
    if rem > 0.5 or (rem == 0.5 and (f & 1) == 1):
        f += 1
    if normal:
        return ((e + bias - 1) << mant_bits) + f
    return f


@cuda.jit(device=True, cache=True)
def _store(out, i, q, r, s, code):
    """out[i] = the decoded value of level q in a bucket of scale r (spec 9)."""
    v = 0.0
    if q != 0:
        v = _div(_mul(r, np.float64(abs(q))), np.float64(s))
    if code == C_F64:
        out[i] = -v if q < 0 else v
    elif code == C_F32:
        out[i] = np.float32(-v if q < 0 else v)
    else:
        if code == C_F16:
            bits = _narrow_bits(v, 10, -14, 15)
        else:
            bits = _narrow_bits(v, 7, -126, 127)
        if q < 0:
            bits |= 0x8000
        out[i] = np.uint16(bits)


@cuda.jit(device=True, cache=True)
def _read_u32(msg, pos):
    """Little-endian u32 at byte pos of msg (the caller checked pos + 4 <= msg.size)."""
    return (np.int64(msg[pos]) | (np.int64(msg[pos + 1]) << 8)
            | (np.int64(msg[pos + 2]) << 16) | (np.int64(msg[pos + 3]) << 24))


@cuda.jit(device=True, cache=True)
def _read_bits(msg, start, pos, nbits):
    """nbits (<= 25) bits MSB-first from bit pos of the stream starting at byte start."""
    byte = start + (pos >> 3)
    sh = pos & 7
    nbytes = (sh + nbits + 7) >> 3
    acc = np.int64(0)
    for k in range(nbytes):
        acc = (acc << 8) | np.int64(msg[byte + k])
    acc >>= nbytes * 8 - sh - nbits
    return acc & ((np.int64(1) << nbits) - 1)


@cuda.jit(device=True, cache=True)
def _read_omega(msg, start, pos, limit):
    """Decode one omega code at bit pos (bits < limit).  Returns (value, new pos, reason)."""
    v = np.int64(1)
    while True:
        if pos >= limit:
            return v, pos, R_PAST_END
        lead = _read_bits(msg, start, pos, 1)
        pos += 1
        if lead == 0:
            return v, pos, 0
        if v + 1 > 25:
            return v, pos, R_GROUP
        if pos + v > limit:
            return v, pos, R_PAST_END
        nxt = (np.int64(1) << v) | _read_bits(msg, start, pos, v)
        pos += v
        v = nxt


@cuda.jit(device=True, cache=True)
def _mulmod_crc(a, b):
    """a * b modulo the CRC-32 polynomial, bit-reflected (bit 31 is x^0)."""
    p = np.int64(0)
    for k in range(32):
        if (a >> (31 - k)) & 1:
            p ^= b
        if b & 1:
            b = (b >> 1) ^ 0xEDB88320
        else:
            b >>= 1
    return p


@cuda.jit(device=True, cache=True)
def _xpow8_crc(nbytes, x2n):
    """x^(8 * nbytes) modulo the CRC-32 polynomial; x2n[k] = x^(2^k)."""
    r = np.int64(0x80000000)
    e = nbytes * 8
    k = 0
    while e > 0:
        if e & 1:
            r = _mulmod_crc(np.int64(x2n[k]), r)
        e >>= 1
        k += 1
    return r


@cuda.jit(device=True, cache=True)
def _floor_div(i, d, inv_d):
    """i // d for 0 <= i < 2^53 and d >= 1 (inv_d = 1.0 / d), without a 64-bit integer
    division: a floating-point estimate, then exact integer corrections."""
    b = np.int64(_mul(np.float64(i), inv_d))
    while b > 0 and b * d > i:
        b -= 1
    while (b + 1) * d <= i:
        b += 1
    return b


# ----------------------------------------------------------------------------- encode kernels

@cuda.jit(cache=True)
def _k_dense_encode(x, code, n, d, s, w, inv_w, kind, key, nb, dmax, scales, scale_w0, words,
                    codes_w0, err):
    """One block per bucket: the scale, then one 32-bit code word per thread (spec 6.1).

    Words shared with a neighbouring bucket (when d * w is not a multiple of 32) are ORed in
    atomically into a zeroed region; all others are plain stores.
    """
    sh_sq = cuda.shared.array(SQ_TILE, _nbt.float64)
    sh_red = cuda.shared.array(MAX_T, _nbt.float64)
    t = cuda.threadIdx.x
    nthreads = cuda.blockDim.x
    mask = (np.int64(1) << w) - 1
    for b in range(cuda.blockIdx.x, nb, cuda.gridDim.x):
        lo = b * d
        m = min(d, n - lo)
        r = _bucket_scale(x, code, lo, m, kind, b, dmax, sh_sq, sh_red, err)
        if t == 0:
            scales[scale_w0 + b] = np.float32(r)
        b0 = lo * w
        b1 = (lo + m) * w
        k0 = b0 >> 5
        k1 = (b1 - 1) >> 5
        for k in range(k0 + t, k1 + 1, nthreads):
            i0 = max(lo, _floor_div(k * 32, w, inv_w))
            i1 = min(lo + m - 1, _floor_div(k * 32 + 31, w, inv_w))
            word = np.int64(0)
            for i in range(i0, i1 + 1):
                q = _quantize(_load(x, i, code), r, s, _u53(key, i))
                field = q & mask
                sh = i * w - k * 32
                if sh >= 0:
                    word |= field << sh
                else:
                    word |= field >> (-sh)
            word &= 0xFFFFFFFF
            if k * 32 < b0 or (k * 32 + 32 > b1 and b + 1 < nb):
                cuda.atomic.or_(words, codes_w0 + k, np.uint32(word))
            else:
                words[codes_w0 + k] = np.uint32(word)
        cuda.syncthreads()


@cuda.jit(cache=True)
def _k_elias_levels(x, code, n, d, s, kind, key, nb, dmax, per_thread, scales, lengths, qout,
                    err):
    """One block per bucket: the scale, the levels (kept in qout) and the code length L_b.

    A tile is nthreads * per_thread consecutive elements; thread t owns per_thread of them.
    The gap of a thread's first entry needs the last non-zero before it: an exclusive max-scan
    of the threads' last non-zero positions, plus the carry from earlier tiles.
    """
    sh_sq = cuda.shared.array(SQ_TILE, _nbt.float64)
    sh_red = cuda.shared.array(MAX_T, _nbt.float64)
    sh_scan = cuda.shared.array(SCAN_SIZE, _nbt.int64)
    t = cuda.threadIdx.x
    nthreads = cuda.blockDim.x
    tile = nthreads * per_thread
    for b in range(cuda.blockIdx.x, nb, cuda.gridDim.x):
        lo = b * d
        m = min(d, n - lo)
        r = _bucket_scale(x, code, lo, m, kind, b, dmax, sh_sq, sh_red, err)
        if t == 0:
            scales[b] = np.float32(r)
        carry = np.int64(-1)
        total = np.int64(0)
        for base in range(0, m, tile):
            j0 = min(m, base + t * per_thread)
            j1 = min(m, j0 + per_thread)
            last = np.int64(-1)
            for j in range(j0, j1):
                q = _quantize(_load(x, lo + j, code), r, s, _u53(key, lo + j))
                qout[lo + j] = q
                if q != 0:
                    last = j
            before, tile_last = _block_scan(sh_scan, t, nthreads, last, True)
            prev = max(carry, before)
            bits = _elias_thread_bits(qout, lo, j0, j1, prev)
            _, tile_bits = _block_scan(sh_scan, t, nthreads, bits, False)
            total += tile_bits
            carry = max(carry, tile_last)
        if t == 0:
            lengths[b] = np.uint32(total)
        cuda.syncthreads()


@cuda.jit(cache=True)
def _k_scan_partials(lengths, nb, per_block, partials):
    """partials[k] = sum of ceil(L_b / 8) over block k's range of buckets."""
    sh = cuda.shared.array(MAX_T, _nbt.int64)
    t = cuda.threadIdx.x
    nthreads = cuda.blockDim.x
    for k in range(cuda.blockIdx.x, (nb + per_block - 1) // per_block, cuda.gridDim.x):
        acc = np.int64(0)
        for b in range(k * per_block + t, min(nb, (k + 1) * per_block), nthreads):
            acc += (np.int64(lengths[b]) + 7) >> 3
        sh[t] = acc
        cuda.syncthreads()
        h = nthreads >> 1
        while h > 0:
            if t < h:
                sh[t] += sh[t + h]
            cuda.syncthreads()
            h >>= 1
        if t == 0:
            partials[k] = sh[0]
        cuda.syncthreads()


@cuda.jit(cache=True)
def _k_scan_offsets(lengths, nb, per_block, partials, nparts, offsets, err):
    """offsets[b] = sum of ceil(L_c / 8) for c < b; offsets[nb] = err[E_TOTAL] = the total.

    Every block first adds up the partials before its own range (a few hundred at most).
    """
    sh = cuda.shared.array(SCAN_SIZE, _nbt.int64)
    t = cuda.threadIdx.x
    nthreads = cuda.blockDim.x
    for k in range(cuda.blockIdx.x, nparts, cuda.gridDim.x):
        acc = np.int64(0)
        for c in range(t, k, nthreads):
            acc += partials[c]
        _, carry = _block_scan(sh, t, nthreads, acc, False)
        for base in range(k * per_block, min(nb, (k + 1) * per_block), nthreads):
            b = base + t
            v = np.int64(0)
            if b < nb:
                v = (np.int64(lengths[b]) + 7) >> 3
            before, tot = _block_scan(sh, t, nthreads, v, False)
            if b < nb:
                offsets[b] = carry + before
            carry += tot
        if k == nparts - 1 and t == 0:
            offsets[nb] = carry
            err[E_TOTAL] = carry


@cuda.jit(cache=True)
def _k_elias_write(qin, n, d, nb, per_thread, scales, lengths, offsets, words, scale_w0,
                   length_w0, msg, codes0):
    """One block per bucket: write the scale, L_b and the bucket's code bytes (spec 6.2).

    Per tile: the bits of each thread's entries, an exclusive sum-scan for their positions,
    the entries ORed into a shared bit buffer, then the complete bytes copied out; a partial
    last byte is carried to the next tile and flushed (zero padded) at the bucket's end.
    """
    sh_scan = cuda.shared.array(SCAN_SIZE, _nbt.int64)
    buf = cuda.shared.array(BUF_WORDS, _nbt.uint32)
    t = cuda.threadIdx.x
    nthreads = cuda.blockDim.x
    tile = nthreads * per_thread
    for b in range(cuda.blockIdx.x, nb, cuda.gridDim.x):
        lo = b * d
        m = min(d, n - lo)
        if t == 0:
            words[scale_w0 + b] = scales[b]
            words[length_w0 + b] = lengths[b]
        dst0 = codes0 + offsets[b]
        carry = np.int64(-1)
        start = np.int64(0)          # bit position of the tile in the bucket's code
        carry_byte = np.int64(0)
        if lengths[b] != 0:
            for base in range(0, m, tile):
                j0 = min(m, base + t * per_thread)
                j1 = min(m, j0 + per_thread)
                last = np.int64(-1)
                for j in range(j0, j1):
                    if qin[lo + j] != 0:
                        last = j
                before, tile_last = _block_scan(sh_scan, t, nthreads, last, True)
                prev = max(carry, before)
                bits = _elias_thread_bits(qin, lo, j0, j1, prev)
                pos, tile_bits = _block_scan(sh_scan, t, nthreads, bits, False)
                off0 = start & 7
                nwords = (off0 + tile_bits + 31) >> 5
                for k in range(t, nwords + 1, nthreads):
                    buf[k] = 0
                cuda.syncthreads()
                if t == 0:
                    buf[0] = np.uint32(carry_byte << 24)
                cuda.syncthreads()
                pos += off0
                for j in range(j0, j1):
                    q = np.int64(qin[lo + j])
                    if q != 0:
                        pos = _put_omega(buf, pos, j - prev)
                        if q < 0:
                            _put_bits(buf, pos, np.int64(1), 1)
                        pos = _put_omega(buf, pos + 1, abs(q))
                        prev = j
                cuda.syncthreads()
                nfull = (off0 + tile_bits) >> 3
                dst = dst0 + (start >> 3)
                for k in range(t, nfull, nthreads):
                    msg[dst + k] = np.uint8((np.int64(buf[k >> 2]) >> (24 - 8 * (k & 3))) & 0xFF)
                carry_byte = (np.int64(buf[nfull >> 2]) >> (24 - 8 * (nfull & 3))) & 0xFF
                cuda.syncthreads()
                start += tile_bits
                carry = max(carry, tile_last)
            if t == 0 and (start & 7) != 0:
                msg[dst0 + (start >> 3)] = np.uint8(carry_byte)
        cuda.syncthreads()


@cuda.jit(cache=True)
def _k_zero_u32(a, lo, hi):
    for k in range(lo + cuda.grid(1), hi, cuda.gridsize(1)):
        a[k] = 0


# ----------------------------------------------------------------------------- CRC kernels

@cuda.jit(cache=True)
def _k_crc(msg, words, use_words, total, chunk, table, x2n, init_term, write, err):
    """CRC-32 of msg[:total] (spec 7): stored after it (``write``) or compared with the four
    bytes there (mismatch: err[E_CRC] = 1).

    Thread c takes the CRC register (initial value 0) of chunk c with the slicing-by-4 tables
    (a little-endian word at a time when ``use_words``: msg is 4-byte aligned and ``words`` is
    its uint32 view), multiplies it by x^(8 * bytes after the chunk) modulo the polynomial,
    and the contributions are XORed together (err[E_ACC]).  The last block to finish adds
    ``init_term`` (the initial 0xFFFFFFFF carried over all bytes, and the final XOR).
    """
    sh_tab = cuda.shared.array(1024, _nbt.uint32)
    sh_x = cuda.shared.array(ELEM_T, _nbt.int64)
    t = cuda.threadIdx.x
    nthreads = cuda.blockDim.x
    for k in range(t, 1024, nthreads):
        sh_tab[k] = table[k]
    cuda.syncthreads()
    mine = np.int64(0)
    nchunks = (total + chunk - 1) // chunk
    for c in range(cuda.grid(1), nchunks, cuda.gridsize(1)):
        lo = c * chunk
        hi = min(total, lo + chunk)
        crc = np.int64(0)
        k = lo
        if use_words:
            while k + 4 <= hi:
                crc ^= np.int64(words[k >> 2])
                crc = (np.int64(sh_tab[768 + (crc & 0xFF)])
                       ^ np.int64(sh_tab[512 + ((crc >> 8) & 0xFF)])
                       ^ np.int64(sh_tab[256 + ((crc >> 16) & 0xFF)])
                       ^ np.int64(sh_tab[(crc >> 24) & 0xFF]))
                k += 4
        while k < hi:
            crc = np.int64(sh_tab[(crc ^ np.int64(msg[k])) & 0xFF]) ^ (crc >> 8)
            k += 1
        mine ^= _mulmod_crc(_xpow8_crc(total - hi, x2n), crc)
    sh_x[t] = mine
    cuda.syncthreads()
    h = nthreads >> 1
    while h > 0:
        if t < h:
            sh_x[t] ^= sh_x[t + h]
        cuda.syncthreads()
        h >>= 1
    if t == 0:
        cuda.atomic.xor(err, E_ACC, sh_x[0])
        cuda.threadfence()
        if cuda.atomic.add(err, E_DONE, 1) == cuda.gridDim.x - 1:
            crc = cuda.atomic.xor(err, E_ACC, 0) ^ init_term
            if write:
                for k in range(4):
                    msg[total + k] = np.uint8((crc >> (8 * k)) & 0xFF)
            elif _read_u32(msg, total) != crc:
                err[E_CRC] = 1


# ----------------------------------------------------------------------------- decode kernels

@cuda.jit(cache=True)
def _k_read_scales(msg, pos0, nb, dmax_bits, scales, err):
    """scales[b] = scale b as binary64; E_BADSCALE = first scale that is negative, NaN,
    infinite or above the dtype's maximum (spec 5.1)."""
    for b in range(cuda.grid(1), nb, cuda.gridsize(1)):
        u = _read_u32(msg, pos0 + 4 * b)
        e = (u >> 23) & 0xFF
        f = u & 0x7FFFFF
        if (u >> 31) != 0 or u > dmax_bits:      # bits order like values for non-negatives
            cuda.atomic.min(err, E_BADSCALE, b)
            scales[b] = 0.0
        elif e == 0:
            scales[b] = _ldexp(np.float64(f), -149)
        else:
            scales[b] = _ldexp(np.float64(f + 0x800000), e - 150)


@cuda.jit(cache=True)
def _k_read_lengths(msg, pos0, nb, lengths):
    for b in range(cuda.grid(1), nb, cuda.gridsize(1)):
        lengths[b] = _read_u32(msg, pos0 + 4 * b)


@cuda.jit(cache=True)
def _k_dense_decode(msg, codes0, codes_len, n, d, inv_d, s, w, scales, out, code, err):
    """One element per thread: unpack, validate (spec 6.1) and store (spec 9)."""
    mask = (np.int64(1) << w) - 1
    half = np.int64(1) << (w - 1)
    limit = codes0 + codes_len
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        bitpos = i * w
        byte = codes0 + (bitpos >> 3)
        sh = bitpos & 7
        nbytes = (sh + w + 7) >> 3
        raw = np.int64(0)
        for k in range(nbytes):
            if byte + k < limit:
                raw |= np.int64(msg[byte + k]) << (8 * k)
        field = (raw >> sh) & mask
        q = field - (half << 1) if field >= half else field
        b = _floor_div(i, d, inv_d)
        r = scales[b]
        if q < -s or q > s:
            cuda.atomic.min(err, E_CODES, i * 8 + R_RANGE)
            q = 0
        elif q != 0 and r == 0.0:
            cuda.atomic.min(err, E_CODES, i * 8 + R_ZERO_SCALE)
            q = 0
        _store(out, i, q, r, s, code)
    if cuda.grid(1) == 0:
        pad = (8 - ((n * w) & 7)) & 7
        if pad != 0 and codes_len > 0:
            if (np.int64(msg[limit - 1]) >> (8 - pad)) != 0:
                cuda.atomic.min(err, E_CODES, n * 8 + R_PADDING)


@cuda.jit(cache=True)
def _k_fill_zero(out, n):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        out[i] = 0


@cuda.jit(cache=True)
def _k_elias_decode(msg, codes0, codes_len, lengths, offsets, n, d, s, nb, scales, out, code,
                    err):
    """One bucket per thread: decode and validate its code (spec 6.2), store the non-zeros.

    ``out`` is zero-filled first.  Every read is bounded by the bucket's declared bit length
    and by the code region.  Errors record (bucket * 8 + reason) in E_CODES.
    """
    for b in range(cuda.grid(1), nb, cuda.gridsize(1)):
        lo = b * d
        m = min(d, n - lo)
        nbits = np.int64(lengths[b])
        start = codes0 + offsets[b]
        if nbits > MAX_ENTRY_BITS * m:
            cuda.atomic.min(err, E_CODES, b * 8 + R_TOO_LONG)
            continue
        r = scales[b]
        if nbits > 0 and r == 0.0:
            cuda.atomic.min(err, E_CODES, b * 8 + R_ZERO_SCALE)
            continue
        if offsets[b + 1] > codes_len or offsets[b + 1] - offsets[b] != (nbits + 7) >> 3:
            cuda.atomic.min(err, E_CODES, b * 8 + R_PAST_END)
            continue
        pos = np.int64(0)
        p = np.int64(-1)
        reason = 0
        while pos < nbits:
            gap, pos, reason = _read_omega(msg, start, pos, nbits)
            if reason != 0:
                break
            p += gap
            if p >= m:
                reason = R_GAP
                break
            if pos >= nbits:
                reason = R_PAST_END
                break
            negative = _read_bits(msg, start, pos, 1)
            pos += 1
            zeta, pos, reason = _read_omega(msg, start, pos, nbits)
            if reason != 0:
                break
            if zeta > s:
                reason = R_LEVEL
                break
            _store(out, lo + p, -zeta if negative else zeta, r, s, code)
        if reason == 0 and (nbits & 7) != 0:
            pad = 8 - (nbits & 7)
            if np.int64(msg[start + (nbits >> 3)]) & ((1 << pad) - 1):
                reason = 7
        if reason != 0:
            cuda.atomic.min(err, E_CODES, b * 8 + reason)


# ----------------------------------------------------------------------------- host side

def _crc_tables():
    """Slicing-by-4 tables (table[256*k + b]: byte b followed by k zero bytes) and x^(2^k)."""
    table = np.zeros(1024, dtype=np.uint32)
    for byte in range(256):
        r = byte
        for _ in range(8):
            r = (r >> 1) ^ 0xEDB88320 if r & 1 else r >> 1
        table[byte] = r
    for k in range(1, 4):
        for byte in range(256):
            prev = int(table[256 * (k - 1) + byte])
            table[256 * k + byte] = (prev >> 8) ^ int(table[prev & 0xFF])
    x2n = np.zeros(64, dtype=np.uint32)
    x2n[0] = 0x40000000                     # x^1
    for k in range(1, 64):
        x2n[k] = _mulmod_host(int(x2n[k - 1]), int(x2n[k - 1]))
    return table, x2n


def _mulmod_host(a, b):
    p = 0
    for k in range(32):
        if (a >> (31 - k)) & 1:
            p ^= b
        b = (b >> 1) ^ 0xEDB88320 if b & 1 else b >> 1
    return p


def _xpow8_host(nbytes, x2n):
    r, e, k = 0x80000000, 8 * nbytes, 0
    while e:
        if e & 1:
            r = _mulmod_host(int(x2n[k]), r)
        e >>= 1
        k += 1
    return r


_CRC_TABLE, _CRC_X2N = _crc_tables()
_device_tables = {}


def is_available():
    """True when a CUDA GPU (or the simulator) can run the kernels."""
    try:
        return bool(cuda.is_available())
    except Exception:  # pragma: no cover - driver errors
        return False


def _require_cuda():
    if not is_available():
        raise ParameterError(
            "a GPU array was given but CUDA is not available (no NVIDIA driver or GPU was "
            "found by numba-cuda); copy the array to the host first, or set "
            "NUMBA_ENABLE_CUDASIM=1 to use the CUDA simulator")


def _tables():
    """The CRC tables on the device (per context; copied once, synchronously, so that any
    stream may use them)."""
    key = 0 if SIMULATOR else id(cuda.current_context())
    if key not in _device_tables:
        _device_tables[key] = (cuda.to_device(_CRC_TABLE), cuda.to_device(_CRC_X2N))
    return _device_tables[key]


def _resolve_stream(stream):
    """A numba stream for ``stream`` (see the module docstring)."""
    if SIMULATOR or stream is None:
        return cuda.default_stream()
    if hasattr(stream, "handle") and hasattr(stream, "synchronize"):
        return stream                                    # a numba stream
    handle = stream
    if not isinstance(stream, (int, np.integer)):
        handle = getattr(stream, "cuda_stream", None)    # PyTorch
        if handle is None:
            handle = getattr(stream, "ptr", None)        # CuPy
    if not isinstance(handle, (int, np.integer)):
        raise ParameterError(f"stream must be a numba stream, a cudaStream_t handle or an "
                             f"object with .cuda_stream or .ptr, got {type(stream).__name__}")
    return cuda.external_stream(int(handle)) if int(handle) else cuda.default_stream()


def _is_numba_device_array(x):
    return bool(getattr(x, "__cuda_ndarray__", False))


def _as_device(x, what):
    """(numba device array viewing ``x`` without a copy, the format's dtype name).

    :func:`qsgd_codec.interop.as_device_array` does the work: numba device arrays (also the
    simulator's), ``__cuda_array_interface__`` objects, CUDA torch tensors (bfloat16 through
    an int16 view), CUDA DLPack producers.
    """
    if not interop.is_device_array(x):
        raise ParameterError(f"{what} must be a GPU array (a numba device array or an object "
                             f"with __cuda_array_interface__), got {type(x).__name__}")
    return interop.as_device_array(x)


def _as_device_bits16(x):
    """A numba device array of a 16-bit integer device array (bfloat16 bits), no copy."""
    if _is_numba_device_array(x):
        return x
    return cuda.as_cuda_array(x)


def _flat(arr, what):
    if arr.size and not arr.is_c_contiguous():
        raise ParameterError(f"{what} must be C-contiguous on the device (make a contiguous "
                             f"copy on the GPU first, e.g. .contiguous() or "
                             f"cupy.ascontiguousarray)")
    return arr.reshape(arr.size) if arr.ndim != 1 else arr


def _bits_view(flat, dtype):
    """The array the kernels read or write: native float32/float64, uint16 bits otherwise."""
    if dtype in ("float16", "bfloat16"):
        return flat.view(np.uint16)
    return flat


def _launch_dims(d):
    """Threads per block of the bucket kernels for bucket size d."""
    if SIMULATOR:
        return SIM_THREADS
    want = max(32, min(MAX_T, -(-d // E_PER_THREAD)))
    return 1 << (want - 1).bit_length()


def _per_thread(d, threads):
    """Elements per thread in an elias tile.  The GPU uses E_PER_THREAD; the simulator takes
    more so that a bucket needs at most about four tiles (each tile costs a dozen simulated
    barriers).  A tile never exceeds TILE_MAX elements, which the shared bit buffer holds."""
    if not SIMULATOR:
        return E_PER_THREAD
    return max(1, min(TILE_MAX // threads, max(E_PER_THREAD, -(-d // (threads * 4)))))


def _grid(count, threads=1):
    return max(1, min(MAX_GRID, -(-count // threads)))


def _new_err(stream):
    """The call's small int64 status array (error slots, elias total, CRC accumulator)."""
    init = np.full(N_ERR, I64_MAX, dtype=np.int64)
    init[[E_CRC, E_TOTAL, E_ACC, E_DONE]] = 0
    return cuda.to_device(init, stream=stream)


def _level_dtype(s):
    if s <= 127:
        return np.int8
    if s <= 32767:
        return np.int16
    return np.int32


def _message_buffer(total, stream):
    """A device message of ``total`` bytes as (uint32 words, uint8 view, float32 view)."""
    words = cuda.device_array(max(1, -(-total // 4)), dtype=np.uint32, stream=stream)
    return words, words.view(np.uint8), words.view(np.float32)


def _device_crc(u8, total, stream, *, write, err, words=None):
    """CRC-32 of u8[:total]: written after it (write) or compared (E_CRC).  ``words``: a
    uint32 view of the same (4-byte aligned) memory, read a word at a time."""
    table, x2n = _tables()
    nchunks = -(-total // CRC_CHUNK)
    use_words = words is not None
    if words is None:
        words = x2n                   # any uint32 array: not read
    init_term = _mulmod_host(_xpow8_host(total, _CRC_X2N), 0xFFFFFFFF) ^ 0xFFFFFFFF
    _k_crc[_grid(nchunks, ELEM_T), ELEM_T, stream](u8, words, use_words, total, CRC_CHUNK,
                                                   table, x2n, init_term, write, err)


def _scan_offsets(lengths, nb, stream, err):
    """Device exclusive scan of ceil(L_b / 8): int64 offsets[nb + 1]; the total also goes
    to err[E_TOTAL] so that one copy to the host brings it with the error slots."""
    per_block = 32 * 128 if not SIMULATOR else 64
    nparts = -(-nb // per_block)
    partials = cuda.device_array(max(1, nparts), dtype=np.int64, stream=stream)
    offsets = cuda.device_array(nb + 1, dtype=np.int64, stream=stream)
    threads = SIM_THREADS if SIMULATOR else MAX_T
    _k_scan_partials[_grid(nparts), threads, stream](lengths, nb, per_block, partials)
    _k_scan_offsets[_grid(nparts), threads, stream](lengths, nb, per_block, partials, nparts,
                                                    offsets, err)
    return offsets


def _to_host(darr, stream):
    host = darr.copy_to_host(stream=stream)
    stream.synchronize()
    return host


def _raise_encode_errors(err_host, dx, dtype, params, stream):
    if err_host[E_INPUT] != I64_MAX:
        i = int(err_host[E_INPUT])
        value = _to_host(dx[i:i + 1], stream)
        if dtype == "bfloat16":
            value = value.view(np.uint16).astype(np.uint32) << 16
            value = value.view(np.float32)
        raise NonFiniteError(f"input element {i} is {float(value[0])!r}: QSGD cannot encode NaN "
                             f"or infinite values (spec 8.1)")
    if err_host[E_SCALE] != I64_MAX:
        b = int(err_host[E_SCALE])
        raise NonFiniteError(f"bucket {b}'s {params.scale} scale exceeds the {dtype} range; use "
                             f"scale='max' or a smaller bucket_size (spec 8.2)")


def encode_device(x, params, *, device_output=False, stream=None):
    """Encode the device array ``x`` with validated :class:`~qsgd_codec.format.EncodeParams`.

    Returns host ``bytes`` (default) or a device ``uint8`` array of the message.  The bytes
    are identical to :func:`qsgd_codec.reference.encode_array` on the same values.
    """
    _require_cuda()
    stream = _resolve_stream(stream)
    arr, dtype = _as_device(x, "x")
    shape = tuple(int(e) for e in arr.shape)
    if len(shape) > fmt.MAX_NDIM:
        raise ParameterError(f"arrays with more than {fmt.MAX_NDIM} dimensions are not supported")
    flat = _flat(arr, "x")
    dx = _bits_view(flat, dtype)
    n, d, s = int(flat.size), params.bucket_size, params.levels
    nb = fmt.num_buckets(n, d)
    code = fmt.DTYPE_CODES[dtype]
    kind = fmt.SCALE_CODES[params.scale]
    key = np.uint64(_mix64_host(params.seed))
    dmax = fmt.DTYPE_MAX[dtype]
    hl = fmt.FIXED_HEADER_LENGTH + 8 * len(shape)
    crc_len = fmt.CRC_LENGTH if params.checksum else 0
    threads = _launch_dims(d)
    grid = _grid(nb)
    err = _new_err(stream)

    if params.coding == "dense":
        w = fmt.dense_width(s)
        codes_len = fmt.dense_codes_length(n, s)
        body = 4 * nb + codes_len
        total = hl + body + crc_len
        words, u8, f32 = _message_buffer(total, stream)
        codes_w0 = (hl + 4 * nb) // 4
        if n:
            if (d * w) % 32:
                nwords = -(-codes_len // 4)
                _k_zero_u32[_grid(nwords, ELEM_T), ELEM_T, stream](words, codes_w0,
                                                                   codes_w0 + nwords)
            _k_dense_encode[grid, threads, stream](dx, code, n, d, s, w, 1.0 / w, kind, key, nb,
                                                   dmax, f32, hl // 4, words, codes_w0, err)
        # errors are read once at the end: a dense message's size does not depend on them
    else:
        if n:
            scales = cuda.device_array(nb, dtype=np.float32, stream=stream)
            lengths = cuda.device_array(nb, dtype=np.uint32, stream=stream)
            levels = cuda.device_array(n, dtype=_level_dtype(s), stream=stream)
            _k_elias_levels[grid, threads, stream](dx, code, n, d, s, kind, key, nb, dmax,
                                                   _per_thread(d, threads),
                                                   scales, lengths, levels, err)
            offsets = _scan_offsets(lengths, nb, stream, err)
            err_host = _to_host(err, stream)
            _raise_encode_errors(err_host, dx, dtype, params, stream)
            codes_len = int(err_host[E_TOTAL])
        else:
            codes_len = 0
        body = 8 * nb + codes_len
        total = hl + body + crc_len
        words, u8, f32 = _message_buffer(total, stream)
        if n:
            _k_elias_write[grid, threads, stream](levels, n, d, nb,
                                                  _per_thread(d, threads),
                                                  scales.view(np.uint32), lengths, offsets,
                                                  words, hl // 4, hl // 4 + nb, u8, hl + 8 * nb)

    header = fmt.pack_header(dtype=dtype, scale=params.scale, coding=params.coding, shape=shape,
                             bucket_size=d, levels=s, seed=params.seed, body_length=body,
                             checksum=params.checksum)
    u8[:hl].copy_to_device(np.frombuffer(header, dtype=np.uint8), stream=stream)
    if params.checksum:
        _device_crc(u8, hl + body, stream, write=True, err=err, words=words)
    message = u8[:total]
    if params.coding == "dense":
        _raise_encode_errors(_to_host(err, stream), dx, dtype, params, stream)  # synchronises
    if device_output:
        stream.synchronize()
        return message
    return _to_host(message, stream).tobytes()


def encode(x, *, bits=None, levels=None, bucket_size=None, scale=None, coding=None, seed=None,
           checksum=True, device_output=False, stream=None):
    """Encode a device array; the keywords are :func:`qsgd_codec.encode`'s.

    ``device_output=True`` returns the message as a device ``uint8`` array (a numba device
    array: wrap it with ``cupy.asarray`` or ``torch.as_tensor(..., device="cuda")``) instead
    of host ``bytes``.  ``stream``: see the module docstring.
    """
    params = fmt.encode_params(bits=bits, levels=levels, bucket_size=bucket_size, scale=scale,
                               coding=coding, seed=seed, checksum=checksum)
    return encode_device(x, params, device_output=device_output, stream=stream)


# ----------------------------------------------------------------------------- decode host

def _is_device_data(data):
    return interop.is_device_array(data)


def _message_on_device(data, max_elements, stream):
    """(validated header, device uint8 message, total length, uint32 view or None).

    The header is checked (spec 3.4, checksum excepted) before a host message is copied to the
    device, so a message declaring too many elements allocates nothing.
    """
    if _is_device_data(data):
        arr = _as_device_bytes(data)
        total = int(arr.size)
        first = _to_host(arr[:min(total, fmt.FIXED_HEADER_LENGTH)], stream).tobytes()
        want = len(first)
        if len(first) >= 8:
            want = max(want, min(total, struct.unpack_from("<H", first, 6)[0]))
        prefix = first if want <= len(first) else _to_host(arr[:want], stream).tobytes()
        words = None
        if not SIMULATOR and arr.__cuda_array_interface__["data"][0] % 4 == 0 and total >= 4:
            words = arr[:total - total % 4].view(np.uint32)
        return _parse_header(prefix, total, max_elements), arr, total, words
    try:
        mv = memoryview(data).cast("B")
    except TypeError:
        raise ParameterError(f"data must be bytes-like or a device uint8 array, got "
                             f"{type(data).__name__}") from None
    header = fmt.parse_header(mv, max_elements=max_elements, verify_checksum=False)
    host = np.frombuffer(mv, dtype=np.uint8)
    total = int(host.size)
    words, u8, _ = _message_buffer(total, stream)
    u8 = u8[:total]
    u8.copy_to_device(host, stream=stream)
    return header, u8, total, words


def _as_device_bytes(data):
    if _is_numba_device_array(data):
        arr = data
    else:
        try:
            arr, _ = interop.as_device_array(data)
        except DTypeError:            # a uint8 array is not a float dtype: view it directly
            arr = cuda.as_cuda_array(data)
    if arr.dtype.itemsize != 1:
        raise ParameterError(f"a device message must be a uint8 array, got dtype {arr.dtype}")
    if arr.ndim != 1 or not arr.is_c_contiguous():
        raise ParameterError("a device message must be a contiguous 1-D uint8 array")
    return arr if arr.dtype == np.uint8 else arr.view(np.uint8)


def _parse_header(prefix, total, max_elements):
    """fmt.parse_header's checks (spec 3.4) for a message of ``total`` bytes that begins with
    ``prefix``, without copying the rest: the probe is an anonymous mapping whose untouched
    pages cost nothing.  The checksum is verified on the device."""
    if total <= len(prefix):
        return fmt.parse_header(prefix[:total], max_elements=max_elements,
                                verify_checksum=False)
    probe = mmap.mmap(-1, total)
    probe[:len(prefix)] = prefix
    return fmt.parse_header(probe, max_elements=max_elements, verify_checksum=False)


def _check_out(out, header):
    """The flat array the decode kernels write for the caller's ``out``."""
    if header.dtype == "bfloat16" and str(getattr(out, "dtype", "")) in ("uint16", "int16"):
        arr, dtype = _as_device_bits16(out), "bfloat16"   # bfloat16 bits in 16-bit integers
    else:
        arr, dtype = _as_device(out, "out")
    if arr.size != header.n:
        raise ParameterError(f"out has {arr.size} elements but the message holds {header.n}")
    if dtype != header.dtype:
        raise ParameterError(f"out has dtype {arr.dtype} but the message holds {header.dtype}")
    return _bits_view(_flat(arr, "out"), dtype)


def _new_output(header, stream):
    """(device array for the caller, flat array the kernels write) for a message."""
    n = header.n
    if header.dtype in ("float16", "bfloat16"):
        flat = cuda.device_array(n, dtype=np.uint16, stream=stream)
        result = flat
        try:
            result = flat.view(fmt.numpy_dtype(header.dtype))
        except Exception:             # numba cannot hold bfloat16: return the bits
            pass
    else:
        flat = cuda.device_array(n, dtype=np.dtype(header.dtype), stream=stream)
        result = flat
    if header.shape != (n,):
        result = result.reshape(header.shape)
    return result, flat


def decode_device(data, *, out=None, max_elements=None, stream=None):
    """Decode ``data`` (host bytes or a device uint8 array) on the GPU.

    Writes into the device array ``out`` and returns it, or returns a new device array of the
    message's dtype and shape (bfloat16: a uint16 array of the bits where the array type
    cannot carry bfloat16; 16-bit integer ``out`` arrays are accepted for bfloat16 bits).
    ``max_elements`` bounds the element count (default 2**28, or ``out``'s size), checked
    before anything is allocated.  On error the contents of ``out`` are unspecified.
    """
    _require_cuda()
    stream = _resolve_stream(stream)
    if out is not None and hasattr(out, "shape"):
        out_size = int(np.prod(out.shape, dtype=np.int64))
        max_elements = out_size if max_elements is None else min(max_elements, out_size)
    elif max_elements is None:
        max_elements = fmt.DEFAULT_MAX_ELEMENTS
    header, msg, total, words = _message_on_device(data, max_elements, stream)
    n, d, s, nb = header.n, header.bucket_size, header.levels, header.num_buckets
    code = fmt.DTYPE_CODES[header.dtype]
    if out is None:
        result, target = _new_output(header, stream)
    else:
        result, target = out, _check_out(out, header)
    if n == 0:
        # nothing to run on the device: the reference checks the (tiny) rest
        reference.decode_bits(_to_host(msg, stream).tobytes(), max_elements=max_elements)
        return result

    err = _new_err(stream)
    if header.has_checksum:
        _device_crc(msg, total - fmt.CRC_LENGTH, stream, write=False, err=err, words=words)
    scales = cuda.device_array(nb, dtype=np.float64, stream=stream)
    dmax_bits = int(np.float32(fmt.DTYPE_MAX[header.dtype]).view(np.uint32))
    _k_read_scales[_grid(nb, ELEM_T), ELEM_T, stream](msg, header.scales_offset, nb, dmax_bits,
                                                       scales, err)
    codes0 = header.codes_offset
    codes_len = header.header_length + header.body_length - codes0
    if header.coding == "elias":
        lengths = cuda.device_array(nb, dtype=np.int64, stream=stream)
        _k_read_lengths[_grid(nb, ELEM_T), ELEM_T, stream](msg, header.table_offset, nb, lengths)
        offsets = _scan_offsets(lengths, nb, stream, err)
        err_host = _to_host(err, stream)
        _raise_header_errors(err_host, header)
        code_bytes = int(err_host[E_TOTAL])
        if code_bytes != codes_len:
            raise LengthError(f"elias bit lengths add up to {code_bytes} code bytes, but the "
                              f"body holds {codes_len}")
        _k_fill_zero[_grid(n, ELEM_T), ELEM_T, stream](target, n)
        threads = ELEM_T if SIMULATOR else 64
        _k_elias_decode[_grid(nb, threads), threads, stream](
            msg, codes0, codes_len, lengths, offsets, n, d, s, nb, scales, target, code, err)
    else:
        _k_dense_decode[_grid(n, ELEM_T), ELEM_T, stream](
            msg, codes0, codes_len, n, d, 1.0 / d, s, header.width, scales, target, code, err)
    err_host = _to_host(err, stream)
    _raise_header_errors(err_host, header)
    if err_host[E_CODES] != I64_MAX:
        where, reason = divmod(int(err_host[E_CODES]), 8)
        if header.coding == "dense":
            place = "the padding" if reason == R_PADDING else f"element {where}"
            raise CorruptDataError(f"dense codes hold {_REASONS_DENSE[reason]} (at {place})")
        raise CorruptDataError(f"elias bucket {where} holds {_REASONS_ELIAS[reason]}")
    return result


def _raise_header_errors(err_host, header):
    if err_host[E_CRC]:
        raise ChecksumError("CRC-32 mismatch: the message's checksum does not match its bytes")
    if err_host[E_BADSCALE] != I64_MAX:
        b = int(err_host[E_BADSCALE])
        raise CorruptDataError(f"scale of bucket {b} is invalid: a scale must be +0.0 or a "
                               f"positive finite float32 no larger than the {header.dtype} "
                               f"maximum")


def decode(data, *, out=None, max_elements=None, stream=None):
    """Decode on the GPU; ``data`` is host bytes or a device uint8 array (see decode_device)."""
    return decode_device(data, out=out, max_elements=max_elements, stream=stream)


# ----------------------------------------------------------------------------- PTX audit

def kernel_signatures(few=False):
    """(kernel name, argument types) of the specialisations the launchers compile.

    ``few``: one specialisation per kernel (the float32 / int8 ones).
    """
    t = _nbt

    def arr(dtype):
        return t.Array(dtype, 1, "C")

    i8, u64, f64 = t.int64, t.uint64, t.float64
    f32a, u32a, u8a, i64a = arr(t.float32), arr(t.uint32), arr(t.uint8), arr(t.int64)
    inputs = [arr(t.float32), arr(t.float64), arr(t.uint16)]
    levels = [arr(t.int8), arr(t.int16), arr(t.int32)]
    if few:
        inputs, levels = inputs[:1], levels[:1]
    sigs = []
    for xa in inputs:
        sigs.append(("_k_dense_encode",
                     (xa, i8, i8, i8, i8, i8, f64, i8, u64, i8, f64, f32a, i8, u32a, i8, i64a)))
        for qa in levels:
            sigs.append(("_k_elias_levels",
                         (xa, i8, i8, i8, i8, i8, u64, i8, f64, i8, f32a, u32a, qa, i64a)))
    for qa in levels:
        sigs.append(("_k_elias_write",
                     (qa, i8, i8, i8, i8, u32a, u32a, i64a, u32a, i8, i8, u8a, i8)))
    for la in ([u32a] if few else [u32a, i64a]):
        sigs.append(("_k_scan_partials", (la, i8, i8, i64a)))
        sigs.append(("_k_scan_offsets", (la, i8, i8, i64a, i8, i64a, i64a)))
    sigs += [("_k_zero_u32", (u32a, i8, i8)),
             ("_k_crc", (u8a, u32a, t.boolean, i8, i8, u32a, u32a, i8, t.boolean, i64a)),
             ("_k_read_scales", (u8a, i8, i8, i8, arr(f64), i64a)),
             ("_k_read_lengths", (u8a, i8, i8, i64a))]
    for oa in inputs:
        sigs += [("_k_dense_decode", (u8a, i8, i8, i8, i8, f64, i8, i8, arr(f64), oa, i8, i64a)),
                 ("_k_fill_zero", (oa, i8)),
                 ("_k_elias_decode", (u8a, i8, i8, i64a, i64a, i8, i8, i8, i8, arr(f64), oa,
                                      i8, i64a))]
    return sigs


#: libdevice's frexp scales subnormals by 2^54 with an unrounded multiply feeding bit ops
_EXACT_PLAIN_MUL = "0d4350000000000000"


def audit_ptx(cc=None, few=False):
    """Compile the kernels to PTX and list what would break bit-exactness.

    Flags any fused multiply-add, approximate or flush-to-zero instruction, and any
    floating-point multiply without an explicit rounding mode (ptxas may contract those into
    an FMA) other than libdevice frexp's exact scaling.  Returns a list of
    ``(kernel, instruction)``; empty means clean.  ``cc`` defaults to the current device's.
    """
    if SIMULATOR:
        raise ParameterError("audit_ptx compiles real kernels: unset NUMBA_ENABLE_CUDASIM")
    if cc is None:
        cc = cuda.get_current_device().compute_capability
    module = globals()
    problems = []
    for name, sig in kernel_signatures(few):
        ptx, _ = cuda.compile_ptx(module[name].py_func, sig, cc=cc)
        for line in ptx.splitlines():
            parts = line.strip().split(None, 1)
            if not parts:
                continue
            op = parts[0]
            if (op.startswith("fma.") or ".approx" in op or ".ftz" in op
                    or (op in ("mul.f64", "mul.f32") and _EXACT_PLAIN_MUL not in line)):
                problems.append((name, line.strip()))
    return problems
