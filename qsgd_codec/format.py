"""The QSGD wire format 1.0: header layout, enumerations, limits and parameter rules.

This module is the one home of everything in spec/wire-format.md that is not arithmetic:
the header (section 3), the bits/levels mapping (section 4), body lengths (section 5.3),
the checksum (section 7) and the decoder's size limit (section 9).  Both the reference
implementation and the fast kernels parse and write headers through it.
"""

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from .errors import (
    BadMagicError, ChecksumError, CorruptDataError, DTypeError, LengthError, LimitError,
    ParameterError, ReservedBitsError, TrailingDataError, TruncatedError, UnsupportedError,
    VersionError,
)

MAGIC = b"\x89QSG"
MAJOR = 1
MINOR = 0
FIXED_HEADER_LENGTH = 48
MAX_NDIM = 64
MAX_BUCKET_SIZE = 1 << 24
MAX_LEVELS = (1 << 24) - 1
MIN_BITS, MAX_BITS = 2, 25
#: the longest elias entry: omega(gap <= 2^24) = 36 bits, a sign bit, omega(level) <= 36 bits
MAX_ENTRY_BITS = 73
#: decoder's default element limit: 2^28 elements (1 GiB of float32); see spec section 9
DEFAULT_MAX_ELEMENTS = 1 << 28
CRC_LENGTH = 4

FLAG_CHECKSUM = 1
KNOWN_FLAGS = FLAG_CHECKSUM

_FIXED = struct.Struct("<4sBBHHBBBBHQIIQQ")
assert _FIXED.size == FIXED_HEADER_LENGTH

DTYPE_CODES = {"float16": 1, "bfloat16": 2, "float32": 3, "float64": 4}
DTYPE_NAMES = {v: k for k, v in DTYPE_CODES.items()}
#: bytes per element of each dtype
DTYPE_ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}
#: the largest finite value of each dtype (spec section 5.1), as an exact float
DTYPE_MAX = {
    "float16": 65504.0,
    "bfloat16": float(np.frombuffer(np.uint32(0x7F7F0000).tobytes(), np.float32)[0]),
    "float32": float(np.finfo(np.float32).max),
    "float64": float(np.finfo(np.float32).max),
}
SCALE_CODES = {"l2": 0, "max": 1}
SCALE_NAMES = {v: k for k, v in SCALE_CODES.items()}
CODING_CODES = {"dense": 0, "elias": 1}
CODING_NAMES = {v: k for k, v in CODING_CODES.items()}

#: encoder defaults (README explains them): the paper's 8-bit / bucket 512 / max scaling setting,
#: which recovered full accuracy in every experiment of the paper
DEFAULT_BITS = 8
DEFAULT_BUCKET_SIZE = 512
DEFAULT_SCALE = "max"
DEFAULT_CODING = "dense"
DEFAULT_SEED = 0


@dataclass(frozen=True)
class Header:
    """The decoded header of a message (spec section 3)."""

    major: int
    minor: int
    header_length: int
    flags: int
    dtype: str
    scale: str
    coding: str
    n: int
    bucket_size: int
    levels: int
    seed: int
    body_length: int
    shape: tuple

    @property
    def num_buckets(self):
        return num_buckets(self.n, self.bucket_size)

    @property
    def width(self):
        """Dense field width w in bits (spec section 4)."""
        return dense_width(self.levels)

    @property
    def has_checksum(self):
        return bool(self.flags & FLAG_CHECKSUM)

    @property
    def message_length(self):
        return self.header_length + self.body_length + (CRC_LENGTH if self.has_checksum else 0)

    @property
    def scales_offset(self):
        return self.header_length

    @property
    def table_offset(self):
        """Byte offset of the elias bit-length table (elias coding only)."""
        return self.header_length + 4 * self.num_buckets

    @property
    def codes_offset(self):
        nb = self.num_buckets
        return self.header_length + (8 if self.coding == "elias" else 4) * nb


# ----------------------------------------------------------------------------- parameters

@dataclass(frozen=True)
class EncodeParams:
    """Validated encoder parameters: what every backend's ``encode_array(x, params)`` takes."""

    levels: int
    bucket_size: int
    scale: str
    coding: str
    seed: int
    checksum: bool = True


def encode_params(*, bits=None, levels=None, bucket_size=None, scale=None, coding=None,
                  seed=None, checksum=True):
    """Check the API's encoder keywords and return :class:`EncodeParams` (None = default)."""
    s = resolve_levels(bits, levels)
    d, scale, coding, seed = check_params(
        DEFAULT_BUCKET_SIZE if bucket_size is None else bucket_size,
        DEFAULT_SCALE if scale is None else scale,
        DEFAULT_CODING if coding is None else coding, seed)
    return EncodeParams(s, d, scale, coding, seed, bool(checksum))


