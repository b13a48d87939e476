"""Decoding (spec 9): dense and elias decode kernels, each reporting the first defect of its
chunk as a ``(code, where)`` pair of :data:`qsgd_codec.errors.DEFECTS`.

The message is read through hand bounds checks (a read past the message is never
attempted); each chunk writes its first defect into small ``errs``/``where`` arrays and the
host side raises :func:`qsgd_codec.errors.defect` of the first chunk's, so the defect and
its message are the reference's.  Within a bucket the checks run in the reference's order.
"""

import numpy as np
from numba import njit, prange

from ..errors import (
    D_CODE_TOO_LONG,
    D_ELIAS_PADDING,
    D_FIELD_RANGE,
    D_GAP,
    D_LEVEL,
    D_OK,
    D_OMEGA_GROUP,
    D_PAST_END,
    D_ZERO_SCALE,
)
from ..wire import MAX_ENTRY_BITS, MAX_OMEGA_GROUP
from .byteio import SH8, SH32, SH56, U32, U64, _ld32, _ld64be
from .convert import SH52, _mag_bits, _out_bits
from .elias import ENTRY_DEC12

#: per-bucket decode tables are used for levels s up to this (else values are computed)
TABLE_MAX = 4096


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
def _dense_decode_chunk(msg, soff, coff, clen, d, s, w, mant, emin, i0, i1, out):
    """Decode elements i0..i1-1 (i0 a multiple of 8).  Returns (defect code, where).

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
        j = i  # first element left for the general loop
        per = 8 // w if w in (2, 4, 8) else 0  # fields per byte
        if per and (np.int64(i) * w) % 8 == 0:
            nbytes = (e - i) // per
            ms = msg[coff + (np.int64(i) * w >> 3) : coff + (np.int64(i) * w >> 3) + nbytes]
            os = out[i : i + nbytes * per]
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
                    bad |= (abs(f0) > smax) | (abs(f1) > smax) | (abs(f2) > smax) | (abs(f3) > smax)
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
            raw = np.int64(
                U32(msg[u])
                | (U32(msg[u + U64(1)]) << U32(8))
                | (U32(msg[u + U64(2)]) << U32(16))
                | (U32(msg[u + U64(3)]) << U32(24))
            )
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
                    return D_FIELD_RANGE, np.int64(t)
                if a > smax:
                    return D_ZERO_SCALE, np.int64(b)
        i = e
    return D_OK, np.int64(0)


@njit(cache=True, parallel=True)
def _dense_decode_par(msg, soff, coff, clen, n, d, s, w, mant, emin, step, out, errs, where):
    nc = errs.size
    for c in prange(nc):
        i0 = c * step
        i1 = min(n, i0 + step)
        err, at = _dense_decode_chunk(msg, soff, coff, clen, d, s, w, mant, emin, i0, i1, out)
        errs[c] = err
        where[c] = at


@njit(cache=True)
def _dense_decode_seq(msg, soff, coff, clen, n, d, s, w, mant, emin, step, out, errs, where):
    nc = errs.size
    for c in range(nc):
        i0 = c * step
        i1 = min(n, i0 + step)
        err, at = _dense_decode_chunk(msg, soff, coff, clen, d, s, w, mant, emin, i0, i1, out)
        errs[c] = err
        where[c] = at
        if err != D_OK:
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

    Returns (value, new pos, defect code)."""
    value = np.int64(1)
    while True:
        if pos >= limit:
            return value, pos, D_PAST_END
        bit = (msg[base + (pos >> 3)] >> (7 - (pos & 7))) & 1
        pos += 1
        if bit == 0:
            return value, pos, D_OK
        if value + 1 > MAX_OMEGA_GROUP:
            return value, pos, D_OMEGA_GROUP
        if pos + value > limit:
            return value, pos, D_PAST_END
        window = _peek(msg, base + (pos >> 3), end) << U64(pos & 7)
        group = (U64(1) << U64(value)) | (window >> U64(64 - value))
        pos += value
        value = np.int64(group)


