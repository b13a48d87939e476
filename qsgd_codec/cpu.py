"""Numba CPU kernels of the QSGD codec: byte-identical to :mod:`qsgd_codec.reference`.

Every kernel here is a module-level ``@njit(cache=True)`` function over flat arrays, byte
offsets and bit positions (no closures, no jitclasses), so numba's on-disk cache holds them
all.  The Python functions at the bottom (``encode_array``, ``decode_into``, ``crc32``, ...)
are what :mod:`qsgd_codec.api` calls.

Layout of the work
------------------
- Input values arrive as their raw bit patterns (uint16 for float16/bfloat16, uint32 for
  float32, uint64 for float64) and are converted exactly to binary64 inside the loops
  (:func:`_to_f64`), so no converted copy of the input is ever made.
- Work is split into *chunks*: runs of whole buckets of about ``CHUNK`` elements whose first
  element index is a multiple of 8, so that a chunk's dense codes start on a byte boundary
  for every field width.  Chunks write disjoint bytes; a chunk's bytes depend only on the
  spec, never on which thread ran it or how many threads there are.  The parallel driver of
  each kernel is a ``prange`` over chunks; its serial twin (for small inputs and
  ``numba.set_num_threads(1)``-free use) is a plain loop over the same chunk function.
- Dense encoding is one fused pass per bucket: the scale, then quantization and packing of
  the same bucket while it is still in cache.  Buckets larger than a chunk take two passes
  (scales, then quantization in element chunks) so that one huge bucket still uses every
  thread.
- Elias encoding takes two passes over the input: the first computes scales and each
  bucket's exact code length ``L_b``, the second quantizes again (the same pure function of
  seed and index) and writes each bucket at its byte offset.  Memory stays at the output
  plus O(number of buckets).
- Decoding reads the message through hand bounds checks (a read past the message is never
  attempted), reports the first error of each chunk in a small status array, and the Python
  side turns the first error into the reference's error class.

Hot loops run over slices with indices counting from 0: numba then knows an index is not
negative, drops its wraparound check and LLVM vectorizes the loop.

Floating point: no fastmath; binary64 operations are written exactly as spec 8.4 and 9 write
them (LLVM does not contract a multiply and an add into an FMA without fast-math flags).
"""

import math
import platform
import sys
import time

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from . import format as fmt
from .errors import (ChecksumError, CorruptDataError, LengthError, NonFiniteError,
                     ParameterError)

# ----------------------------------------------------------------------------- constants

U64 = np.uint64
U32 = np.uint32
GAMMA = U64(0x9E3779B97F4A7C15)
GAMMA_2, GAMMA_3, GAMMA_4 = (U64((k * 0x9E3779B97F4A7C15) % (1 << 64)) for k in (2, 3, 4))
MIX_1 = U64(0xBF58476D1CE4E5B9)
MIX_2 = U64(0x94D049BB133111EB)
# shift counts typed uint64 (a uint64 shifted by an int64 literal becomes int64 in numba)
SH8, SH11, SH27, SH30, SH31, SH32, SH52, SH56 = (U64(k) for k in (8, 11, 27, 30, 31, 32, 52,
                                                                  56))
TWO_M53 = 2.0 ** -53
TWO_52 = 2.0 ** 52
LANES = 32

#: elements per chunk of parallel work (a chunk is whole buckets unless a bucket is larger)
CHUNK = 1 << 15
#: below this many elements the serial kernels run (a parallel launch costs more)
PARALLEL_MIN = 1 << 16
#: quantization block: levels of this many elements are staged before packing
BLOCK = 1024
#: per-bucket decode tables are used for levels s up to this (else values are computed)
TABLE_MAX = 4096
#: elias omega codes of integers below this come from a table
OMEGA_TABLE = 4096

# error codes the decode kernels report (status[chunk] = code, where[chunk] = position)
E_OK = 0
E_DENSE_FIELD = 1       # where = element index
E_ZERO_SCALE = 2        # where = bucket
E_PADDING = 3           # where = bucket (elias) or -1 (dense)
E_OVERLONG = 4          # where = bucket
E_PAST_END = 5          # where = bucket
E_GAP = 6               # where = bucket
E_LEVEL = 7             # where = bucket
E_TOO_LONG = 8          # where = bucket (L_b > 73 m)

# encode statuses per bucket
S_OK = 0
S_NONFINITE = 1
S_RANGE = 2


# ----------------------------------------------------------------------------- dtypes

class _DType:
    """Kernel parameters of one element type: raw-bits dtype and IEEE layout."""

    def __init__(self, name, bits, mant, emin, absmask, infbits):
        self.name = name
        self.bits = np.dtype(bits)
        self.mant = mant                      # explicit mantissa bits
        self.emin = emin                      # exponent of the smallest normal
        self.absmask = self.bits.type(absmask)
        self.infbits = self.bits.type(infbits)
        self.signbit = self.bits.type(1 << (8 * self.bits.itemsize - 1))
        self.dmax = float(fmt.DTYPE_MAX[name])
        self.dmax_bits = U32(np.float32(self.dmax).view(np.uint32))


DTYPES = {
    "float16": _DType("float16", np.uint16, 10, -14, 0x7FFF, 0x7C00),
    "bfloat16": _DType("bfloat16", np.uint16, 7, -126, 0x7FFF, 0x7F80),
    "float32": _DType("float32", np.uint32, 23, -126, 0x7FFFFFFF, 0x7F800000),
    "float64": _DType("float64", np.uint64, 52, -1022, 0x7FFFFFFFFFFFFFFF, 0x7FF0000000000000),
}


# ----------------------------------------------------------------------------- exact conversions

def _to_f64(b, mant, xb):
    """binary64 value of the raw bits ``b`` of an element of array ``xb`` (a stub: the kernels
    use the overload below, which dispatches on the array's dtype, because numba widens
    small unsigned scalars to uint64 in arithmetic)."""
    raise NotImplementedError


@overload(_to_f64)
def _to_f64_impl(b, mant, xb):
    dt = xb.dtype
    if dt == types.uint16:
        def impl(b, mant, xb):
            # float16 (mant=10) and bfloat16 (mant=7): value = m * 2^(max(e,1) - bias - mant)
            v = np.int64(b)
            emask = np.int64(0x7FFF) >> mant
            e = (v >> mant) & emask
            m = v & ((np.int64(1) << mant) - 1)
            if e != 0:
                m |= np.int64(1) << mant
            else:
                e = 1
            p2 = U64(U64(e - (emask >> 1) - mant + 1023) << SH52)
            x = np.float64(m) * p2.view(np.float64)
            return -x if v & 0x8000 else x
        return impl
    if dt == types.uint32:
        return lambda b, mant, xb: np.float64(U32(b).view(np.float32))
    if dt == types.uint64:
        return lambda b, mant, xb: U64(b).view(np.float64)
    return None


def _mag_bits(v, mant, emin, out):
    """Bits of the non-negative binary64 ``v`` rounded to the element type of the raw-bits
    array ``out`` (stub; see the overload)."""
    raise NotImplementedError


@overload(_mag_bits)
def _mag_bits_impl(v, mant, emin, out):
    dt = out.dtype
    if dt == types.uint64:
        return lambda v, mant, emin, out: np.float64(v).view(np.uint64)
    if dt == types.uint32:
        # the hardware conversion rounds to nearest even and keeps subnormals (no FTZ)
        return lambda v, mant, emin, out: np.float32(v).view(np.uint32)
    if dt == types.uint16:
        def impl(v, mant, emin, out):
            if v == 0.0:
                return np.uint16(0)
            e = np.int64((np.float64(v).view(np.uint64) >> SH52) & U64(0x7FF)) - 1023
            if e < emin:
                e = emin
            # k = RNE(v / 2^(e - mant)): the scaling is exact, and adding and subtracting 2^52
            # rounds to an integer with ties to even (k < 2^(mant+1) <= 2^11)
            scaled = v * U64(U64(mant - e + 1023) << SH52).view(np.float64)
            k = (scaled + TWO_52) - TWO_52
            return np.uint16(((e - emin) << mant) + np.int64(k))
        return impl
    return None


def _out_bits(v, mant, emin, out):
    """Bits of the binary64 ``v`` (any sign) rounded to the element type of ``out`` (stub)."""
    raise NotImplementedError


@overload(_out_bits)
def _out_bits_impl(v, mant, emin, out):
    dt = out.dtype
    if dt == types.uint64:
        return lambda v, mant, emin, out: np.float64(v).view(np.uint64)
    if dt == types.uint32:
        return lambda v, mant, emin, out: np.float32(v).view(np.uint32)
    if dt == types.uint16:
        def impl(v, mant, emin, out):
            mag = _mag_bits(abs(v), mant, emin, out)
            return np.uint16(mag | np.uint16(0x8000)) if v < 0.0 else mag
        return impl
    return None


# ----------------------------------------------------------------------------- random source

@njit(cache=True, inline="always")
def _mix64(z):
    z = (z ^ (z >> SH30)) * MIX_1
    z = (z ^ (z >> SH27)) * MIX_2
    return z ^ (z >> SH31)


@njit(cache=True)
def _seed_key(seed):
    return _mix64(seed)


# ----------------------------------------------------------------------------- byte helpers

# Byte offsets are made unsigned before indexing: numba then emits no negative-index
# wraparound, and LLVM merges the byte accesses into one (byte-swapped) load or store.
# Helpers taking arrays are left to LLVM's inliner: numba-level inlining of them leaves
# reference-count calls inside the callers' loops.

@njit(cache=True)
def _ld32(buf, i):
    u = U64(i)
    return U32(U32(buf[u]) | (U32(buf[u + U64(1)]) << U32(8))
               | (U32(buf[u + U64(2)]) << U32(16)) | (U32(buf[u + U64(3)]) << U32(24)))


