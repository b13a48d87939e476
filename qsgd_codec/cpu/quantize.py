"""Scales (spec 8.2), the random source (8.3) and quantization (8.4), shared by both codings.

The random source is :func:`qsgd_codec.wire.rng.mix64`, the format's one SplitMix64
definition, compiled here and inlined into the quantization loops.

Floating point: no fastmath; binary64 operations are written exactly as spec 8.2 and 8.4
write them (LLVM does not contract a multiply and an add into an FMA without fast-math
flags).
"""

import math

import numpy as np
from numba import njit

from ..errors import D_NONFINITE, D_OK, D_SCALE_RANGE
from ..wire import rng
from ..wire.rng import GAMMA, SH11, TWO_M53
from .convert import U64, _to_f64

#: GAMMA times 2, 3, 4 (mod 2^64): the state of the next elements in unrolled loops
GAMMA_2, GAMMA_3, GAMMA_4 = (U64((k * int(GAMMA)) % (1 << 64)) for k in (2, 3, 4))
#: lanes of the L2 sum of squares (spec 8.2)
LANES = 32
#: quantization block: levels of this many elements are staged before packing or coding
BLOCK = 1024

_mix64 = njit(cache=True, inline="always")(rng.mix64)


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

    status is D_NONFINITE when a value is NaN or infinite (detected from the bits).
    ``acc`` is 32 float64 of scratch.
    """
    top = absmask ^ absmask  # the largest |bits| seen (NaN and inf sort last)
    xs = xb[lo:hi]
    m = hi - lo
    if not l2:
        for i in range(m):
            a = xs[i] & absmask
            top = a if a > top else top
        if top >= infbits:
            return 0.0, D_NONFINITE
        return _to_f64(top, mant, xb), D_OK
    for k in range(LANES):
        acc[k] = 0.0
    full = m - m % LANES
    for i in range(0, full, LANES):
        xl = xs[i : i + LANES]
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
        return 0.0, D_NONFINITE
    h = 16
    while h >= 1:
        for k in range(h):
            acc[k] = acc[k] + acc[k + h]
        h //= 2
    return math.sqrt(acc[0]), D_OK


@njit(cache=True)
def _scale_and_status(xb, lo, hi, l2, mant, absmask, infbits, dmax, acc):
    y, st = _bucket_scale(xb, lo, hi, l2, mant, absmask, infbits, acc)
    r = _round_up_f32(y) if st == D_OK else 0.0
    if st == D_OK and not r <= dmax:
        st = D_SCALE_RANGE
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
    z = U64(key) + U64(lo + 1) * GAMMA  # the generator's state for element lo, then + GAMMA
    xs = xb[lo:hi]
    for j in range(hi - lo):
        q[j] = _level(_to_f64(xs[j], mant, xb), r, sf, z)
        z += GAMMA
