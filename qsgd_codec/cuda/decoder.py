"""Decode kernels: scales, elias bit lengths, dense and elias codes (spec 5, 6, 9).

Defects go to the status array as ``where * DEFECT_STRIDE + code``
(:mod:`qsgd_codec.cuda.layout`), ordered as the reference finds them: dense padding before
any field, then the first element in error; elias by bucket.
"""

import numpy as np
from numba import cuda

from ..errors import (
    D_BAD_SCALE,
    D_CODE_TOO_LONG,
    D_DENSE_PADDING,
    D_ELIAS_PADDING,
    D_FIELD_RANGE,
    D_GAP,
    D_LEVEL,
    D_OK,
    D_PAST_END,
    D_ZERO_SCALE,
)
from .device import _floor_div, _read_bits, _read_omega, _read_u32, _report, _store
from .layout import E_BADSCALE, E_CODES, MAX_ENTRY_BITS
from .primitives import _ldexp


@cuda.jit(cache=True)
def _k_read_scales(msg, pos0, nb, dmax_bits, scales, err):
    """scales[b] = scale b as binary64; E_BADSCALE = first scale that is negative, NaN,
    infinite or above the dtype's maximum (spec 5.1)."""
    for b in range(cuda.grid(1), nb, cuda.gridsize(1)):
        u = _read_u32(msg, pos0 + 4 * b)
        e = (u >> 23) & 0xFF
        f = u & 0x7FFFFF
        if (u >> 31) != 0 or u > dmax_bits:  # bits order like values for non-negatives
            _report(err, E_BADSCALE, b, D_BAD_SCALE)
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
    """One element per thread: unpack, validate (spec 6.1) and store (spec 9).

    A field outside -s..s reports D_FIELD_RANGE at its element; a non-zero field under a zero
    scale reports D_ZERO_SCALE at its element too (the host names the bucket), so the first
    element in error wins; non-zero padding reports at -1, before every element.
    """
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
            _report(err, E_CODES, i, D_FIELD_RANGE)
            q = 0
        elif q != 0 and r == 0.0:
            _report(err, E_CODES, i, D_ZERO_SCALE)
            q = 0
        _store(out, i, q, r, s, code)
    if cuda.grid(1) == 0:
        pad = (8 - ((n * w) & 7)) & 7
        if pad != 0 and codes_len > 0:
            if (np.int64(msg[limit - 1]) >> (8 - pad)) != 0:
                _report(err, E_CODES, -1, D_DENSE_PADDING)


@cuda.jit(cache=True)
def _k_fill_zero(out, n):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        out[i] = 0


@cuda.jit(cache=True)
def _k_elias_decode(msg, codes0, codes_len, lengths, offsets, n, d, s, nb, scales, out, code, err):
    """One bucket per thread: decode and validate its code (spec 6.2), store the non-zeros.

    ``out`` is zero-filled first.  Every read is bounded by the bucket's declared bit length
    and by the code region.  A bucket's first defect is reported at the bucket (E_CODES).
    """
    for b in range(cuda.grid(1), nb, cuda.gridsize(1)):
        lo = b * d
        m = min(d, n - lo)
        nbits = np.int64(lengths[b])
        start = codes0 + offsets[b]
        if nbits > MAX_ENTRY_BITS * m:
            _report(err, E_CODES, b, D_CODE_TOO_LONG)
            continue
        r = scales[b]
        if nbits > 0 and r == 0.0:
            _report(err, E_CODES, b, D_ZERO_SCALE)
            continue
        if offsets[b + 1] > codes_len or offsets[b + 1] - offsets[b] != (nbits + 7) >> 3:
            _report(err, E_CODES, b, D_PAST_END)
            continue
        pos = np.int64(0)
        p = np.int64(-1)
        found = D_OK
        while pos < nbits:
            gap, pos, found = _read_omega(msg, start, pos, nbits)
            if found != D_OK:
                break
            p += gap
            if p >= m:
                found = D_GAP
                break
            if pos >= nbits:
                found = D_PAST_END
                break
            negative = _read_bits(msg, start, pos, 1)
            pos += 1
            zeta, pos, found = _read_omega(msg, start, pos, nbits)
            if found != D_OK:
                break
            if zeta > s:
                found = D_LEVEL
                break
            _store(out, lo + p, -zeta if negative else zeta, r, s, code)
        if found == D_OK and (nbits & 7) != 0:
            pad = 8 - (nbits & 7)
            if np.int64(msg[start + (nbits >> 3)]) & ((1 << pad) - 1):
                found = D_ELIAS_PADDING
        if found != D_OK:
            _report(err, E_CODES, b, found)
