"""The reference implementation of QSGD wire format 1.0: the oracle.

Written to be read next to spec/wire-format.md, section by section and in the spec's order,
not to be fast.  The header, limits and sizes (spec sections 3-5 and 7) live in
:mod:`qsgd_codec.wire`, which this module uses as an independent implementation would; what
follows is the codings (section 6), the encoder (section 8) and the decoder (section 9).
Every fast path (Numba CPU kernels, CUDA kernels) is tested byte for byte against
:func:`encode_array` and value for value against :func:`decode_message`.

Public entry points:

- ``encode_array(x, params) -> bytes``  (spec section 8)
- ``decode_message(data, *, max_elements=...) -> numpy.ndarray``  (spec section 9)
- ``decode_bits(data, *, max_elements=...) -> (Header, raw bit patterns)``

``params`` is a :class:`qsgd_codec.wire.EncodeParams`.
"""

import numpy as np

from . import wire
from .errors import (
    D_CODE_TOO_LONG,
    D_DENSE_PADDING,
    D_ELIAS_PADDING,
    D_FIELD_RANGE,
    D_GAP,
    D_LEVEL,
    D_NONFINITE,
    D_OMEGA_GROUP,
    D_PAST_END,
    D_SCALE_RANGE,
    D_ZERO_SCALE,
    defect,
)
from .wire.rng import GAMMA, U64, mix64

LANES = 32


class _Defect(Exception):
    """A defect found inside a bucket's code, before the bucket index is known."""

    def __init__(self, code):
        self.code = code


# ------------------------------------------------------------------ 6.1 dense coding


def dense_pack(q, w):
    """LSB-first stream of w-bit two's complement fields, zero padded to a byte."""
    codes = (q & ((1 << w) - 1)).astype(np.uint64)
    bits = ((codes[:, None] >> np.arange(w, dtype=np.uint64)) & U64(1)).astype(np.uint8)
    return np.packbits(bits.reshape(-1), bitorder="little").tobytes()


def dense_unpack(codes, n, w):
    """Signed levels from a dense stream; checks the padding bits."""
    bits = np.unpackbits(np.frombuffer(codes, dtype=np.uint8), bitorder="little")
    if bits[n * w :].any():
        raise defect(D_DENSE_PADDING)
    fields = bits[: n * w].reshape(n, w).astype(np.int64) @ (1 << np.arange(w, dtype=np.int64))
    return np.where(fields >= 1 << (w - 1), fields - (1 << w), fields)


# ------------------------------------------------------------------ 6.2 elias coding


def omega_bits(value):
    """Elias omega code of value >= 1, as a string of '0'/'1'."""
    code = "0"
    while value > 1:
        binary = format(value, "b")
        code = binary + code
        value = len(binary) - 1
    return code


def elias_bucket_bits(qb):
    """The code bits of one bucket (spec 6.2), without padding."""
    parts = []
    previous = -1
    for p in np.flatnonzero(qb):
        q = int(qb[p])
        parts.append(omega_bits(int(p) - previous))
        parts.append("1" if q < 0 else "0")
        parts.append(omega_bits(abs(q)))
        previous = int(p)
    return "".join(parts)