@njit(cache=True)
def _st32(buf, i, v):
    u = U64(i)
    buf[u] = np.uint8(v & U32(255))
    buf[u + U64(1)] = np.uint8((v >> U32(8)) & U32(255))
    buf[u + U64(2)] = np.uint8((v >> U32(16)) & U32(255))
    buf[u + U64(3)] = np.uint8(v >> U32(24))


@njit(cache=True)
def _ld64(buf, i):
    u = U64(i)
    return (U64(buf[u]) | (U64(buf[u + U64(1)]) << SH8) | (U64(buf[u + U64(2)]) << U64(16))
            | (U64(buf[u + U64(3)]) << U64(24)) | (U64(buf[u + U64(4)]) << SH32)
            | (U64(buf[u + U64(5)]) << U64(40)) | (U64(buf[u + U64(6)]) << U64(48))
            | (U64(buf[u + U64(7)]) << SH56))


@njit(cache=True)
def _ld64be(buf, i):
    u = U64(i)
    return ((U64(buf[u]) << SH56) | (U64(buf[u + U64(1)]) << U64(48))
            | (U64(buf[u + U64(2)]) << U64(40)) | (U64(buf[u + U64(3)]) << SH32)
            | (U64(buf[u + U64(4)]) << U64(24)) | (U64(buf[u + U64(5)]) << U64(16))
            | (U64(buf[u + U64(6)]) << SH8) | U64(buf[u + U64(7)]))


@njit(cache=True)
def _st64be(buf, i, v):
    u = U64(i)
    buf[u] = np.uint8(v >> SH56)
    buf[u + U64(1)] = np.uint8((v >> U64(48)) & U64(255))
    buf[u + U64(2)] = np.uint8((v >> U64(40)) & U64(255))
    buf[u + U64(3)] = np.uint8((v >> SH32) & U64(255))
    buf[u + U64(4)] = np.uint8((v >> U64(24)) & U64(255))
    buf[u + U64(5)] = np.uint8((v >> U64(16)) & U64(255))
    buf[u + U64(6)] = np.uint8((v >> SH8) & U64(255))
    buf[u + U64(7)] = np.uint8(v & U64(255))


# ----------------------------------------------------------------------------- CRC-32
#
# zlib's CRC-32 (spec 7).  Three implementations give the same value: carry-less multiply
# folding with 512-bit VPCLMULQDQ, the same with 128-bit PCLMULQDQ, and a slicing-by-8 table
# loop for CPUs without either.  Folding keeps a 128-bit value congruent (mod P) to the data
# seen so far; polynomial constants are x^k mod P in bit-reflected form, with k one less than
# the fold distance because a carry-less product of two reflected operands comes out one
# position short.  The final 16 bytes are finished by the table loop.

_CRC_POLY = 0x104C11DB7


def _xpow_mod(e):
    """x^e mod P (bit d = coefficient of x^d)."""
    def mulmod(a, b):
        p = 0
        while b:
            if b & 1:
                p ^= a
            b >>= 1
            a <<= 1
            if a >> 32 & 1:
                a ^= _CRC_POLY
        return p
    r, base = 1, 2
    while e:
        if e & 1:
            r = mulmod(r, base)
        base = mulmod(base, base)
        e >>= 1
    return r


def _reflected_constant(e):
    k = _xpow_mod(e)
    return sum(1 << (63 - d) for d in range(32) if k >> d & 1)


_K128 = (_reflected_constant(191), _reflected_constant(127))     # fold by 128 bits
_K512 = (_reflected_constant(575), _reflected_constant(511))     # 4 x 128-bit lanes
_K2048 = (_reflected_constant(2111), _reflected_constant(2047))  # 4 x 512-bit lanes


def _crc_tables():
    t = np.zeros((8, 256), dtype=np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ (0xEDB88320 if c & 1 else 0)
        t[0, i] = c
    for k in range(1, 8):
        t[k] = (t[k - 1] >> 8) ^ t[0][t[k - 1] & 0xFF]
    return t


CRC_TABLES = _crc_tables()
K128_LO, K128_HI = U64(_K128[0]), U64(_K128[1])


def _make_fold_intrinsic(width):
    """An intrinsic folding ``nvec`` 16-byte blocks (a multiple of 4*width/128) of a uint8
    array from byte ``start`` into one 128-bit value, returned as two uint64 (memory order).
    ``init`` is XORed into the first 8 bytes."""
    per = width // 128                                        # 128-bit lanes per register
    k_far = _K512 if per == 1 else _K2048
    name = "llvm.x86.pclmulqdq" if per == 1 else "llvm.x86.pclmulqdq.512"

    @intrinsic
    def fold(typingctx, buf, start, nvec, init):
        sig = types.UniTuple(types.uint64, 2)(buf, types.int64, types.int64, types.uint64)

        def codegen(context, builder, signature, args):
            ary = context.make_array(signature.args[0])(context, builder, args[0])
            start, nvec, init = args[1], args[2], args[3]
            i64, i32, i8 = ir.IntType(64), ir.IntType(32), ir.IntType(8)
            v2 = ir.VectorType(i64, 2)
            vw = ir.VectorType(i64, 2 * per)
            vptr = builder.bitcast(builder.gep(ary.data, [start]), vw.as_pointer())
            clw = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vw, [vw, vw, i8]), name)
            cl2 = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(v2, [v2, v2, i8]), "llvm.x86.pclmulqdq")
            kw = ir.Constant(vw, [k_far[0], k_far[1]] * per)
            k2 = ir.Constant(v2, [_K128[0], _K128[1]])

            def load(idx):
                return builder.load(builder.gep(vptr, [idx]), align=1)

            def fold_w(v):
                a = builder.call(clw, [v, kw, ir.Constant(i8, 0x00)])
                b = builder.call(clw, [v, kw, ir.Constant(i8, 0x11)])
                return builder.xor(a, b)

            def fold_2(v):
                a = builder.call(cl2, [v, k2, ir.Constant(i8, 0x00)])
                b = builder.call(cl2, [v, k2, ir.Constant(i8, 0x11)])
                return builder.xor(a, b)

            nregs = builder.sdiv(nvec, ir.Constant(i64, per))
            four = ir.Constant(i64, 4)
            initv = builder.insert_element(ir.Constant(vw, [0] * (2 * per)), init,
                                           ir.Constant(i32, 0))
            first = [builder.xor(load(ir.Constant(i64, 0)), initv)]
            first += [load(ir.Constant(i64, k)) for k in (1, 2, 3)]
            entry = builder.block
            loop = builder.append_basic_block("crc.fold")
            done = builder.append_basic_block("crc.done")
            builder.cbranch(builder.icmp_signed("<", four, nregs), loop, done)
            builder.position_at_end(loop)
            iv = builder.phi(i64)
            acc = [builder.phi(vw) for _ in range(4)]
            iv.add_incoming(four, entry)
            for phi, value in zip(acc, first):
                phi.add_incoming(value, entry)
            new = [builder.xor(fold_w(acc[k]), load(builder.add(iv, ir.Constant(i64, k))))
                   for k in range(4)]
            nxt = builder.add(iv, four)
            for phi, value in zip(acc, new):
                phi.add_incoming(value, loop)
            iv.add_incoming(nxt, loop)
            builder.cbranch(builder.icmp_signed("<", nxt, nregs), loop, done)
            builder.position_at_end(done)
            final = []
            for k in range(4):
                phi = builder.phi(vw)
                phi.add_incoming(first[k], entry)
                phi.add_incoming(new[k], loop)
                final.append(phi)
            state = None
            for k in range(4):
                for lane in range(per):
                    part = final[k] if per == 1 else builder.shuffle_vector(
                        final[k], final[k], ir.Constant(ir.VectorType(i32, 2),
                                                        [2 * lane, 2 * lane + 1]))
                    state = part if state is None else builder.xor(fold_2(state), part)
            lo = builder.extract_element(state, ir.Constant(i32, 0))
            hi = builder.extract_element(state, ir.Constant(i32, 1))
            return context.make_tuple(builder, signature.return_type, [lo, hi])

        return sig, codegen

    return fold


_fold128 = _make_fold_intrinsic(128)
_fold512 = _make_fold_intrinsic(512)


@intrinsic
def _clmul(typingctx, a, b):
    """128-bit carry-less product of two uint64, as (low, high)."""
    sig = types.UniTuple(types.uint64, 2)(types.uint64, types.uint64)

    def codegen(context, builder, signature, args):
        i64, i32, i8 = ir.IntType(64), ir.IntType(32), ir.IntType(8)
        v2 = ir.VectorType(i64, 2)
        zero = ir.Constant(v2, [0, 0])
        va = builder.insert_element(zero, args[0], ir.Constant(i32, 0))
        vb = builder.insert_element(zero, args[1], ir.Constant(i32, 0))
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(v2, [v2, v2, i8]), "llvm.x86.pclmulqdq")
        r = builder.call(fn, [va, vb, ir.Constant(i8, 0)])
        return context.make_tuple(builder, signature.return_type, [
            builder.extract_element(r, ir.Constant(i32, 0)),
            builder.extract_element(r, ir.Constant(i32, 1))])

    return sig, codegen


@njit(cache=True)
def _crc_bytes(buf, lo, hi, r):
    """Advance the (pre-inverted) CRC register over buf[lo:hi], slicing by 8."""
    t = CRC_TABLES
    i = lo
    while i + 8 <= hi:
        a = r ^ _ld32(buf, i)
        b = _ld32(buf, i + 4)
        r = (t[7, a & U32(255)] ^ t[6, (a >> U32(8)) & U32(255)]
             ^ t[5, (a >> U32(16)) & U32(255)] ^ t[4, a >> U32(24)]
             ^ t[3, b & U32(255)] ^ t[2, (b >> U32(8)) & U32(255)]
             ^ t[1, (b >> U32(16)) & U32(255)] ^ t[0, b >> U32(24)])
        i += 8
    while i < hi:
        r = t[0, (r ^ U32(buf[i])) & U32(255)] ^ (r >> U32(8))
        i += 1
    return r