@njit(cache=True)
def _elias_decode_chunk(
    msg, soff, toff, coff, clen, n, d, s, mant, emin, signbit, b0, b1, off, out
):
    """Decode buckets b0..b1-1 whose codes start at byte ``off`` of the codes.

    Returns (defect code, bucket)."""
    tab = np.empty(TABLE_MAX + 1, dtype=out.dtype)
    sf = np.float64(s)
    end = coff + clen
    for b in range(b0, b1):
        lo = b * d
        m = min(d, n - lo)
        L = np.int64(_ld32(msg, toff + 4 * b))
        r = np.float64(U32(_ld32(msg, soff + 4 * b)).view(np.float32))
        if L > MAX_ENTRY_BITS * m:
            return D_CODE_TOO_LONG, b
        if L > 0 and r == 0.0:
            return D_ZERO_SCALE, b
        base = coff + off
        nbytes = (L + 7) // 8
        off += nbytes
        use_tab = s <= TABLE_MAX
        if use_tab and L > 0:
            _fill_table(tab, r, s, mant, emin)
        os = out[lo : lo + m]
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
                window = (
                    (U64(msg[u]) << SH56)
                    | (U64(msg[u + U64(1)]) << U64(48))
                    | (U64(msg[u + U64(2)]) << U64(40))
                    | (U64(msg[u + U64(3)]) << SH32)
                    | (U64(msg[u + U64(4)]) << U64(24))
                    | (U64(msg[u + U64(5)]) << U64(16))
                    | (U64(msg[u + U64(6)]) << SH8)
                    | U64(msg[u + U64(7)])
                )
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
                    return D_GAP, b
                if zeta > s:
                    return D_LEVEL, b
                mag = (
                    tab[zeta]
                    if use_tab
                    else _mag_bits((r * np.float64(zeta)) / sf, mant, emin, out)
                )
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
            if err != D_OK:
                return err, b
            p += gap
            if p >= m:
                return D_GAP, b
            if pos >= L:
                return D_PAST_END, b
            neg = ((msg[base + (pos >> 3)] >> (7 - (pos & 7))) & 1) != 0
            pos += 1
            zeta, pos, err = _omega_slow(msg, base, pos, L, end)
            if err != D_OK:
                return err, b
            if zeta > s:
                return D_LEVEL, b
            mag = tab[zeta] if use_tab else _mag_bits((r * np.float64(zeta)) / sf, mant, emin, out)
            os[p] = mag | signbit if neg else mag
        if L & 7:
            if msg[base + nbytes - 1] & ((1 << (8 - (L & 7))) - 1):
                return D_ELIAS_PADDING, b
    return D_OK, np.int64(0)


@njit(cache=True, parallel=True)
def _elias_decode_par(
    msg, soff, toff, coff, clen, n, d, s, mant, emin, signbit, G, offs, out, errs, where
):
    nb = (n + d - 1) // d
    for c in prange(errs.size):
        b0 = c * G
        b1 = min(nb, b0 + G)
        err, at = _elias_decode_chunk(
            msg, soff, toff, coff, clen, n, d, s, mant, emin, signbit, b0, b1, offs[c], out
        )
        errs[c] = err
        where[c] = at


@njit(cache=True)
def _elias_decode_seq(
    msg, soff, toff, coff, clen, n, d, s, mant, emin, signbit, G, offs, out, errs, where
):
    nb = (n + d - 1) // d
    for c in range(errs.size):
        b0 = c * G
        b1 = min(nb, b0 + G)
        err, at = _elias_decode_chunk(
            msg, soff, toff, coff, clen, n, d, s, mant, emin, signbit, b0, b1, offs[c], out
        )
        errs[c] = err
        where[c] = at
        if err != D_OK:
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