def bits_to_bytes(bits):
    """MSB-first bit string to bytes, zero padded to a whole byte."""
    if not bits:
        return b""
    nbytes = -(-len(bits) // 8)
    return int(bits.ljust(8 * nbytes, "0"), 2).to_bytes(nbytes, "big")


class BitReader:
    """MSB-first reader over bits [0, limit) of a byte string, with bounds checks."""

    def __init__(self, data, limit):
        self.data = data
        self.limit = limit
        self.pos = 0

    def bit(self):
        if self.pos >= self.limit:
            raise _Defect(D_PAST_END)
        byte = self.data[self.pos >> 3]
        self.pos += 1
        return (byte >> (7 - ((self.pos - 1) & 7))) & 1

    def omega(self):
        value = 1
        while self.bit() == 1:
            if value + 1 > wire.MAX_OMEGA_GROUP:
                raise _Defect(D_OMEGA_GROUP)
            group = 1
            for _ in range(value):
                group = (group << 1) | self.bit()
            value = group
        return value


def elias_decode_bucket(code, nbits, m, s):
    """Signed levels of one bucket from its code bytes and bit length.

    Raises ``_Defect`` with the defect's code; :func:`decode_levels` adds the bucket.
    """
    q = np.zeros(m, dtype=np.int64)
    reader = BitReader(code, nbits)
    p = -1
    while reader.pos < nbits:
        p += reader.omega()
        if p >= m:
            raise _Defect(D_GAP)
        negative = reader.bit()
        zeta = reader.omega()
        if zeta > s:
            raise _Defect(D_LEVEL)
        q[p] = -zeta if negative else zeta
    padding = len(code) * 8 - nbits
    if padding and code[-1] & ((1 << padding) - 1):
        raise _Defect(D_ELIAS_PADDING)
    return q


# ------------------------------------------------------------------ 8.1 input values


def to_float64(x, dtype):
    """Exact conversion of the input's values (flattened, C order) to binary64."""
    flat = np.ascontiguousarray(x).reshape(-1)
    if dtype == "bfloat16":
        bits = flat.view(np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32).astype(np.float64)
    return flat.astype(np.float64)


def check_finite(x64):
    bad = ~np.isfinite(x64)
    if bad.any():
        i = int(np.argmax(bad))
        raise defect(D_NONFINITE, i, value=x64[i])


# ------------------------------------------------------------------ 8.2 scales


def round_up_to_float32(y):
    """The smallest float32 >= y (y >= 0, binary64), as float32."""
    with np.errstate(over="ignore"):
        f = np.float32(y)  # values past FLT_MAX become inf: refused later
    if np.isfinite(f) and float(f) < y:
        f = np.nextafter(f, np.float32(np.inf))
    return np.float32(f)


def l2_sum_of_squares(xb):
    """The spec's fixed-order sum of squares of one bucket: 32 lanes, then a fold."""
    acc = np.zeros(LANES, dtype=np.float64)
    for j, value in enumerate(xb):
        acc[j % LANES] = acc[j % LANES] + value * value
    for h in (16, 8, 4, 2, 1):
        for k in range(h):
            acc[k] = acc[k] + acc[k + h]
    return acc[0]


def bucket_scale(xb, kind):
    if xb.size == 0:
        return np.float32(0.0)
    if kind == "max":
        y = float(np.max(np.abs(xb)))
    else:
        y = float(np.sqrt(l2_sum_of_squares(xb)))
    return round_up_to_float32(y)


# ------------------------------------------------------------------ 8.3 random source


def random_bits(seed, index):
    """The 64-bit value mix(key + (i+1)*gamma) for each element index i."""
    key = mix64(np.array([seed], dtype=U64))[0]
    index = np.asarray(index, dtype=U64)
    with np.errstate(over="ignore"):
        return mix64(key + (index + U64(1)) * GAMMA)


def uniform(seed, index):
    """u_i in [0, 1): the top 53 bits of the generator's output, times 2^-53."""
    return (random_bits(seed, index) >> U64(11)).astype(np.float64) * 2.0**-53


# ------------------------------------------------------------------ 8.4 quantization


def quantize_bucket(xb, r, s, u):
    """Signed levels q (int64) of one bucket with float32 scale r and uniforms u."""
    if r == 0:
        return np.zeros(xb.size, dtype=np.int64)
    r = float(r)
    a = np.abs(xb) / r
    t = a * s
    l = np.floor(t)
    p = t - l
    zeta = np.where(l >= s, s, l + (u < p)).astype(np.int64)
    sigma = np.where(xb < 0, -1, 1)
    return sigma * zeta


def quantize(x64, scales, s, d, seed):
    """Levels of the whole array."""
    u = uniform(seed, np.arange(x64.size))
    q = np.empty(x64.size, dtype=np.int64)
    for b, r in enumerate(scales):
        lo, hi = b * d, min((b + 1) * d, x64.size)
        q[lo:hi] = quantize_bucket(x64[lo:hi], r, s, u[lo:hi])
    return q


# ------------------------------------------------------------------ 8.5 writing


def encode_array(x, params):
    """Encode array ``x`` (any shape, a supported dtype) with ``params``: spec section 8."""
    dtype = wire.dtype_name(x.dtype)
    shape = x.shape
    x64 = to_float64(x, dtype)
    check_finite(x64)
    n, d, s = x64.size, params.bucket_size, params.levels
    nb = wire.num_buckets(n, d)

    scales = np.array(
        [bucket_scale(x64[b * d : (b + 1) * d], params.scale) for b in range(nb)], dtype=np.float32
    )
    limit = np.float32(wire.DTYPE_MAX[dtype])
    for b, r in enumerate(scales):
        if not r <= limit:
            raise defect(D_SCALE_RANGE, b, scale=params.scale, dtype=dtype, limit=float(limit))
    q = quantize(x64, scales, s, d, params.seed)

    if params.coding == "dense":
        body = scales.astype("<f4").tobytes() + dense_pack(q, wire.dense_width(s))
    else:
        bucket_bits = [elias_bucket_bits(q[b * d : (b + 1) * d]) for b in range(nb)]
        lengths = np.array([len(bits) for bits in bucket_bits], dtype="<u4")
        body = (
            scales.astype("<f4").tobytes()
            + lengths.tobytes()
            + b"".join(bits_to_bytes(bits) for bits in bucket_bits)
        )
    header = wire.pack_header(
        dtype=dtype,
        scale=params.scale,
        coding=params.coding,
        shape=shape,
        bucket_size=d,
        levels=s,
        seed=params.seed,
        body_length=len(body),
        checksum=params.checksum,
    )
    message = header + body
    if params.checksum:
        message += wire.crc32(message).to_bytes(4, "little")
    return message


# ------------------------------------------------------------------ 9. decoding


def decode_levels(data, header):
    """Signed levels of every element, validated (spec 5.1, 5.3, 6)."""
    n, d, s = header.n, header.bucket_size, header.levels
    scales = wire.read_scales(data, header)
    codes = bytes(memoryview(data)[header.codes_offset : header.header_length + header.body_length])
    if header.coding == "dense":
        q = dense_unpack(codes, n, header.width)
        # the first element whose field is out of range, or non-zero under a zero scale
        zero_scale = (scales == 0)[np.arange(n) // d]
        bad = (np.abs(q) > s) | ((q != 0) & zero_scale)
        if bad.any():
            i = int(np.argmax(bad))
            if abs(int(q[i])) > s:
                raise defect(D_FIELD_RANGE, i, s=s)
            raise defect(D_ZERO_SCALE, i // d)
        return scales, q
    lengths, offsets = wire.elias_table(data, header)
    q = np.zeros(n, dtype=np.int64)
    for b in range(header.num_buckets):
        m = wire.bucket_extent(header, b)
        nbits = int(lengths[b])
        if nbits > wire.MAX_ENTRY_BITS * m:
            raise defect(D_CODE_TOO_LONG, b)
        if nbits and scales[b] == 0:
            raise defect(D_ZERO_SCALE, b)
        code = codes[offsets[b] : offsets[b + 1]]
        try:
            q[b * d : b * d + m] = elias_decode_bucket(code, nbits, m, s)
        except _Defect as found:
            raise defect(found.code, b, s=s) from None
    return scales, q


def round_to_dtype(v, dtype):
    """Round binary64 values to the dtype, nearest-even, keeping subnormals (spec 9)."""
    mant, emin = {
        "float16": (10, -14),
        "bfloat16": (7, -126),
        "float32": (23, -126),
        "float64": (52, -1022),
    }[dtype]
    _, e = np.frexp(v)
    ulp = np.ldexp(1.0, np.maximum(e - 1, emin) - mant)
    rounded = np.round(v / ulp) * ulp
    if dtype == "bfloat16":
        bits = (rounded.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
        return bits
    return rounded.astype(dtype)


def decode_bits(data, *, max_elements=wire.DEFAULT_MAX_ELEMENTS):
    """Decode a message to (header, the flat output values as raw bit patterns).

    The bit patterns are uint16 (float16, bfloat16), uint32 (float32) or uint64 (float64),
    so bfloat16 needs no ml_dtypes here and comparisons are exact.
    """
    data = wire.byte_view(data)  # offsets below are in bytes, whatever the buffer's items
    header = wire.parse_header(data, max_elements=max_elements)
    scales, q = decode_levels(data, header)
    n, d, s = header.n, header.bucket_size, header.levels
    r = np.repeat(scales.astype(np.float64), d)[:n]
    v = (r * np.abs(q).astype(np.float64)) / s
    v = np.where(q < 0, -v, v)
    values = round_to_dtype(v, header.dtype)
    return header, values.view(wire.bits_dtype(header.dtype))


def decode_message(data, *, max_elements=wire.DEFAULT_MAX_ELEMENTS):
    """Decode a message to an array of its dtype and shape (spec section 9)."""
    header, bits = decode_bits(data, max_elements=max_elements)
    return bits.view(wire.numpy_dtype(header.dtype)).reshape(header.shape)
