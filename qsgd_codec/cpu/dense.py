"""Dense encoding (spec 6.1): quantization and packing of w-bit fields, one fused pass.

Each bucket's scale is computed, then its elements are quantized and packed while the
bucket is still in cache.  Buckets larger than a chunk take two passes (:func:`_scales_par`,
then :func:`_dense_encode_par` with ``known``) so that one huge bucket still uses every
thread.  A chunk starts at an element index that is a multiple of 8, so its codes start on
a byte boundary for every field width and chunks write disjoint bytes.
"""

import numpy as np
from numba import njit, prange

from ..errors import D_OK
from .byteio import SH8, SH32, U32, U64, _ld32, _st32
from .convert import _to_f64
from .quantize import (
    BLOCK,
    GAMMA,
    GAMMA_2,
    GAMMA_3,
    GAMMA_4,
    LANES,
    _level,
    _quantize,
    _scale_and_status,
)


@njit(cache=True)
def _pack(q, k, i0, w, codes):
    """Write the w-bit fields of q[0:k] for elements i0.. into the LSB-first stream ``codes``.

    A partial first byte is merged with what the previous call of the same chunk wrote; the
    last partial byte is written with zero high bits (the padding rule).
    """
    if w == 8:
        cs = codes[i0 : i0 + k]
        for j in range(k):
            cs[j] = np.uint8(q[j] & 255)
        return
    if w == 4 and i0 % 2 == 0:
        cs = codes[i0 // 2 : (i0 + k + 1) // 2]
        for j in range(k // 2):
            cs[j] = np.uint8((q[2 * j] & 15) | ((q[2 * j + 1] & 15) << 4))
        if k % 2:
            cs[k // 2] = np.uint8(q[k - 1] & 15)
        return
    if w == 2 and i0 % 4 == 0:
        cs = codes[i0 // 4 : (i0 + k + 3) // 4]
        for j in range(k // 4):
            cs[j] = np.uint8(
                (q[4 * j] & 3)
                | ((q[4 * j + 1] & 3) << 2)
                | ((q[4 * j + 2] & 3) << 4)
                | ((q[4 * j + 3] & 3) << 6)
            )
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
        if nacc >= 32:  # w <= 25 and nacc < 32 before: nacc + w < 64
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
        cs = codes[lo // 2 : (hi + 1) // 2]
        z0 = z
        for j in range(m // 2):
            a = _level(_to_f64(xs[2 * j], mant, xb), r, sf, z0)
            b = _level(_to_f64(xs[2 * j + 1], mant, xb), r, sf, z0 + GAMMA)
            cs[j] = np.uint8((a & 15) | ((b & 15) << 4))
            z0 += GAMMA_2
        if m % 2:
            cs[m // 2] = np.uint8(
                _level(_to_f64(xs[m - 1], mant, xb), r, sf, z + U64(m - 1) * GAMMA) & 15
            )
        return
    if r != 0.0 and w == 2 and lo % 4 == 0:
        cs = codes[lo // 4 : (hi + 3) // 4]
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
def _dense_chunk(
    xb, n, d, s, w, l2, key, mant, absmask, infbits, dmax, b0, b1, out, soff, codes, status, known
):
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
            if status[b] != D_OK:
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
        _quantize_pack(xb, lo, hi, r if st == D_OK else 0.0, s, w, key, mant, codes, q)


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
def _dense_encode_par(
    xb, n, d, s, w, l2, key, mant, absmask, infbits, dmax, bounds, out, soff, codes, status, known
):
    for c in prange(bounds.size - 1):
        _dense_chunk(
            xb,
            n,
            d,
            s,
            w,
            l2,
            key,
            mant,
            absmask,
            infbits,
            dmax,
            bounds[c],
            bounds[c + 1],
            out,
            soff,
            codes,
            status,
            known,
        )


@njit(cache=True)
def _dense_encode_seq(
    xb, n, d, s, w, l2, key, mant, absmask, infbits, dmax, bounds, out, soff, codes, status, known
):
    for c in range(bounds.size - 1):
        _dense_chunk(
            xb,
            n,
            d,
            s,
            w,
            l2,
            key,
            mant,
            absmask,
            infbits,
            dmax,
            bounds[c],
            bounds[c + 1],
            out,
            soff,
            codes,
            status,
            known,
        )


@njit(cache=True, parallel=True)
def _scales_par(xb, n, d, l2, mant, absmask, infbits, dmax, bounds, out, soff, status):
    for c in prange(bounds.size - 1):
        _scales_chunk(
            xb, n, d, l2, mant, absmask, infbits, dmax, bounds[c], bounds[c + 1], out, soff, status
        )
