"""The header of QSGD wire format 1.0 and the checks a decoder makes before the codes.

Parsing and writing the header (spec section 3), the checksum (section 7), the scales and
the elias bit-length table (section 5), and the element limit (section 9).  Every backend
parses headers through :func:`parse_header` and writes them with :func:`pack_header`.
"""

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from ..errors import (
    D_BAD_SCALE,
    D_CHECKSUM,
    D_TABLE_SUM,
    BadMagicError,
    CorruptDataError,
    LengthError,
    LimitError,
    ParameterError,
    ReservedBitsError,
    TrailingDataError,
    TruncatedError,
    UnsupportedError,
    VersionError,
    defect,
)
from .constants import (
    CODING_CODES,
    CODING_NAMES,
    CRC_LENGTH,
    DEFAULT_MAX_ELEMENTS,
    DTYPE_CODES,
    DTYPE_ITEMSIZE,
    DTYPE_MAX,
    DTYPE_NAMES,
    FIXED_HEADER_LENGTH,
    FLAG_CHECKSUM,
    KNOWN_FLAGS,
    MAGIC,
    MAJOR,
    MAX_ARRAY_BYTES,
    MAX_BUCKET_SIZE,
    MAX_LEVELS,
    MAX_NDIM,
    MINOR,
    SCALE_CODES,
    SCALE_NAMES,
)
from .sizes import dense_codes_length, dense_width, num_buckets

_FIXED = struct.Struct("<4sBBHHBBBBHQIIQQ")
assert _FIXED.size == FIXED_HEADER_LENGTH


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


# ----------------------------------------------------------------------------- header I/O


def pack_header(
    *, dtype, scale, coding, shape, bucket_size, levels, seed, body_length, checksum=True
):
    """Header bytes of a version 1.0 message (spec section 3)."""
    shape = tuple(int(x) for x in shape)
    if len(shape) > MAX_NDIM:
        raise ParameterError(f"arrays with more than {MAX_NDIM} dimensions are not supported")
    n = 1
    for extent in shape:
        n *= extent
    header_length = FIXED_HEADER_LENGTH + 8 * len(shape)
    fixed = _FIXED.pack(
        MAGIC,
        MAJOR,
        MINOR,
        header_length,
        FLAG_CHECKSUM if checksum else 0,
        DTYPE_CODES[dtype],
        SCALE_CODES[scale],
        CODING_CODES[coding],
        len(shape),
        0,
        n,
        bucket_size,
        levels,
        seed,
        body_length,
    )
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
        raise ParameterError(
            f"a QSGD message must be a bytes-like object, got {type(data).__name__}"
        ) from None
    if not mv.c_contiguous:
        raise ParameterError(
            "a QSGD message must be a contiguous buffer; pass bytes(...) or "
            "numpy.ascontiguousarray(...)"
        )
    if mv.ndim != 1 or mv.format != "B":
        mv = mv.cast("B")
    return mv


