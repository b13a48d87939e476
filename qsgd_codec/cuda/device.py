"""Device functions the kernels share: loads and conversions, rounding and quantisation,
block scans, bit I/O, Elias omega lengths and defect reports.

Every binary64 product, sum, quotient and square root goes through the exact primitives of
:mod:`.primitives`; nothing here differs between a GPU and the simulator.
"""

import math

import numpy as np
from numba import cuda

from ..errors import D_NONFINITE, D_OK, D_OMEGA_GROUP, D_PAST_END, D_SCALE_RANGE
from .layout import (
    C_BF16,
    C_F16,
    C_F32,
    C_F64,
    DBL_MAX,
    DEFECT_STRIDE,
    E_INPUT,
    E_SCALE,
    FLT_MAX,
    K_MAX,
    MAX_OMEGA_GROUP,
    MAX_T,
    SQ_TILE,
    TWO_M53,
)
from .primitives import _add, _div, _ldexp, _mul, _sqrt


@cuda.jit(device=True, cache=True)
def _report(err, slot, where, code):
    """Record defect ``code`` at ``where`` in a defect slot; the smallest report is kept."""
    cuda.atomic.min(err, slot, np.int64(where) * DEFECT_STRIDE + code)


# ----------------------------------------------------------------------------- values


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
    y = _ldexp(v, -k)  # exact: v / 2^k < 2^(mant_bits + 1)
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
def _floor_div(i, d, inv_d):
    """i // d for 0 <= i < 2^53 and d >= 1 (inv_d = 1.0 / d), without a 64-bit integer
    division: a floating-point estimate, then exact integer corrections."""
    b = np.int64(_mul(np.float64(i), inv_d))
    while b > 0 and b * d > i:
        b -= 1
    while (b + 1) * d <= i:
        b += 1
    return b


# ----------------------------------------------------------------------------- block work


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
    Reports non-finite inputs (E_INPUT) and out-of-range scales (E_SCALE).
    """
    t = cuda.threadIdx.x
    nthreads = cuda.blockDim.x
    if kind == K_MAX:
        local = 0.0
        for j in range(t, m, nthreads):
            a = abs(_load(x, lo + j, code))
            if not (a <= DBL_MAX):
                _report(err, E_INPUT, lo + j, D_NONFINITE)
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
                    _report(err, E_INPUT, lo + base + j, D_NONFINITE)
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
        _report(err, E_SCALE, b, D_SCALE_RANGE)
    return r


# ----------------------------------------------------------------------------- elias bits


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
    p = end - 1  # the terminating 0 bit is already 0
    while v > 1:
        b = _bit_length(v)
        p -= b
        _put_bits(buf, p, v, b)
        v = b - 1
    return end


@cuda.jit(device=True, cache=True)
def _read_u32(msg, pos):
    """Little-endian u32 at byte pos of msg (the caller checked pos + 4 <= msg.size)."""
    return (
        np.int64(msg[pos])
        | (np.int64(msg[pos + 1]) << 8)
        | (np.int64(msg[pos + 2]) << 16)
        | (np.int64(msg[pos + 3]) << 24)
    )


@cuda.jit(device=True, cache=True)
def _read_bits(msg, start, pos, nbits):
    """nbits (<= MAX_OMEGA_GROUP) bits MSB-first from bit pos of the stream starting at byte
    start."""
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
    """Decode one omega code at bit pos (bits < limit).

    Returns (value, new pos, defect code): D_OK, D_PAST_END or D_OMEGA_GROUP.
    """
    v = np.int64(1)
    while True:
        if pos >= limit:
            return v, pos, D_PAST_END
        lead = _read_bits(msg, start, pos, 1)
        pos += 1
        if lead == 0:
            return v, pos, D_OK
        if v + 1 > MAX_OMEGA_GROUP:
            return v, pos, D_OMEGA_GROUP
        if pos + v > limit:
            return v, pos, D_PAST_END
        nxt = (np.int64(1) << v) | _read_bits(msg, start, pos, v)
        pos += v
        v = nxt
