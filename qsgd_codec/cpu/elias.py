"""Elias coding (spec 6.2): the omega code tables and the two-pass encoder.

Pass 1 (:func:`_elias_count_par`) computes each bucket's scale, status and exact code
length ``L_b``; pass 2 (:func:`_elias_write_par`) quantizes again (the same pure function
of seed and index) and writes each bucket at its byte offset.  Memory stays at the output
plus O(number of buckets).  The decoder (:mod:`.decode`) reads the same tables.
"""

import numpy as np
from numba import njit, prange

from ..errors import D_OK
from ..reference import omega_bits
from .byteio import SH8, SH32, SH56, U32, U64, _st32, _st64be
from .quantize import BLOCK, LANES, _quantize, _scale_and_status

#: elias omega codes of integers below this come from a table
OMEGA_TABLE = 4096


# ----------------------------------------------------------------------------- omega tables


def _omega_tables():
    codes = np.zeros(OMEGA_TABLE, dtype=np.uint32)
    lengths = np.zeros(OMEGA_TABLE, dtype=np.int64)
    for v in range(1, OMEGA_TABLE):
        s = omega_bits(v)
        codes[v] = int(s, 2)
        lengths[v] = len(s)
    # decoding a whole entry from the next 12 bits: entry[bits] = length | gap << 8 |
    # level << 16 | sign << 24 when an entry of at most 12 bits starts there, else 0
    entry = np.zeros(4096, dtype=np.uint32)
    small = [(v, omega_bits(v)) for v in range(1, 64)]
    for gap, gs in small:
        for level, ls in small:
            for sign in (0, 1):
                bits = gs + str(sign) + ls
                if len(bits) <= 12:
                    lo = int(bits, 2) << (12 - len(bits))
                    value = len(bits) | gap << 8 | level << 16 | sign << 24
                    entry[lo : lo + (1 << (12 - len(bits)))] = value
    return codes, lengths, entry


OMEGA_CODE, OMEGA_LEN, ENTRY_DEC12 = _omega_tables()

# Tables indexed by a signed level v + LEVEL_OFFSET, |v| < OMEGA_TABLE: the sign bit and the
# level's omega code as one code, its length (0 for v = 0), and 0/1 for zero/non-zero.
# Multiplying by a table value rather than selecting on v != 0 keeps LLVM from turning the
# zero test back into a branch, which is unpredictable in the dense regime.
LEVEL_OFFSET = OMEGA_TABLE - 1
_LEVELS = np.arange(-LEVEL_OFFSET, LEVEL_OFFSET + 1)
LEVEL_LEN = np.where(_LEVELS == 0, 0, 1 + OMEGA_LEN[np.abs(_LEVELS)]).astype(np.int64)
LEVEL_CODE = np.where(_LEVELS < 0, 1 << OMEGA_LEN[np.abs(_LEVELS)], 0).astype(
    np.uint64
) | OMEGA_CODE[np.abs(_LEVELS)].astype(np.uint64)
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
    length = np.int64(1)  # the final "0"
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


# ----------------------------------------------------------------------------- encoding


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
def _elias_count_chunk(
    xb, n, d, s, l2, key, mant, absmask, infbits, dmax, b0, b1, scales, lengths, status
):
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
        if st == D_OK and r != 0.0:
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
            acc, nacc = _append(
                acc,
                nacc,
                (U64(OMEGA_CODE[U64(gap)]) << U64(ll)) | LEVEL_CODE[li],
                np.int64(OMEGA_LEN[U64(gap)]) + ll,
            )
            pos, acc, nacc = _flush(codes, pos, end, acc, nacc)
        return last, pos, acc, nacc
    after = last + 1  # as in _count_block
    for j in range(k):
        li = U64(np.int64(q[j]) + LEVEL_OFFSET)
        gap = i + j + 1 - after
        nz = LEVEL_NONZERO[li]
        if gap > top:
            if nz:
                pos, acc, nacc = _write_entry_slow(
                    codes, pos, end, acc, nacc, gap, U64(q[j] < 0), np.int64(abs(q[j]))
                )
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
            last, pos, acc, nacc = _write_block(q, e - i, i, last, codes, pos, end, acc, nacc, s)
            i = e
        off = end


@njit(cache=True, parallel=True)
def _elias_count_par(
    xb, n, d, s, l2, key, mant, absmask, infbits, dmax, bounds, scales, lengths, status
):
    for c in prange(bounds.size - 1):
        _elias_count_chunk(
            xb,
            n,
            d,
            s,
            l2,
            key,
            mant,
            absmask,
            infbits,
            dmax,
            bounds[c],
            bounds[c + 1],
            scales,
            lengths,
            status,
        )


@njit(cache=True)
def _elias_count_seq(
    xb, n, d, s, l2, key, mant, absmask, infbits, dmax, bounds, scales, lengths, status
):
    for c in range(bounds.size - 1):
        _elias_count_chunk(
            xb,
            n,
            d,
            s,
            l2,
            key,
            mant,
            absmask,
            infbits,
            dmax,
            bounds[c],
            bounds[c + 1],
            scales,
            lengths,
            status,
        )


@njit(cache=True, parallel=True)
def _elias_write_par(xb, n, d, s, key, mant, bounds, scales, lengths, codes, offs):
    for c in prange(bounds.size - 1):
        _elias_write_chunk(
            xb, n, d, s, key, mant, bounds[c], bounds[c + 1], scales, lengths, codes, offs[c]
        )


@njit(cache=True)
def _elias_write_seq(xb, n, d, s, key, mant, bounds, scales, lengths, codes, offs):
    for c in range(bounds.size - 1):
        _elias_write_chunk(
            xb, n, d, s, key, mant, bounds[c], bounds[c + 1], scales, lengths, codes, offs[c]
        )


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
