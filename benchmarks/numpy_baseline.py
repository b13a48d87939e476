"""The QSGD quantizer written the obvious way in NumPy: the baseline a user would otherwise
write, kept here so that benchmarks/bench_cpu.py can time it next to qsgd_codec.

Same quantizer as the spec (bucketed scales, stochastic rounding to levels -s..s, dense
two's complement packing of 2, 4 or 8 bits), written with whole-array NumPy operations.
It is *not* byte-compatible with the wire format: it draws its uniforms from NumPy's
default generator (what a user would reach for, and faster than a hand-written SplitMix64
in NumPy), sums squares in NumPy's order, and has no header or checksum.  It exists only
to be timed.
"""

import numpy as np


def encode_dense(x, *, bits=8, bucket_size=512, scale="max", rng=None):
    """Return (scales float32[nb], packed uint8 codes) for a float32 array ``x``."""
    rng = np.random.default_rng(0) if rng is None else rng
    s = (1 << (bits - 1)) - 1
    flat = np.asarray(x, dtype=np.float32).reshape(-1)
    n = flat.size
    nb = -(-n // bucket_size)
    padded = np.zeros(nb * bucket_size, dtype=np.float32)
    padded[:n] = flat
    buckets = padded.reshape(nb, bucket_size)
    if scale == "max":
        r = np.abs(buckets).max(axis=1)
    else:
        r = np.sqrt(np.einsum("ij,ij->i", buckets, buckets, dtype=np.float64)).astype(np.float32)
    safe = np.where(r > 0, r, 1).astype(np.float32)
    t = np.abs(buckets) / safe[:, None] * s
    lower = np.floor(t)
    levels = lower + (rng.random(t.shape, dtype=np.float32) < (t - lower))
    q = (np.sign(buckets) * levels).astype(np.int8).reshape(-1)[:n]
    return r.astype(np.float32), pack(q, bits)


def decode_dense(scales, packed, n, *, bits=8, bucket_size=512):
    """Float32 values from (scales, packed codes)."""
    s = (1 << (bits - 1)) - 1
    q = unpack(packed, n, bits).astype(np.float32)
    r = np.repeat(scales, bucket_size)[:n]
    return q * (r / s)


def pack(q, bits):
    """Two's complement fields of ``bits`` (2, 4 or 8) bits, LSB first."""
    if bits == 8:
        return q.view(np.uint8).copy()
    per = 8 // bits
    u = q.astype(np.uint8) & ((1 << bits) - 1)
    u = np.concatenate([u, np.zeros(-len(u) % per, dtype=np.uint8)]).reshape(-1, per)
    shifts = np.arange(per, dtype=np.uint8) * bits
    return np.bitwise_or.reduce(u << shifts, axis=1).astype(np.uint8)


def unpack(packed, n, bits):
    if bits == 8:
        return packed.view(np.int8)[:n]
    per = 8 // bits
    shifts = np.arange(per, dtype=np.uint8) * bits
    fields = ((packed[:, None] >> shifts) & ((1 << bits) - 1)).astype(np.int8).reshape(-1)[:n]
    return np.where(fields >= 1 << (bits - 1), fields - (1 << bits), fields).astype(np.int8)
