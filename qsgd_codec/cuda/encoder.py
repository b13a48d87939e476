"""Encode kernels: dense (spec 6.1) and elias (spec 6.2) messages, one block per bucket.

:func:`qsgd_codec.cuda.host.encode_device` launches them; the scales, levels and bytes are
the reference's (spec 8).
"""

import numpy as np
from numba import cuda
from numba.cuda import types as _nbt

from .device import (
    _block_scan,
    _bucket_scale,
    _elias_thread_bits,
    _floor_div,
    _load,
    _put_bits,
    _put_omega,
    _quantize,
)
from .layout import BUF_WORDS, MAX_T, SCAN_SIZE, SQ_TILE
from .primitives import _u53


@cuda.jit(cache=True)
def _k_dense_encode(
    x, code, n, d, s, w, inv_w, kind, key, nb, dmax, scales, scale_w0, words, codes_w0, err
):
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
def _k_elias_levels(x, code, n, d, s, kind, key, nb, dmax, per_thread, scales, lengths, qout, err):
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
def _k_elias_write(
    qin, n, d, nb, per_thread, scales, lengths, offsets, words, scale_w0, length_w0, msg, codes0
):
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
        start = np.int64(0)  # bit position of the tile in the bucket's code
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