@njit(cache=True)
def _crc_finish_state(buf, i, n, s0, s1):
    """Fold the remaining whole 16-byte blocks, then run the table over the state's 16 bytes
    (init 0: the state already holds the register) and the tail."""
    while i + 16 <= n:
        a0, a1 = _clmul(s0, K128_LO)
        b0, b1 = _clmul(s1, K128_HI)
        s0 = a0 ^ b0 ^ _ld64(buf, i)
        s1 = a1 ^ b1 ^ _ld64(buf, i + 8)
        i += 16
    t = CRC_TABLES
    r = U32(0)
    for w in (s0, s1):
        for k in range(8):
            r = t[0, (r ^ U32((w >> U64(8 * k)) & U64(255))) & U32(255)] ^ (r >> U32(8))
    return _crc_bytes(buf, i, n, r)


@njit(cache=True)
def crc32_table(buf, crc):
    """zlib.crc32(buf, crc) with tables only (any CPU)."""
    r = U32(crc) ^ U32(0xFFFFFFFF)
    return _crc_bytes(buf, 0, buf.size, r) ^ U32(0xFFFFFFFF)


@njit(cache=True)
def crc32_clmul128(buf, crc):
    """zlib.crc32(buf, crc) by 128-bit carry-less multiply folding (x86 PCLMULQDQ)."""
    n = buf.size
    r = U32(crc) ^ U32(0xFFFFFFFF)
    if n < 128:
        return _crc_bytes(buf, 0, n, r) ^ U32(0xFFFFFFFF)
    nvec = (n // 64) * 4
    s0, s1 = _fold128(buf, 0, nvec, U64(r))
    return _crc_finish_state(buf, nvec * 16, n, s0, s1) ^ U32(0xFFFFFFFF)


@njit(cache=True)
def crc32_clmul512(buf, crc):
    """zlib.crc32(buf, crc) by 512-bit carry-less multiply folding (AVX-512 VPCLMULQDQ)."""
    n = buf.size
    r = U32(crc) ^ U32(0xFFFFFFFF)
    if n < 512:
        return _crc_bytes(buf, 0, n, r) ^ U32(0xFFFFFFFF)
    nvec = (n // 256) * 16
    s0, s1 = _fold512(buf, 0, nvec, U64(r))
    return _crc_finish_state(buf, nvec * 16, n, s0, s1) ^ U32(0xFFFFFFFF)


def _cpu_features():
    """The CPU features numba compiles for (honours NUMBA_CPU_NAME / NUMBA_CPU_FEATURES)."""
    if numba.config.CPU_FEATURES is not None:
        return {f[1:] for f in numba.config.CPU_FEATURES.split(",") if f.startswith("+")}
    if numba.config.CPU_NAME not in (None, "host"):
        return set()
    try:
        import llvmlite.binding as llvm
        return {name for name, on in llvm.get_host_cpu_features().items() if on}
    except Exception:       # pragma: no cover - llvmlite without feature detection
        return set()


def _pick_crc():
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return crc32_table, "table"
    features = _cpu_features()
    if {"vpclmulqdq", "avx512f", "avx512bw"} <= features:
        return crc32_clmul512, "vpclmulqdq-512"
    if {"pclmul", "sse4.1"} <= features:
        return crc32_clmul128, "pclmulqdq-128"
    return crc32_table, "table"


_CRC_KERNEL, CRC_IMPLEMENTATION = _pick_crc()


def crc32(buf, crc=0):
    """zlib.crc32 of a 1-D contiguous uint8 array."""
    global _CRC_KERNEL, CRC_IMPLEMENTATION
    try:
        return int(_CRC_KERNEL(buf, U32(crc)))
    except numba.core.errors.NumbaError:     # pragma: no cover - an intrinsic the CPU lacks
        _CRC_KERNEL, CRC_IMPLEMENTATION = crc32_table, "table"
        return int(_CRC_KERNEL(buf, U32(crc)))


# ----------------------------------------------------------------------------- Elias omega tables

def _omega_str(value):
    code = "0"
    while value > 1:
        binary = format(value, "b")
        code = binary + code
        value = len(binary) - 1
    return code


def _omega_tables():
    codes = np.zeros(OMEGA_TABLE, dtype=np.uint32)
    lengths = np.zeros(OMEGA_TABLE, dtype=np.int64)
    for v in range(1, OMEGA_TABLE):
        s = _omega_str(v)
        codes[v] = int(s, 2)
        lengths[v] = len(s)
    # decoding a whole entry from the next 12 bits: entry[bits] = length | gap << 8 |
    # level << 16 | sign << 24 when an entry of at most 12 bits starts there, else 0
    entry = np.zeros(4096, dtype=np.uint32)
    small = [(v, _omega_str(v)) for v in range(1, 64)]
    for gap, gs in small:
        for level, ls in small:
            for sign in (0, 1):
                bits = gs + str(sign) + ls
                if len(bits) <= 12:
                    lo = int(bits, 2) << (12 - len(bits))
                    value = len(bits) | gap << 8 | level << 16 | sign << 24
                    entry[lo:lo + (1 << (12 - len(bits)))] = value
    return codes, lengths, entry


OMEGA_CODE, OMEGA_LEN, ENTRY_DEC12 = _omega_tables()

# Tables indexed by a signed level v + LEVEL_OFFSET, |v| < OMEGA_TABLE: the sign bit and the
# level's omega code as one code, its length (0 for v = 0), and 0/1 for zero/non-zero.
# Multiplying by a table value rather than selecting on v != 0 keeps LLVM from turning the
# zero test back into a branch, which is unpredictable in the dense regime.
LEVEL_OFFSET = OMEGA_TABLE - 1
_LEVELS = np.arange(-LEVEL_OFFSET, LEVEL_OFFSET + 1)
LEVEL_LEN = np.where(_LEVELS == 0, 0, 1 + OMEGA_LEN[np.abs(_LEVELS)]).astype(np.int64)
LEVEL_CODE = np.where(_LEVELS < 0, 1 << OMEGA_LEN[np.abs(_LEVELS)], 0).astype(np.uint64) \
    | OMEGA_CODE[np.abs(_LEVELS)].astype(np.uint64)
LEVEL_NONZERO = (_LEVELS != 0).astype(np.int64)


@njit(cache=True, inline="always")
def _bit_length(v):
    b = np.int64(0)
    while v:
        v >>= 1
        b += 1
    return b


@njit(cache=True)
def _omega_code(v):
    """(code, length) of the Elias omega code of 1 <= v < 2^25 (at most 36 bits)."""
    code = U64(0)
    length = np.int64(1)                 # the final "0"
    v = np.int64(v)
    while v > 1:
        b = _bit_length(v)
        code |= U64(v) << U64(length)
        length += b
        v = b - 1
    return code, length


@njit(cache=True, inline="always")
def _omega_len(v):
    if v < OMEGA_TABLE:
        return OMEGA_LEN[v]
    return _omega_code(v)[1]


# ----------------------------------------------------------------------------- scales (8.2)

@njit(cache=True, inline="always")
def _round_up_f32(y):
    """RU32: the smallest float32 >= y (y >= 0), as float64 (inf when y > FLT_MAX)."""
    f = np.float32(y)
    if np.float64(f) < y:
        f = np.nextafter(f, np.float32(np.inf))
    return np.float64(f)


@njit(cache=True)
def _bucket_scale(xb, lo, hi, l2, mant, absmask, infbits, acc):
    """(y, status) of elements xb[lo:hi]: the exact max |x| or the spec's 32-lane L2 norm.

    status is S_NONFINITE when a value is NaN or infinite (detected from the bits).
    ``acc`` is 32 float64 of scratch.
    """
    top = absmask ^ absmask          # the largest |bits| seen (NaN and inf sort last)
    xs = xb[lo:hi]
    m = hi - lo
    if not l2:
        for i in range(m):
            a = xs[i] & absmask
            top = a if a > top else top
        if top >= infbits:
            return 0.0, S_NONFINITE
        return _to_f64(top, mant, xb), S_OK
    for k in range(LANES):
        acc[k] = 0.0
    full = m - m % LANES
    for i in range(0, full, LANES):
        xl = xs[i:i + LANES]
        for k in range(LANES):
            b = xl[k]
            a = b & absmask
            top = a if a > top else top
            v = _to_f64(b, mant, xb)
            acc[k] = acc[k] + v * v
    for k in range(m - full):
        b = xs[full + k]
        a = b & absmask
        top = a if a > top else top
        v = _to_f64(b, mant, xb)
        acc[k] = acc[k] + v * v
    if top >= infbits:
        return 0.0, S_NONFINITE
    h = 16
    while h >= 1:
        for k in range(h):
            acc[k] = acc[k] + acc[k + h]
        h //= 2
    return math.sqrt(acc[0]), S_OK


@njit(cache=True)
def _scale_and_status(xb, lo, hi, l2, mant, absmask, infbits, dmax, acc):
    y, st = _bucket_scale(xb, lo, hi, l2, mant, absmask, infbits, acc)
    r = _round_up_f32(y) if st == S_OK else 0.0
    if st == S_OK and not r <= dmax:
        st = S_RANGE
    return r, st


# ----------------------------------------------------------------------------- quantization (8.4)

@njit(cache=True, inline="always")
def _level(xv, rr, sf, z):
    """Signed level of value xv (binary64) with scale rr > 0, s = sf, random word z."""
    a = abs(xv) / rr
    t = a * sf
    l = np.floor(t)
    p = t - l
    u = np.float64(_mix64(z) >> SH11) * TWO_M53
    # spec 8.4: zeta = s if l >= s, else l + (u < p).  Written as min(l + (u < p), s), the
    # same value (l + 1 <= s when l < s): one min instead of a compare and a select.  (With
    # the encoder's r >= |x| the clamp never changes anything, but it keeps this function
    # equal to the reference for any r.)
    zeta = min(l + 1.0 if u < p else l, sf)
    qi = np.int32(zeta)
    return -qi if xv < 0.0 else qi


@njit(cache=True)
def _quantize(xb, lo, hi, r, s, key, mant, q):
    """Levels of elements xb[lo:hi] (global indices) into q[0:hi-lo]."""
    if r == 0.0:
        for j in range(hi - lo):
            q[j] = 0
        return
    sf = np.float64(s)
    z = U64(key) + U64(lo + 1) * GAMMA      # the generator's state for element lo, then + GAMMA
    xs = xb[lo:hi]
    for j in range(hi - lo):
        q[j] = _level(_to_f64(xs[j], mant, xb), r, sf, z)
        z += GAMMA


# ----------------------------------------------------------------------------- dense packing (6.1)

@njit(cache=True)
def _pack(q, k, i0, w, codes):
    """Write the w-bit fields of q[0:k] for elements i0.. into the LSB-first stream ``codes``.

    A partial first byte is merged with what the previous call of the same chunk wrote; the
    last partial byte is written with zero high bits (the padding rule).
    """
    if w == 8:
        cs = codes[i0:i0 + k]
        for j in range(k):
            cs[j] = np.uint8(q[j] & 255)
        return
    if w == 4 and i0 % 2 == 0:
        cs = codes[i0 // 2:(i0 + k + 1) // 2]
        for j in range(k // 2):
            cs[j] = np.uint8((q[2 * j] & 15) | ((q[2 * j + 1] & 15) << 4))
        if k % 2:
            cs[k // 2] = np.uint8(q[k - 1] & 15)
        return
    if w == 2 and i0 % 4 == 0:
        cs = codes[i0 // 4:(i0 + k + 3) // 4]
        for j in range(k // 4):
            cs[j] = np.uint8((q[4 * j] & 3) | ((q[4 * j + 1] & 3) << 2)
                             | ((q[4 * j + 2] & 3) << 4) | ((q[4 * j + 3] & 3) << 6))
        rest = k % 4
        if rest:
            v = 0
            for t in range(rest):
                v |= (q[k - rest + t] & 3) << (2 * t)
            cs[k // 4] = np.uint8(v)
        return
    mask = U64((1 << w) - 1)
    bit = np.int64(i0) * w
    pos = bit >> 3
    nacc = bit & 7
    acc = U64(codes[pos]) & U64((1 << nacc) - 1) if nacc else U64(0)
    for j in range(k):
        acc |= (U64(np.int64(q[j])) & mask) << U64(nacc)
        nacc += w
        if nacc >= 32:                    # w <= 25 and nacc < 32 before: nacc + w < 64
            u = U64(pos)
            codes[u] = np.uint8(acc & U64(255))
            codes[u + U64(1)] = np.uint8((acc >> SH8) & U64(255))
            codes[u + U64(2)] = np.uint8((acc >> U64(16)) & U64(255))
            codes[u + U64(3)] = np.uint8((acc >> U64(24)) & U64(255))
            acc >>= SH32
            pos += 4
            nacc -= 32
    while nacc > 0:
        codes[pos] = np.uint8(acc & U64(255))
        acc >>= SH8
        pos += 1
        nacc -= 8


@njit(cache=True)
def _quantize_pack(xb, lo, hi, r, s, w, key, mant, codes, q):
    """Levels of elements lo..hi-1 (one bucket's, scale r) packed into the dense stream.

    Widths 8, 4 and 2 starting on a byte boundary are quantized and packed in one loop; any
    other case stages levels in ``q`` (BLOCK entries) and packs them with :func:`_pack`.
    """
    m = hi - lo
    sf = np.float64(s)
    z = U64(key) + U64(lo + 1) * GAMMA
    xs = xb[lo:hi]
    # the counter advances by GAMMA per element as an induction variable (cheaper than a
    # 64-bit multiply per element)
    if r != 0.0 and w == 8:
        cs = codes[lo:hi]
        for j in range(m):
            cs[j] = np.uint8(_level(_to_f64(xs[j], mant, xb), r, sf, z) & 255)
            z += GAMMA
        return
    if r != 0.0 and w == 4 and lo % 2 == 0:
        cs = codes[lo // 2:(hi + 1) // 2]
        z0 = z
        for j in range(m // 2):
            a = _level(_to_f64(xs[2 * j], mant, xb), r, sf, z0)
            b = _level(_to_f64(xs[2 * j + 1], mant, xb), r, sf, z0 + GAMMA)
            cs[j] = np.uint8((a & 15) | ((b & 15) << 4))
            z0 += GAMMA_2
        if m % 2:
            cs[m // 2] = np.uint8(_level(_to_f64(xs[m - 1], mant, xb), r, sf,
                                         z + U64(m - 1) * GAMMA) & 15)
        return
    if r != 0.0 and w == 2 and lo % 4 == 0:
        cs = codes[lo // 4:(hi + 3) // 4]
        z0 = z
        for j in range(m // 4):
            k = 4 * j
            a = _level(_to_f64(xs[k], mant, xb), r, sf, z0)
            b = _level(_to_f64(xs[k + 1], mant, xb), r, sf, z0 + GAMMA)
            c = _level(_to_f64(xs[k + 2], mant, xb), r, sf, z0 + GAMMA_2)
            e = _level(_to_f64(xs[k + 3], mant, xb), r, sf, z0 + GAMMA_3)
            cs[j] = np.uint8((a & 3) | ((b & 3) << 2) | ((c & 3) << 4) | ((e & 3) << 6))
            z0 += GAMMA_4
        rest = m % 4
        if rest:
            v = 0
            for t in range(rest):
                k = m - rest + t
                v |= (_level(_to_f64(xs[k], mant, xb), r, sf, z + U64(k) * GAMMA) & 3) << (2 * t)
            cs[m // 4] = np.uint8(v)
        return
    i = lo
    while i < hi:
        e = min(hi, i + BLOCK)
        _quantize(xb, i, e, r, s, key, mant, q)
        _pack(q, e - i, i, w, codes)
        i = e


@njit(cache=True)
def _dense_chunk(xb, n, d, s, w, l2, key, mant, absmask, infbits, dmax, b0, b1, out, soff,
                 codes, status, known):
    """Quantize and pack buckets b0..b1-1 (or, with ``known``, elements b0..b1-1 whose
    buckets' scales and statuses are already in ``out`` and ``status``)."""
    q = np.empty(BLOCK, dtype=np.int32)
    acc = np.empty(LANES, dtype=np.float64)
    if known:
        i = b0
        while i < b1:
            b = i // d
            e = min(b1, (b + 1) * d)
            r = np.float64(U32(_ld32(out, soff + 4 * b)).view(np.float32))
            if status[b] != S_OK:
                r = 0.0
            _quantize_pack(xb, i, e, r, s, w, key, mant, codes, q)
            i = e
        return
    for b in range(b0, b1):
        lo = b * d
        hi = min(lo + d, n)
        r, st = _scale_and_status(xb, lo, hi, l2, mant, absmask, infbits, dmax, acc)
        status[b] = st
        _st32(out, soff + 4 * b, np.float32(r).view(np.uint32))
        _quantize_pack(xb, lo, hi, r if st == S_OK else 0.0, s, w, key, mant, codes, q)


@njit(cache=True)
def _scales_chunk(xb, n, d, l2, mant, absmask, infbits, dmax, b0, b1, out, soff, status):
    acc = np.empty(LANES, dtype=np.float64)
    for b in range(b0, b1):
        lo = b * d
        hi = min(lo + d, n)
        r, st = _scale_and_status(xb, lo, hi, l2, mant, absmask, infbits, dmax, acc)
        status[b] = st
        _st32(out, soff + 4 * b, np.float32(r).view(np.uint32))


@njit(cache=True, parallel=True)
def _dense_encode_par(xb, n, d, s, w, l2, key, mant, absmask, infbits, dmax, bounds, out,
                      soff, codes, status, known):
    for c in prange(bounds.size - 1):
        _dense_chunk(xb, n, d, s, w, l2, key, mant, absmask, infbits, dmax, bounds[c],
                     bounds[c + 1], out, soff, codes, status, known)


@njit(cache=True)
def _dense_encode_seq(xb, n, d, s, w, l2, key, mant, absmask, infbits, dmax, bounds, out,
                      soff, codes, status, known):
    for c in range(bounds.size - 1):
        _dense_chunk(xb, n, d, s, w, l2, key, mant, absmask, infbits, dmax, bounds[c],
                     bounds[c + 1], out, soff, codes, status, known)


@njit(cache=True, parallel=True)
def _scales_par(xb, n, d, l2, mant, absmask, infbits, dmax, bounds, out, soff, status):
    for c in prange(bounds.size - 1):
        _scales_chunk(xb, n, d, l2, mant, absmask, infbits, dmax, bounds[c], bounds[c + 1],
                      out, soff, status)


@njit(cache=True)
def _scales_seq(xb, n, d, l2, mant, absmask, infbits, dmax, bounds, out, soff, status):
    for c in range(bounds.size - 1):
        _scales_chunk(xb, n, d, l2, mant, absmask, infbits, dmax, bounds[c], bounds[c + 1],
                      out, soff, status)


# ----------------------------------------------------------------------------- elias encoding (6.2)

@njit(cache=True, inline="always")
def _entry_bits(gap, a):
    """Bits of an elias entry with this gap and level magnitude a >= 1."""
    if gap < OMEGA_TABLE and a < OMEGA_TABLE:
        return np.int64(OMEGA_LEN[gap]) + 1 + np.int64(OMEGA_LEN[a])
    return _omega_len(gap) + 1 + _omega_len(a)


@njit(cache=True)
def _sparse(q, k):
    """True when under 1 in 8 of the levels q[0:k] is non-zero: then a loop that branches on
    v != 0 is well predicted and faster than the branch-free one."""
    nnz = 0
    for j in range(k):
        nnz += q[j] != 0
    return nnz * 8 < k


@njit(cache=True)
def _count_block(q, k, i, last, nbits, s):
    """Add the code bits of levels q[0:k] (elements i..i+k-1) to nbits; ``last`` is the
    position of the previous non-zero level."""
    top = OMEGA_TABLE - 1
    if s > top or _sparse(q, k):
        for j in range(k):
            v = q[j]
            if v != 0:
                nbits += _entry_bits(i + j - last, np.int64(abs(v)))
                last = i + j
        return nbits, last
    # branch-free on the zero test (see LEVEL_NONZERO); ``after`` = last + 1 is a running
    # max of (position + 1) * nz, a short dependency chain from one element to the next
    after = last + 1
    for j in range(k):
        li = U64(np.int64(q[j]) + LEVEL_OFFSET)
        nz = LEVEL_NONZERO[li]
        gap = i + j + 1 - after
        if gap > top:
            if nz:
                nbits += _omega_len(gap) + LEVEL_LEN[li]
                after = i + j + 1
            continue
        nbits += np.int64(OMEGA_LEN[U64(gap)]) * nz + LEVEL_LEN[li]
        after = max(after, (i + j + 1) * nz)
    return nbits, after - 1


@njit(cache=True)
def _elias_count_chunk(xb, n, d, s, l2, key, mant, absmask, infbits, dmax, b0, b1, scales,
                       lengths, status):
    """Pass 1: scale, status and exact code length of buckets b0..b1-1."""
    q = np.empty(BLOCK, dtype=np.int32)
    acc = np.empty(LANES, dtype=np.float64)
    for b in range(b0, b1):
        lo = b * d
        hi = min(lo + d, n)
        r, st = _scale_and_status(xb, lo, hi, l2, mant, absmask, infbits, dmax, acc)
        status[b] = st
        scales[b] = np.float32(r)
        nbits = np.int64(0)
        if st == S_OK and r != 0.0:
            last = np.int64(lo - 1)
            i = lo
            while i < hi:
                e = min(hi, i + BLOCK)
                _quantize(xb, i, e, r, s, key, mant, q)
                nbits, last = _count_block(q, e - i, i, last, nbits, s)
                i = e
        lengths[b] = U32(nbits)


@njit(cache=True, inline="always")
def _append(acc, nacc, code, length):
    """MSB-first bit accumulator: ``acc`` holds ``nacc`` <= 7 pending bits at its top; append
    ``length`` <= 57 bits of ``code`` (0 bits is a no-op)."""
    return acc | (((U64(code) << U64(1)) << U64(63 - length)) >> U64(nacc)), nacc + length


@njit(cache=True)
def _store_tail(codes, pos, end, acc):
    """Store the top bytes of ``acc`` at ``pos`` but none at or past ``end``."""
    for t in range(min(8, end - pos)):
        codes[pos + t] = np.uint8((acc >> U64(56 - 8 * t)) & U64(255))


@njit(cache=True)
def _flush(codes, pos, end, acc, nacc):
    """Store the 8 bytes of ``acc`` at ``pos`` (clipped at ``end``, the bucket's end), then
    advance by the whole bytes written.  Bytes past the valid bits are zero, and later
    stores rewrite them."""
    if pos + 8 <= end:
        _st64be(codes, pos, acc)
    else:
        _store_tail(codes, pos, end, acc)
    adv = nacc >> 3
    return pos + adv, acc << U64(8 * adv), nacc & 7


@njit(cache=True)
def _write_entry_slow(codes, pos, end, acc, nacc, gap, neg, a):
    """An entry with a gap or level of OMEGA_TABLE or more (codes of up to 36 bits)."""
    code, length = _omega_code(gap)
    acc, nacc = _append(acc, nacc, code, length)
    pos, acc, nacc = _flush(codes, pos, end, acc, nacc)
    acc, nacc = _append(acc, nacc, neg, 1)
    code, length = _omega_code(a)
    acc, nacc = _append(acc, nacc, code, length)
    return _flush(codes, pos, end, acc, nacc)


@njit(cache=True)
def _write_block(q, k, i, last, codes, pos, end, acc, nacc, s):
    """Write the entries of levels q[0:k] (elements i..i+k-1).

    Three loops: any level (s >= OMEGA_TABLE), sparse blocks (see _sparse: a branch skips
    zeros), and dense blocks (branch-free on the zero test).  Array accesses stay in these
    loop bodies: a helper taking ``codes`` would cost reference-count calls per element."""
    top = OMEGA_TABLE - 1
    if s > top or _sparse(q, k):
        for j in range(k):
            v = q[j]
            if v == 0:
                continue
            gap = i + j - last
            a = np.int64(abs(v))
            neg = U64(1) if v < 0 else U64(0)
            last = i + j
            if (gap > top) | (a > top):
                pos, acc, nacc = _write_entry_slow(codes, pos, end, acc, nacc, gap, neg, a)
                continue
            li = U64(np.int64(v) + LEVEL_OFFSET)
            ll = LEVEL_LEN[li]
            acc, nacc = _append(acc, nacc, (U64(OMEGA_CODE[U64(gap)]) << U64(ll)) | LEVEL_CODE[li],
                                np.int64(OMEGA_LEN[U64(gap)]) + ll)
            pos, acc, nacc = _flush(codes, pos, end, acc, nacc)
        return last, pos, acc, nacc
    after = last + 1                     # as in _count_block
    for j in range(k):
        li = U64(np.int64(q[j]) + LEVEL_OFFSET)
        gap = i + j + 1 - after
        nz = LEVEL_NONZERO[li]
        if gap > top:
            if nz:
                pos, acc, nacc = _write_entry_slow(codes, pos, end, acc, nacc, gap,
                                                   U64(q[j] < 0), np.int64(abs(q[j])))
                after = i + j + 1
            continue
        ll = LEVEL_LEN[li]
        code = ((U64(OMEGA_CODE[U64(gap)]) << U64(ll)) | LEVEL_CODE[li]) * U64(nz)
        acc, nacc = _append(acc, nacc, code, np.int64(OMEGA_LEN[U64(gap)]) * nz + ll)
        if pos + 8 <= end:
            u = U64(pos)
            codes[u] = np.uint8(acc >> SH56)
            codes[u + U64(1)] = np.uint8((acc >> U64(48)) & U64(255))
            codes[u + U64(2)] = np.uint8((acc >> U64(40)) & U64(255))
            codes[u + U64(3)] = np.uint8((acc >> SH32) & U64(255))
            codes[u + U64(4)] = np.uint8((acc >> U64(24)) & U64(255))
            codes[u + U64(5)] = np.uint8((acc >> U64(16)) & U64(255))
            codes[u + U64(6)] = np.uint8((acc >> SH8) & U64(255))
            codes[u + U64(7)] = np.uint8(acc & U64(255))
        else:
            _store_tail(codes, pos, end, acc)
        adv = nacc >> 3
        pos += adv
        acc <<= U64(8 * adv)
        nacc &= 7
        after = max(after, (i + j + 1) * nz)
    return after - 1, pos, acc, nacc


@njit(cache=True)
def _elias_write_chunk(xb, n, d, s, key, mant, b0, b1, scales, lengths, codes, off):
    """Pass 2: write buckets b0..b1-1 from byte ``off`` of ``codes``."""
    q = np.empty(BLOCK, dtype=np.int32)
    for b in range(b0, b1):
        nbits = np.int64(lengths[b])
        nbytes = (nbits + 7) // 8
        if nbytes == 0:
            continue
        lo = b * d
        hi = min(lo + d, n)
        r = np.float64(scales[b])
        end = off + nbytes
        pos = off
        acc = U64(0)
        nacc = np.int64(0)
        last = np.int64(lo - 1)
        i = lo
        while i < hi:
            e = min(hi, i + BLOCK)
            _quantize(xb, i, e, r, s, key, mant, q)
            last, pos, acc, nacc = _write_block(q, e - i, i, last, codes, pos, end, acc, nacc,
                                                s)
            i = e
        off = end


@njit(cache=True, parallel=True)
def _elias_count_par(xb, n, d, s, l2, key, mant, absmask, infbits, dmax, bounds, scales,
                     lengths, status):
    for c in prange(bounds.size - 1):
        _elias_count_chunk(xb, n, d, s, l2, key, mant, absmask, infbits, dmax, bounds[c],
                           bounds[c + 1], scales, lengths, status)


@njit(cache=True)
def _elias_count_seq(xb, n, d, s, l2, key, mant, absmask, infbits, dmax, bounds, scales,
                     lengths, status):
    for c in range(bounds.size - 1):
        _elias_count_chunk(xb, n, d, s, l2, key, mant, absmask, infbits, dmax, bounds[c],
                           bounds[c + 1], scales, lengths, status)


@njit(cache=True, parallel=True)
def _elias_write_par(xb, n, d, s, key, mant, bounds, scales, lengths, codes, offs):
    for c in prange(bounds.size - 1):
        _elias_write_chunk(xb, n, d, s, key, mant, bounds[c], bounds[c + 1], scales, lengths,
                           codes, offs[c])


@njit(cache=True)
def _elias_write_seq(xb, n, d, s, key, mant, bounds, scales, lengths, codes, offs):
    for c in range(bounds.size - 1):
        _elias_write_chunk(xb, n, d, s, key, mant, bounds[c], bounds[c + 1], scales, lengths,
                           codes, offs[c])


@njit(cache=True)
def _elias_layout(out, soff, toff, scales, lengths, bounds, offs):
    """Copy scales and bit lengths into the message; byte offset of each chunk's codes."""
    total = np.int64(0)
    c = 0
    for b in range(scales.size):
        if b == bounds[c]:
            offs[c] = total
            c += 1
        _st32(out, soff + 4 * b, np.float32(scales[b]).view(np.uint32))
        _st32(out, toff + 4 * b, lengths[b])
        total += (np.int64(lengths[b]) + 7) // 8
    return total


@njit(cache=True)
def _elias_total(lengths):
    total = np.int64(0)
    for b in range(lengths.size):
        total += (np.int64(lengths[b]) + 7) // 8
    return total


# ----------------------------------------------------------------------------- decoding (9)

@njit(cache=True)
def _check_scales(msg, soff, nb, dmax_bits):
    """Index of the first invalid scale (negative, NaN, infinite, above the dtype max), or -1.

    For float32 bit patterns, ``bits <= dmax_bits`` holds exactly for +0.0 .. dmax."""
    for b in range(nb):
        if _ld32(msg, soff + 4 * b) > dmax_bits:
            return b
    return -1


@njit(cache=True)
def _elias_check_table(msg, toff, nb, G, offs):
    """Sum of the buckets' code bytes (spec 5.3); fills offs[c] with the first code byte of
    chunk c (buckets c*G ..) and offs[-1] with the total, which it returns."""
    total = np.int64(0)
    for b in range(nb):
        if b % G == 0:
            offs[b // G] = total
        total += (np.int64(_ld32(msg, toff + 4 * b)) + 7) // 8
    offs[(nb + G - 1) // G] = total
    return total


@njit(cache=True)
def _fill_table(tab, r, s, mant, emin):
    sf = np.float64(s)
    for k in range(s + 1):
        tab[k] = _mag_bits((r * np.float64(k)) / sf, mant, emin, tab)


@njit(cache=True)
def _field(msg, coff, clen, j, w):
    """Signed value of dense field j (w <= 25 bits, so it lies within 4 bytes)."""
    bit = np.int64(j) * w
    p = coff + (bit >> 3)
    if p + 4 <= coff + clen:
        raw = np.int64(_ld32(msg, p))
    else:
        raw = np.int64(0)
        for t in range(coff + clen - p):
            raw |= np.int64(msg[p + t]) << (8 * t)
    f = (raw >> (bit & 7)) & ((np.int64(1) << w) - 1)
    return f - (np.int64(1) << w) if f >= (np.int64(1) << (w - 1)) else f


@njit(cache=True)
def _dense_decode_chunk(msg, soff, coff, clen, n, d, s, w, mant, emin, i0, i1, out):
    """Decode elements i0..i1-1 (i0 a multiple of 8).  Returns (error, where).

    Values are computed, not looked up: v = RN64(RN64(r * q) / s) with the sign carried by
    q (the product is exact and rounding is symmetric, so this equals spec 9's form), then
    rounded to the output type; the loops below vectorize, which on AVX-512 CPUs is faster
    than a per-bucket table of the 2s+1 values."""
    sf = np.float64(s)
    i = i0
    while i < i1:
        b = i // d
        e = min(i1, (b + 1) * d)
        r = np.float64(U32(_ld32(msg, soff + 4 * b)).view(np.float32))
        smax = np.int64(s) if r != 0.0 else np.int64(0)
        bad = False
        j = i                                   # first element left for the general loop
        per = 8 // w if w in (2, 4, 8) else 0   # fields per byte
        if per and (np.int64(i) * w) % 8 == 0:
            nbytes = (e - i) // per
            ms = msg[coff + (np.int64(i) * w >> 3):coff + (np.int64(i) * w >> 3) + nbytes]
            os = out[i:i + nbytes * per]
            if w == 8:
                for k in range(nbytes):
                    v = np.int64(np.int8(ms[k]))
                    bad |= abs(v) > smax
                    os[k] = _out_bits((r * np.float64(v)) / sf, mant, emin, out)
            elif w == 4:
                for k in range(nbytes):
                    c = np.int64(ms[k])
                    lo = (c & 15) - ((c & 8) << 1)
                    hi = (c >> 4) - ((c & 128) >> 3)
                    bad |= (abs(lo) > smax) | (abs(hi) > smax)
                    os[2 * k] = _out_bits((r * np.float64(lo)) / sf, mant, emin, out)
                    os[2 * k + 1] = _out_bits((r * np.float64(hi)) / sf, mant, emin, out)
            else:
                for k in range(nbytes):
                    c = np.int64(ms[k])
                    f0 = (c & 3) - ((c & 2) << 1)
                    f1 = ((c >> 2) & 3) - ((c >> 1) & 4)
                    f2 = ((c >> 4) & 3) - ((c >> 3) & 4)
                    f3 = (c >> 6) - ((c >> 5) & 4)
                    bad |= ((abs(f0) > smax) | (abs(f1) > smax) | (abs(f2) > smax)
                            | (abs(f3) > smax))
                    os[4 * k] = _out_bits((r * np.float64(f0)) / sf, mant, emin, out)
                    os[4 * k + 1] = _out_bits((r * np.float64(f1)) / sf, mant, emin, out)
                    os[4 * k + 2] = _out_bits((r * np.float64(f2)) / sf, mant, emin, out)
                    os[4 * k + 3] = _out_bits((r * np.float64(f3)) / sf, mant, emin, out)
            j = i + nbytes * per
        # any width: a 4-byte little-endian load per field (w + 7 <= 32 bits), inline here so
        # that no helper taking ``msg`` is called per element; the last fields, whose 4 bytes
        # would reach past the codes, go through _field
        fast_end = max(j, min(e, ((clen - 4) * 8) // w + 1 if clen >= 4 else 0))
        mask = (np.int64(1) << w) - 1
        half = np.int64(1) << (w - 1)
        for t in range(j, fast_end):
            bit = np.int64(t) * w
            u = U64(coff + (bit >> 3))
            raw = np.int64(U32(msg[u]) | (U32(msg[u + U64(1)]) << U32(8))
                           | (U32(msg[u + U64(2)]) << U32(16)) | (U32(msg[u + U64(3)]) << U32(24)))
            f = (raw >> (bit & 7)) & mask
            v = f - (mask + 1) if f >= half else f
            bad |= abs(v) > smax
            out[t] = _out_bits((r * np.float64(v)) / sf, mant, emin, out)
        for t in range(max(j, fast_end), e):
            v = _field(msg, coff, clen, t, w)
            bad |= abs(v) > smax
            out[t] = _out_bits((r * np.float64(v)) / sf, mant, emin, out)
        if bad:
            for t in range(i, e):
                a = abs(_field(msg, coff, clen, t, w))
                if a > s:
                    return E_DENSE_FIELD, np.int64(t)
                if a > smax:
                    return E_ZERO_SCALE, np.int64(b)
        i = e
    return E_OK, np.int64(0)


@njit(cache=True, parallel=True)
def _dense_decode_par(msg, soff, coff, clen, n, d, s, w, mant, emin, step, out, errs, where):
    nc = errs.size
    for c in prange(nc):
        i0 = c * step
        i1 = min(n, i0 + step)
        err, at = _dense_decode_chunk(msg, soff, coff, clen, n, d, s, w, mant, emin, i0, i1,
                                      out)
        errs[c] = err
        where[c] = at


@njit(cache=True)
def _dense_decode_seq(msg, soff, coff, clen, n, d, s, w, mant, emin, step, out, errs, where):
    nc = errs.size
    for c in range(nc):
        i0 = c * step
        i1 = min(n, i0 + step)
        err, at = _dense_decode_chunk(msg, soff, coff, clen, n, d, s, w, mant, emin, i0, i1,
                                      out)
        errs[c] = err
        where[c] = at
        if err != E_OK:
            return


@njit(cache=True)
def _peek(msg, p, end):
    """64 bits of msg starting at byte p, MSB first; bytes at or past ``end`` read as 0."""
    if p + 8 <= end:
        return _ld64be(msg, p)
    v = U64(0)
    for t in range(8):
        v <<= SH8
        if p + t < end:
            v |= U64(msg[p + t])
    return v


@njit(cache=True)
def _omega_slow(msg, base, pos, limit, end):
    """Decode one omega code at bit ``pos`` of the bucket starting at byte ``base``.

    Returns (value, new pos, error)."""
    value = np.int64(1)
    while True:
        if pos >= limit:
            return value, pos, E_PAST_END
        bit = (msg[base + (pos >> 3)] >> (7 - (pos & 7))) & 1
        pos += 1
        if bit == 0:
            return value, pos, E_OK
        if value + 1 > 25:
            return value, pos, E_OVERLONG
        if pos + value > limit:
            return value, pos, E_PAST_END
        window = _peek(msg, base + (pos >> 3), end) << U64(pos & 7)
        group = (U64(1) << U64(value)) | (window >> U64(64 - value))
        pos += value
        value = np.int64(group)


@njit(cache=True)
def _elias_decode_chunk(msg, soff, toff, coff, clen, n, d, s, mant, emin, signbit, b0, b1,
                        off, out):
    """Decode buckets b0..b1-1 whose codes start at byte ``off`` of the codes.

    Returns (error, bucket)."""
    tab = np.empty(TABLE_MAX + 1, dtype=out.dtype)
    sf = np.float64(s)
    end = coff + clen
    for b in range(b0, b1):
        lo = b * d
        m = min(d, n - lo)
        L = np.int64(_ld32(msg, toff + 4 * b))
        r = np.float64(U32(_ld32(msg, soff + 4 * b)).view(np.float32))
        if L > 73 * m:
            return E_TOO_LONG, b
        if L > 0 and r == 0.0:
            return E_ZERO_SCALE, b
        base = coff + off
        nbytes = (L + 7) // 8
        off += nbytes
        use_tab = s <= TABLE_MAX
        if use_tab and L > 0:
            _fill_table(tab, r, s, mant, emin)
        os = out[lo:lo + m]
        for j in range(m):
            os[j] = 0
        pos = np.int64(0)
        p = np.int64(-1)
        while pos < L:
            # 64 bits from bit pos (at least 57 valid); whole entries of up to 12 bits are
            # decoded from this register by one ENTRY_DEC12 lookup each
            bp = base + (pos >> 3)
            if bp + 8 <= end:
                u = U64(bp)
                window = ((U64(msg[u]) << SH56) | (U64(msg[u + U64(1)]) << U64(48))
                          | (U64(msg[u + U64(2)]) << U64(40)) | (U64(msg[u + U64(3)]) << SH32)
                          | (U64(msg[u + U64(4)]) << U64(24)) | (U64(msg[u + U64(5)]) << U64(16))
                          | (U64(msg[u + U64(6)]) << SH8) | U64(msg[u + U64(7)]))
            else:
                window = _peek(msg, bp, end)
            avail = 64 - (pos & 7)
            window <<= U64(pos & 7)
            slow = True
            while avail >= 12 and pos < L:
                ent = ENTRY_DEC12[window >> SH52]
                ln = np.int64(ent & U32(255))
                if ent == 0 or pos + ln > L:
                    break
                p += np.int64((ent >> U32(8)) & U32(255))
                zeta = np.int64((ent >> U32(16)) & U32(255))
                if p >= m:
                    return E_GAP, b
                if zeta > s:
                    return E_LEVEL, b
                mag = tab[zeta] if use_tab else _mag_bits((r * np.float64(zeta)) / sf, mant,
                                                          emin, out)
                os[p] = mag | signbit if ent >> U32(24) else mag
                pos += ln
                avail -= ln
                window <<= U64(ln)
            else:
                slow = False
            if not slow or pos >= L:
                continue
            # an entry longer than 12 bits, or one the declared length cuts: bit by bit
            gap, pos, err = _omega_slow(msg, base, pos, L, end)
            if err != E_OK:
                return err, b
            p += gap
            if p >= m:
                return E_GAP, b
            if pos >= L:
                return E_PAST_END, b
            neg = ((msg[base + (pos >> 3)] >> (7 - (pos & 7))) & 1) != 0
            pos += 1
            zeta, pos, err = _omega_slow(msg, base, pos, L, end)
            if err != E_OK:
                return err, b
            if zeta > s:
                return E_LEVEL, b
            mag = tab[zeta] if use_tab else _mag_bits((r * np.float64(zeta)) / sf, mant, emin,
                                                      out)
            os[p] = mag | signbit if neg else mag
        if L & 7:
            if msg[base + nbytes - 1] & ((1 << (8 - (L & 7))) - 1):
                return E_PADDING, b
    return E_OK, np.int64(0)


@njit(cache=True, parallel=True)
def _elias_decode_par(msg, soff, toff, coff, clen, n, d, s, mant, emin, signbit, G, offs, out,
                      errs, where):
    nb = (n + d - 1) // d
    for c in prange(errs.size):
        b0 = c * G
        b1 = min(nb, b0 + G)
        err, at = _elias_decode_chunk(msg, soff, toff, coff, clen, n, d, s, mant, emin,
                                      signbit, b0, b1, offs[c], out)
        errs[c] = err
        where[c] = at


@njit(cache=True)
def _elias_decode_seq(msg, soff, toff, coff, clen, n, d, s, mant, emin, signbit, G, offs, out,
                      errs, where):
    nb = (n + d - 1) // d
    for c in range(errs.size):
        b0 = c * G
        b1 = min(nb, b0 + G)
        err, at = _elias_decode_chunk(msg, soff, toff, coff, clen, n, d, s, mant, emin,
                                      signbit, b0, b1, offs[c], out)
        errs[c] = err
        where[c] = at
        if err != E_OK:
            return


@njit(cache=True)
def _elias_code_bits(msg, toff, nb):
    """(sum of L_b, sum of the code bytes ceil(L_b / 8))."""
    bits = np.int64(0)
    nbytes = np.int64(0)
    for b in range(nb):
        L = np.int64(_ld32(msg, toff + 4 * b))
        bits += L
        nbytes += (L + 7) // 8
    return bits, nbytes


# ============================================================================= Python side

def _parallel(n):
    return n >= PARALLEL_MIN and numba.get_num_threads() > 1


def _bucket_bounds(nb, d):
    """Chunk boundaries in buckets: about CHUNK elements each, first elements multiples of 8."""
    g = max(1, CHUNK // d)
    g0 = 8 // math.gcd(d, 8)
    g = -(-g // g0) * g0
    return np.append(np.arange(0, nb, g, dtype=np.int64), np.int64(nb)), g


def _element_bounds(n):
    step = CHUNK
    return np.append(np.arange(0, n, step, dtype=np.int64), np.int64(n))


def _readonly(a):
    v = a.view()
    v.flags.writeable = False
    return v


def flat_bits(arr, dtype):
    """The input as a flat, aligned, read-only array of raw bits (a view when possible)."""
    info = DTYPES[dtype]
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if not (arr.flags.c_contiguous and arr.flags.aligned):
        arr = np.ascontiguousarray(arr)
        if not arr.flags.aligned:                   # pragma: no cover - numpy aligns copies
            arr = arr.copy()
    return _readonly(arr.reshape(-1).view(info.bits))


class _Buffer:
    """Where an encoder writes: a new bytes object filled in place, or the caller's ``out``."""

    def __init__(self, size, out=None):
        self.size = size
        self.result = None
        if out is not None:
            self.array = out[:size]
            return
        self.result = _new_bytes(size)
        if self.result is not None:
            self.array = np.frombuffer(self.result, dtype=np.uint8)
            self.array = _writable_alias(self.array)
        else:                                          # pragma: no cover - non-CPython
            self.array = np.empty(size, dtype=np.uint8)

    def finish(self, out):
        if out is not None:
            return memoryview(out)[:self.size]
        if self.result is not None:
            return self.result
        return self.array.tobytes()                    # pragma: no cover - non-CPython


def _new_bytes(size):
    """A new, uninitialised ``bytes`` of ``size`` bytes (CPython: PyBytes_FromStringAndSize
    with a NULL source, whose contents the C API lets its creator write before sharing)."""
    if sys.implementation.name != "cpython" or size < 2:
        return None
    import ctypes
    fn = ctypes.pythonapi.PyBytes_FromStringAndSize
    fn.restype = ctypes.py_object
    fn.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)
    return fn(None, size)


def _writable_alias(readonly_array):
    import ctypes
    n = readonly_array.size
    addr = readonly_array.ctypes.data
    return np.ctypeslib.as_array((ctypes.c_uint8 * n).from_address(addr))


def encoded_size(shape, params):
    """Exact message size for dense coding; the worst case for elias (all levels = s)."""
    n = 1
    for extent in shape:
        n *= int(extent)
    d, s = params.bucket_size, params.levels
    nb = fmt.num_buckets(n, d)
    header = fmt.FIXED_HEADER_LENGTH + 8 * len(shape)
    crc = fmt.CRC_LENGTH if params.checksum else 0
    if params.coding == "dense":
        return header + 4 * nb + fmt.dense_codes_length(n, s) + crc
    per = 2 + len(_omega_str(s))       # bits per element when every level is +-s, gaps 1
    full, last = divmod(n, d)
    codes = full * -(-(d * per) // 8) + (-(-(last * per) // 8) if last else 0)
    return header + 8 * nb + codes + crc


def _raise_encode_status(status, x_bits, dtype, d, params):
    bad = np.flatnonzero(status == S_NONFINITE)
    if bad.size:
        b = int(bad[0])
        info = DTYPES[dtype]
        seg = x_bits[b * d:(b + 1) * d]
        i = b * d + int(np.argmax((seg & info.absmask) >= info.infbits))
        value = float(_value_of(x_bits[i], dtype))
        raise NonFiniteError(f"input element {i} is {value!r}: QSGD cannot encode NaN or "
                             f"infinite values (spec 8.1)")
    b = int(np.flatnonzero(status == S_RANGE)[0])
    limit = np.float32(fmt.DTYPE_MAX[dtype])
    hint = ("float64 input must lie within the float32 range" if dtype == "float64"
            and params.scale == "max" else "use scale='max' or a smaller bucket_size")
    raise NonFiniteError(f"bucket {b}'s {params.scale} scale exceeds {float(limit)!r}, the "
                         f"largest scale a {dtype} message can carry; {hint} (spec 8.2)")


def _value_of(bits, dtype):
    if dtype == "float16":
        return np.uint16(bits).view(np.float16)
    if dtype == "bfloat16":
        return (np.uint32(bits) << np.uint32(16)).view(np.float32)
    return bits.view(np.float32 if dtype == "float32" else np.float64)


def encode_array(arr, params, *, out=None):
    """Encode a host array (any shape, strides, supported dtype): spec section 8.

    ``out``: optional writable uint8 array receiving the message; then a memoryview of the
    bytes written is returned, else a new ``bytes``.
    """
    dtype = fmt.dtype_name(arr.dtype)
    shape = arr.shape
    xb = flat_bits(arr, dtype)
    return encode_bits(xb, dtype, shape, params, out=out)


def encode_bits(xb, dtype, shape, params, *, out=None, parallel=None):
    """Encode raw bit patterns ``xb`` (flat, aligned uint16/32/64) of ``dtype`` and ``shape``."""
    info = DTYPES[dtype]
    n, d, s = xb.size, params.bucket_size, params.levels
    nb = fmt.num_buckets(n, d)
    l2 = params.scale == "l2"
    key = U64(_seed_key(U64(params.seed)))     # np.uint64: a Python int would type as int64
    par = _parallel(n) if parallel is None else parallel
    header_length = fmt.FIXED_HEADER_LENGTH + 8 * len(shape)
    status = np.zeros(nb, dtype=np.int8)
    bounds, g = _bucket_bounds(nb, d)
    if params.coding == "dense":
        w = fmt.dense_width(s)
        body = 4 * nb + fmt.dense_codes_length(n, s)
        total = header_length + body + (fmt.CRC_LENGTH if params.checksum else 0)
        buf = _Buffer(total, _check_encode_out(out, total))
        arr = buf.array
        codes = arr[header_length + 4 * nb:header_length + body]
        if d > CHUNK and par:
            # few, huge buckets: scales first (per bucket), then levels in element chunks
            bkt = np.arange(nb + 1, dtype=np.int64)
            (_scales_par if par else _scales_seq)(xb, n, d, l2, info.mant, info.absmask,
                                                  info.infbits, info.dmax, bkt, arr,
                                                  header_length, status)
            kernel = _dense_encode_par
            kernel(xb, n, d, s, w, l2, key, info.mant, info.absmask, info.infbits, info.dmax,
                   _element_bounds(n), arr, header_length, codes, status, True)
        else:
            kernel = _dense_encode_par if par else _dense_encode_seq
            kernel(xb, n, d, s, w, l2, key, info.mant, info.absmask, info.infbits, info.dmax,
                   bounds, arr, header_length, codes, status, False)
        if status.any():
            _raise_encode_status(status, xb, dtype, d, params)
    else:
        scales = np.empty(nb, dtype=np.float32)
        lengths = np.empty(nb, dtype=np.uint32)
        (_elias_count_par if par else _elias_count_seq)(
            xb, n, d, s, l2, key, info.mant, info.absmask, info.infbits, info.dmax, bounds,
            scales, lengths, status)
        if status.any():
            _raise_encode_status(status, xb, dtype, d, params)
        code_bytes = int(_elias_total(lengths))
        body = 8 * nb + code_bytes
        total = header_length + body + (fmt.CRC_LENGTH if params.checksum else 0)
        buf = _Buffer(total, _check_encode_out(out, total))
        arr = buf.array
        offs = np.empty(bounds.size, dtype=np.int64)
        _elias_layout(arr, header_length, header_length + 4 * nb, scales, lengths, bounds,
                      offs)
        codes = arr[header_length + 8 * nb:header_length + body]
        (_elias_write_par if par else _elias_write_seq)(xb, n, d, s, key, info.mant, bounds,
                                                        scales, lengths, codes, offs)
    header = fmt.pack_header(dtype=dtype, scale=params.scale, coding=params.coding,
                             shape=shape, bucket_size=d, levels=s, seed=params.seed,
                             body_length=body, checksum=params.checksum)
    arr[:header_length] = np.frombuffer(header, dtype=np.uint8)
    if params.checksum:
        end = header_length + body
        _st32(arr, end, U32(crc32(arr[:end])))
    return buf.finish(out)


def _check_encode_out(out, total):
    if out is None:
        return None
    if out.size < total:
        raise ParameterError(f"out holds {out.size} bytes but the message needs {total}; size "
                             f"it with qsgd_codec.max_encoded_size(...)")
    return out


def message_array(data):
    """The message as a flat read-only uint8 array (no copy)."""
    mv = fmt.byte_view(data)
    return _readonly(np.frombuffer(mv, dtype=np.uint8))


def verify_checksum(msg, header):
    if not header.has_checksum:
        return
    total = msg.size
    stored = int(_ld32(msg, total - fmt.CRC_LENGTH))
    actual = crc32(msg[:total - fmt.CRC_LENGTH])
    if stored != actual:
        raise ChecksumError(f"CRC-32 mismatch: stored 0x{stored:08x}, computed 0x{actual:08x}")


_MESSAGES = {
    E_OVERLONG: "an elias omega group longer than any valid gap or level (25 bits)",
    E_PAST_END: "an elias code runs past the bucket's declared bit length",
    E_GAP: "an elias gap reaches past the end of its bucket",
    E_LEVEL: "an elias level is above s",
    E_PADDING: "non-zero padding bits after an elias bucket",
    E_TOO_LONG: "an elias bucket declares more code bits than its elements can use",
}


def _raise_decode(errs, where, msg, header):
    c = int(np.flatnonzero(errs != E_OK)[0])
    err, at = int(errs[c]), int(where[c])
    if err == E_DENSE_FIELD:
        raise CorruptDataError(f"dense field {at} holds a level outside "
                               f"-{header.levels}..{header.levels}")
    if err == E_ZERO_SCALE:
        raise CorruptDataError(f"bucket {at} has scale 0 but non-zero levels")
    raise CorruptDataError(f"bucket {at}: {_MESSAGES[err]}")


def decode_into(header, msg, out_bits, *, parallel=None):
    """Decode a parsed, checksum-verified message into the flat raw-bits array ``out_bits``."""
    info = DTYPES[header.dtype]
    n, d, s = header.n, header.bucket_size, header.levels
    nb = header.num_buckets
    soff = header.scales_offset
    bad = int(_check_scales(msg, soff, nb, info.dmax_bits))
    if bad >= 0:
        value = np.frombuffer(msg[soff + 4 * bad:soff + 4 * bad + 4].tobytes(), "<f4")[0]
        raise CorruptDataError(f"scale of bucket {bad} is {value!r}: a scale must be +0.0 or "
                               f"a positive finite float32 no larger than the {header.dtype} "
                               f"maximum")
    par = _parallel(n) if parallel is None else parallel
    coff = header.codes_offset
    clen = header.header_length + header.body_length - coff
    if header.coding == "dense":
        w = header.width
        if n:
            pad = n * w % 8
            if pad and msg[coff + clen - 1] >> pad:
                raise CorruptDataError("non-zero padding bits after the last dense field")
        nc = -(-n // CHUNK)
        errs = np.zeros(nc, dtype=np.int8)
        where = np.zeros(nc, dtype=np.int64)
        (_dense_decode_par if par else _dense_decode_seq)(
            msg, soff, coff, clen, n, d, s, w, info.mant, info.emin, CHUNK, out_bits, errs,
            where)
    else:
        _, g = _bucket_bounds(nb, d)
        nc = -(-nb // g)
        offs = np.empty(nc + 1, dtype=np.int64)
        total = _elias_check_table(msg, header.table_offset, nb, g, offs)
        if total != clen:
            raise LengthError(f"elias bit lengths add up to {int(total)} code bytes, but the "
                              f"body holds {clen}")
        errs = np.zeros(nc, dtype=np.int8)
        where = np.zeros(nc, dtype=np.int64)
        (_elias_decode_par if par else _elias_decode_seq)(
            msg, soff, header.table_offset, coff, clen, n, d, s, info.mant, info.emin,
            info.signbit, g, offs, out_bits, errs, where)
    if errs.any():
        _raise_decode(errs, where, msg, header)
    return out_bits


def elias_code_bits(msg, header):
    """Total elias code bits of a parsed message, after checking the table sum (5.3)."""
    bits, nbytes = _elias_code_bits(msg, header.table_offset, header.num_buckets)
    clen = header.header_length + header.body_length - header.codes_offset
    if nbytes != clen:
        raise LengthError(f"elias bit lengths add up to {int(nbytes)} code bytes, but the "
                          f"body holds {clen}")
    return int(bits)


# ----------------------------------------------------------------------------- warm-up

def warmup():
    """Compile (or load from numba's cache) every kernel: both codings, both scalings, every
    dtype, serial and parallel drivers, and the CRC.  Returns {name: seconds}."""
    from .format import EncodeParams
    timings = {}
    start = time.perf_counter()
    t = time.perf_counter()
    crc32(np.zeros(1024, dtype=np.uint8))
    timings["crc32"] = time.perf_counter() - t
    rng = np.random.default_rng(0)
    for dtype, info in DTYPES.items():
        x = rng.standard_normal(96).astype(np.float32)
        if dtype == "bfloat16":
            bits = (x.view(np.uint32) >> 16).astype(np.uint16)
        elif dtype == "float16":
            bits = x.astype(np.float16).view(np.uint16)
        else:
            bits = x.astype(dtype).view(info.bits)
        bits = _readonly(bits)
        for coding in ("dense", "elias"):
            t = time.perf_counter()
            for par in (False, True):
                for scale, levels, d in (("max", 7, 16), ("l2", 127, 40), ("max", 5, 8)):
                    params = EncodeParams(levels, d, scale, coding, 1, True)
                    message = encode_bits(bits, dtype, bits.shape, params, parallel=par)
                    msg = message_array(message)
                    header = fmt.parse_header(message, max_elements=None,
                                              verify_checksum=False)
                    verify_checksum(msg, header)
                    decode_into(header, msg, np.empty(header.n, info.bits),
                                parallel=par)
            timings[f"{coding}/{dtype}"] = time.perf_counter() - t
    # the two-phase path for buckets larger than a chunk
    t = time.perf_counter()
    big = _readonly(np.zeros(CHUNK + 8, dtype=np.uint32))
    for dtype in DTYPES:
        xb = big if DTYPES[dtype].bits == np.uint32 else _readonly(
            np.zeros(CHUNK + 8, dtype=DTYPES[dtype].bits))
        encode_bits(xb, dtype, xb.shape, EncodeParams(7, CHUNK + 8, "max", "dense", 0, False),
                    parallel=True)
    timings["dense/large-buckets"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - start
    return timings