def num_buckets(n, d):
    return -(-n // d)


def dense_width(levels):
    """w = bit_length(s) + 1: two's complement of -s .. s (spec section 4)."""
    return int(levels).bit_length() + 1


def dense_codes_length(n, levels):
    return -(-(n * dense_width(levels)) // 8)


def resolve_levels(bits=None, levels=None):
    """Map the API's ``bits`` / ``levels`` to s (spec section 4)."""
    if bits is not None and isinstance(bits, bool) or levels is not None and isinstance(levels, bool):
        raise ParameterError("bits and levels must be integers, not bool")
    if bits is not None:
        if not isinstance(bits, (int, np.integer)):
            raise ParameterError(f"bits must be an integer, got {type(bits).__name__}")
        bits = int(bits)
        if bits == 1:
            raise ParameterError("bits=1 is not supported: a 1-bit code has no zero level "
                                 "(QSGD needs -s..s); use bits=2 for ternary levels")
        if not MIN_BITS <= bits <= MAX_BITS:
            raise ParameterError(f"bits must be in {MIN_BITS}..{MAX_BITS}, got {bits}")
        s = (1 << (bits - 1)) - 1
        if levels is not None and int(levels) != s:
            raise ParameterError(f"bits={bits} means levels={s}, but levels={levels} was given")
        return s
    if levels is None:
        return (1 << (DEFAULT_BITS - 1)) - 1
    if not isinstance(levels, (int, np.integer)):
        raise ParameterError(f"levels must be an integer, got {type(levels).__name__}")
    levels = int(levels)
    if not 1 <= levels <= MAX_LEVELS:
        raise ParameterError(f"levels must be in 1..{MAX_LEVELS}, got {levels}")
    return levels


def check_params(bucket_size, scale, coding, seed):
    """Validate encoder parameters; return them normalised (d, scale, coding, seed)."""
    if isinstance(bucket_size, bool) or not isinstance(bucket_size, (int, np.integer)):
        raise ParameterError(f"bucket_size must be an integer, got {type(bucket_size).__name__}")
    d = int(bucket_size)
    if not 1 <= d <= MAX_BUCKET_SIZE:
        raise ParameterError(f"bucket_size must be in 1..{MAX_BUCKET_SIZE}, got {d}")
    if not isinstance(scale, str) or scale not in SCALE_CODES:
        raise ParameterError(f"scale must be one of {sorted(SCALE_CODES)}, got {scale!r}")
    if not isinstance(coding, str) or coding not in CODING_CODES:
        raise ParameterError(f"coding must be one of {sorted(CODING_CODES)}, got {coding!r}")
    if seed is None:
        seed = DEFAULT_SEED
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ParameterError(f"seed must be an integer, got {type(seed).__name__}")
    seed = int(seed)
    if not 0 <= seed < (1 << 64):
        raise ParameterError(f"seed must be in 0..2**64-1, got {seed}")
    return d, scale, coding, seed


def dtype_name(dtype):
    """The format's name for a NumPy dtype, or DTypeError.  bfloat16 is ml_dtypes' type."""
    dtype = np.dtype(dtype)
    name = dtype.name
    if name in ("float16", "float32", "float64") and dtype.kind == "f":
        return name
    if name == "bfloat16" and dtype.itemsize == 2:
        return name
    raise DTypeError(f"dtype {dtype} is not supported; the format carries float16, bfloat16, "
                     f"float32 and float64")


def numpy_dtype(name):
    """The NumPy dtype for a format dtype name; bfloat16 needs the ml_dtypes package."""
    if name == "bfloat16":
        try:
            import ml_dtypes
        except ImportError:
            raise UnsupportedError(
                "this message holds bfloat16 values and NumPy has no bfloat16 type: install "
                "ml_dtypes (pip install 'qsgd_codec[bfloat16]') or pass out= a bfloat16 "
                "array") from None
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def bits_dtype(name):
    """Unsigned integer dtype of the same width, used to carry raw float bits to kernels."""
    return {2: np.uint16, 4: np.uint32, 8: np.uint64}[DTYPE_ITEMSIZE[name]]


# ----------------------------------------------------------------------------- header I/O

def pack_header(*, dtype, scale, coding, shape, bucket_size, levels, seed, body_length,
                checksum=True):
    """Header bytes of a version 1.0 message (spec section 3)."""
    shape = tuple(int(x) for x in shape)
    if len(shape) > MAX_NDIM:
        raise ParameterError(f"arrays with more than {MAX_NDIM} dimensions are not supported")
    n = 1
    for extent in shape:
        n *= extent
    header_length = FIXED_HEADER_LENGTH + 8 * len(shape)
    fixed = _FIXED.pack(MAGIC, MAJOR, MINOR, header_length, FLAG_CHECKSUM if checksum else 0,
                        DTYPE_CODES[dtype], SCALE_CODES[scale], CODING_CODES[coding], len(shape),
                        0, n, bucket_size, levels, seed, body_length)
    return fixed + struct.pack(f"<{len(shape)}Q", *shape)


def crc32(*chunks):
    crc = 0
    for chunk in chunks:
        crc = zlib.crc32(chunk, crc)
    return crc & 0xFFFFFFFF


def byte_view(data):
    """A flat uint8 memoryview of a bytes-like message (any buffer: bytes, bytearray,
    memoryview, a NumPy array of any dtype and shape), so offsets are always in bytes.

    Raises ParameterError for an object that is not a contiguous buffer.
    """
    try:
        mv = memoryview(data)
    except TypeError:
        raise ParameterError(f"a QSGD message must be a bytes-like object, got "
                             f"{type(data).__name__}") from None
    if not mv.c_contiguous:
        raise ParameterError("a QSGD message must be a contiguous buffer; pass bytes(...) or "
                             "numpy.ascontiguousarray(...)")
    if mv.ndim != 1 or mv.format != "B":
        mv = mv.cast("B")
    return mv


def parse_header(data, *, max_elements=DEFAULT_MAX_ELEMENTS, verify_checksum=True):
    """Parse and validate a message's header (spec 3.4, 5.3 for dense, 7).

    ``data`` is any bytes-like object.  Returns a :class:`Header`.  Checks everything that
    can be checked without reading the body's codes; an elias message's table sum is
    checked by :func:`elias_table`.
    """
    if max_elements is not None and (isinstance(max_elements, bool) or not isinstance(
            max_elements, (int, np.integer)) or max_elements < 0):
        raise ParameterError(f"max_elements must be None or a non-negative integer, got "
                             f"{max_elements!r}")
    mv = byte_view(data)
    total = mv.nbytes
    if total < 4 or bytes(mv[:4]) != MAGIC:
        if total < 4 and bytes(mv[:total]) == MAGIC[:total]:
            raise TruncatedError(f"message is {total} bytes, shorter than the 4-byte magic")
        raise BadMagicError(f"not a QSGD message: first bytes {bytes(mv[:4]).hex()} are not "
                            f"the magic {MAGIC.hex()}")
    if total < 6:
        raise TruncatedError(f"message is {total} bytes, too short to hold the version")
    major, minor = mv[4], mv[5]
    if major != MAJOR:
        raise VersionError(f"unsupported QSGD format version {major}.{minor}; this reader "
                           f"reads major version {MAJOR}")
    if total < FIXED_HEADER_LENGTH:
        raise TruncatedError(f"message is {total} bytes, shorter than the "
                             f"{FIXED_HEADER_LENGTH}-byte fixed header")
    (_, major, minor, header_length, flags, dtype_code, scale_code, coding_code, ndim, reserved,
     n, d, s, seed, body_length) = _FIXED.unpack_from(mv, 0)
    if flags & ~KNOWN_FLAGS:
        raise ReservedBitsError(f"reserved flag bits set: flags=0x{flags:04x}")
    if reserved:
        raise ReservedBitsError(f"reserved header field at offset 14 is 0x{reserved:04x}, "
                                f"must be 0")
    if ndim > MAX_NDIM:
        raise CorruptDataError(f"ndim={ndim} exceeds the maximum {MAX_NDIM}")
    need = FIXED_HEADER_LENGTH + 8 * ndim
    if header_length < need:
        raise LengthError(f"header_length={header_length} is less than the {need} bytes its "
                          f"{ndim} dimensions need")
    if total < header_length:
        raise TruncatedError(f"message is {total} bytes, shorter than header_length="
                             f"{header_length}")
    if dtype_code not in DTYPE_NAMES:
        raise UnsupportedError(f"unknown dtype code {dtype_code}")
    if scale_code not in SCALE_NAMES:
        raise UnsupportedError(f"unknown scale kind code {scale_code}")
    if coding_code not in CODING_NAMES:
        raise UnsupportedError(f"unknown coding code {coding_code}")
    if not 1 <= d <= MAX_BUCKET_SIZE:
        raise CorruptDataError(f"bucket_size={d} outside 1..{MAX_BUCKET_SIZE}")
    if not 1 <= s <= MAX_LEVELS:
        raise CorruptDataError(f"levels={s} outside 1..{MAX_LEVELS}")
    shape = struct.unpack_from(f"<{ndim}Q", mv, FIXED_HEADER_LENGTH)
    product = 1
    for extent in shape:
        product *= extent
    if product != n:
        raise LengthError(f"shape {shape} holds {product} elements but n={n}")
    if max_elements is not None and n > max_elements:
        raise LimitError(f"message declares {n} elements, more than the limit of "
                         f"{max_elements} (pass max_elements= to raise it)")
    if max_elements is not None:
        check_representable(shape, DTYPE_NAMES[dtype_code])
    coding = CODING_NAMES[coding_code]
    nb = num_buckets(n, d)
    if coding == "dense":
        expected = 4 * nb + dense_codes_length(n, s)
        if body_length != expected:
            raise LengthError(f"body_length={body_length}, but a dense body of {n} elements, "
                              f"{nb} buckets and width {dense_width(s)} is {expected} bytes")
    elif body_length < 8 * nb:
        raise LengthError(f"body_length={body_length} is less than the {8 * nb} bytes of "
                          f"scales and bit lengths for {nb} buckets")
    has_crc = bool(flags & FLAG_CHECKSUM)
    expected_total = header_length + body_length + (CRC_LENGTH if has_crc else 0)
    if total < expected_total:
        raise TruncatedError(f"message is {total} bytes, but its header declares "
                             f"{expected_total}")
    if total > expected_total:
        raise TrailingDataError(f"{total - expected_total} bytes after the end of the message "
                                f"(declared length {expected_total})")
    if has_crc and verify_checksum:
        stored = int.from_bytes(mv[total - CRC_LENGTH:total], "little")
        actual = crc32(mv[:total - CRC_LENGTH])
        if stored != actual:
            raise ChecksumError(f"CRC-32 mismatch: stored 0x{stored:08x}, computed "
                                f"0x{actual:08x}")
    return Header(major, minor, header_length, flags, DTYPE_NAMES[dtype_code],
                  SCALE_NAMES[scale_code], coding, n, d, s, seed, body_length, tuple(shape))


#: the largest array, in bytes, NumPy (and a 64-bit signed size) can describe
MAX_ARRAY_BYTES = (1 << 63) - 1


def check_representable(shape, dtype):
    """LimitError unless an array of ``shape`` and ``dtype`` can exist: each extent, and the
    product of the non-zero extents times the element size, at most 2^63 - 1.  Only a
    message with n = 0 can fail this under any limit below 2^60 (say shape (2^62, 0)):
    its extents multiply to 0 elements, yet no array of that shape can be made."""
    size = DTYPE_ITEMSIZE[dtype]
    for extent in shape:
        if extent > MAX_ARRAY_BYTES:
            size = MAX_ARRAY_BYTES + 1
        elif extent:
            size *= extent
    if size > MAX_ARRAY_BYTES:
        raise LimitError(f"an array of shape {tuple(shape)} and dtype {dtype} cannot be "
                         f"represented: its non-zero extents times the element size exceed "
                         f"2^63 - 1 bytes")


def read_scales(data, header):
    """The nb float32 scales as a read-only array, validated (spec 5.1)."""
    nb = header.num_buckets
    scales = np.frombuffer(data, dtype="<f4", count=nb, offset=header.scales_offset)
    check_scales(scales, header.dtype)
    return scales


def check_scales(scales, dtype):
    if scales.size == 0:
        return
    bits = scales.view(np.uint32)
    bad = ~(scales <= np.float32(DTYPE_MAX[dtype])) | (bits >> 31 != 0)
    if bad.any():
        b = int(np.argmax(bad))
        raise CorruptDataError(f"scale of bucket {b} is {float(scales[b])!r} (bits 0x{int(bits[b]):08x}):"
                               f" a scale must be +0.0 or a positive finite float32 no larger "
                               f"than the {dtype} maximum")


def elias_table(data, header):
    """The elias bit lengths and the codes' byte offsets per bucket (spec 5.2, 5.3).

    Returns (bit_lengths uint32[nb], byte_offsets int64[nb + 1]).
    """
    nb = header.num_buckets
    lengths = np.frombuffer(data, dtype="<u4", count=nb, offset=header.table_offset)
    offsets = np.zeros(nb + 1, dtype=np.int64)
    np.cumsum((lengths.astype(np.int64) + 7) // 8, out=offsets[1:])
    codes_length = header.body_length - 8 * nb
    if offsets[-1] != codes_length:
        raise LengthError(f"elias bit lengths add up to {int(offsets[-1])} code bytes, but the "
                          f"body holds {codes_length}")
    return lengths, offsets


def bucket_extent(header, b):
    """Number of elements in bucket b."""
    return min(header.bucket_size, header.n - b * header.bucket_size)


def message_fields(header):
    """inspect()-style dictionary of the header fields."""
    return {
        "version": f"{header.major}.{header.minor}",
        "dtype": header.dtype,
        "shape": header.shape,
        "n": header.n,
        "bucket_size": header.bucket_size,
        "levels": header.levels,
        "scale": header.scale,
        "coding": header.coding,
        "seed": header.seed,
        "checksum": header.has_checksum,
        "header_length": header.header_length,
        "body_length": header.body_length,
        "num_buckets": header.num_buckets,
    }