def parse_header(data, *, max_elements=DEFAULT_MAX_ELEMENTS, verify_checksum=True):
    """Parse and validate a message's header (spec 3.4, 5.3 for dense, 7).

    ``data`` is any bytes-like object.  Returns a :class:`Header`.  Checks everything that
    can be checked without reading the body's codes; an elias message's table sum is
    checked by :func:`elias_table`.
    """
    if max_elements is not None and (
        isinstance(max_elements, bool)
        or not isinstance(max_elements, (int, np.integer))
        or max_elements < 0
    ):
        raise ParameterError(
            f"max_elements must be None or a non-negative integer, got {max_elements!r}"
        )
    mv = byte_view(data)
    total = mv.nbytes
    if total < 4 or bytes(mv[:4]) != MAGIC:
        if total < 4 and bytes(mv[:total]) == MAGIC[:total]:
            raise TruncatedError(f"message is {total} bytes, shorter than the 4-byte magic")
        raise BadMagicError(
            f"not a QSGD message: first bytes {bytes(mv[:4]).hex()} are not the magic {MAGIC.hex()}"
        )
    if total < 6:
        raise TruncatedError(f"message is {total} bytes, too short to hold the version")
    major, minor = mv[4], mv[5]
    if major != MAJOR:
        raise VersionError(
            f"unsupported QSGD format version {major}.{minor}; this reader "
            f"reads major version {MAJOR}"
        )
    if total < FIXED_HEADER_LENGTH:
        raise TruncatedError(
            f"message is {total} bytes, shorter than the {FIXED_HEADER_LENGTH}-byte fixed header"
        )
    (
        _,
        major,
        minor,
        header_length,
        flags,
        dtype_code,
        scale_code,
        coding_code,
        ndim,
        reserved,
        n,
        d,
        s,
        seed,
        body_length,
    ) = _FIXED.unpack_from(mv, 0)
    if flags & ~KNOWN_FLAGS:
        raise ReservedBitsError(f"reserved flag bits set: flags=0x{flags:04x}")
    if reserved:
        raise ReservedBitsError(
            f"reserved header field at offset 14 is 0x{reserved:04x}, must be 0"
        )
    if ndim > MAX_NDIM:
        raise CorruptDataError(f"ndim={ndim} exceeds the maximum {MAX_NDIM}")
    need = FIXED_HEADER_LENGTH + 8 * ndim
    if header_length < need:
        raise LengthError(
            f"header_length={header_length} is less than the {need} bytes its "
            f"{ndim} dimensions need"
        )
    if total < header_length:
        raise TruncatedError(
            f"message is {total} bytes, shorter than header_length={header_length}"
        )
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
        raise LimitError(
            f"message declares {n} elements, more than the limit of "
            f"{max_elements} (pass max_elements= to raise it)"
        )
    if max_elements is not None:
        check_representable(shape, DTYPE_NAMES[dtype_code])
    coding = CODING_NAMES[coding_code]
    nb = num_buckets(n, d)
    if coding == "dense":
        expected = 4 * nb + dense_codes_length(n, s)
        if body_length != expected:
            raise LengthError(
                f"body_length={body_length}, but a dense body of {n} elements, "
                f"{nb} buckets and width {dense_width(s)} is {expected} bytes"
            )
    elif body_length < 8 * nb:
        raise LengthError(
            f"body_length={body_length} is less than the {8 * nb} bytes of "
            f"scales and bit lengths for {nb} buckets"
        )
    has_crc = bool(flags & FLAG_CHECKSUM)
    expected_total = header_length + body_length + (CRC_LENGTH if has_crc else 0)
    if total < expected_total:
        raise TruncatedError(f"message is {total} bytes, but its header declares {expected_total}")
    if total > expected_total:
        raise TrailingDataError(
            f"{total - expected_total} bytes after the end of the message "
            f"(declared length {expected_total})"
        )
    if has_crc and verify_checksum:
        stored = int.from_bytes(mv[total - CRC_LENGTH : total], "little")
        actual = crc32(mv[: total - CRC_LENGTH])
        if stored != actual:
            raise defect(D_CHECKSUM, stored=stored, computed=actual)
    return Header(
        major,
        minor,
        header_length,
        flags,
        DTYPE_NAMES[dtype_code],
        SCALE_NAMES[scale_code],
        coding,
        n,
        d,
        s,
        seed,
        body_length,
        tuple(shape),
    )


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
        raise LimitError(
            f"an array of shape {tuple(shape)} and dtype {dtype} cannot be "
            f"represented: its non-zero extents times the element size exceed "
            f"2^63 - 1 bytes"
        )


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
        raise defect(D_BAD_SCALE, b, value=scales[b], bits=int(bits[b]), dtype=dtype)


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
        raise defect(D_TABLE_SUM, code_bytes=int(offsets[-1]), body_bytes=codes_length)
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


def element_limit(max_elements=None, out_size=None):
    """The element limit of one decode (spec 9): ``max_elements`` (default 2^28 elements);
    when the caller supplies the output, its size bounds it too."""
    if out_size is not None:
        return out_size if max_elements is None else min(max_elements, out_size)
    return DEFAULT_MAX_ELEMENTS if max_elements is None else max_elements
