"""Length arithmetic of the format: buckets, dense widths, omega code lengths, message sizes.

Pure integer arithmetic (spec sections 4, 5.3 and 6), shared by the header checks, every
encoder and :func:`qsgd_codec.max_encoded_size`.
"""

from .constants import CRC_LENGTH, FIXED_HEADER_LENGTH


def num_buckets(n: int, d: int) -> int:
    """nb = ceil(n / d)."""
    return -(-n // d)


def dense_width(levels: int) -> int:
    """w = bit_length(s) + 1: two's complement of -s .. s (spec section 4)."""
    return int(levels).bit_length() + 1


def dense_codes_length(n: int, levels: int) -> int:
    """Bytes of the dense codes of n fields: ceil(n * w / 8)."""
    return -(-(n * dense_width(levels)) // 8)


def omega_length(value: int) -> int:
    """Bits of the Elias omega code of ``value >= 1`` (spec 6.2)."""
    length = 1  # the terminating 0
    while value > 1:
        b = int(value).bit_length()
        length += b
        value = b - 1
    return length


def header_length(ndim: int) -> int:
    """header_length of a version 1.0 message with ``ndim`` dimensions."""
    return FIXED_HEADER_LENGTH + 8 * ndim


def encoded_size(shape, params) -> int:
    """Message length for an array of ``shape`` encoded with ``params`` (an EncodeParams).

    Exact for dense coding; for elias coding the length when every level is +-s with gaps
    of 1 (the longest message the parameters allow), so a buffer of this size always holds
    the message.
    """
    n = 1
    for extent in shape:
        n *= int(extent)
    d, s = params.bucket_size, params.levels
    nb = num_buckets(n, d)
    crc = CRC_LENGTH if params.checksum else 0
    head = header_length(len(shape))
    if params.coding == "dense":
        return head + 4 * nb + dense_codes_length(n, s) + crc
    per = 2 + omega_length(s)  # bits per element: omega(1), the sign, omega(s)
    full, last = divmod(n, d)
    codes = full * -(-(d * per) // 8) + (-(-(last * per) // 8) if last else 0)
    return head + 8 * nb + codes + crc
