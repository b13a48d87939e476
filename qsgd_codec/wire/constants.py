"""Numbers and enumerations of QSGD wire format 1.0 (spec/wire-format.md sections 3-5, 9).

Every limit, field code and size constant of the format has its one home here; the header
code, the reference, the kernels and the adapters all read them from this module.
"""

import numpy as np

MAGIC = b"\x89QSG"
MAJOR = 1
MINOR = 0
FIXED_HEADER_LENGTH = 48
MAX_NDIM = 64
MAX_BUCKET_SIZE = 1 << 24
MAX_LEVELS = (1 << 24) - 1
MIN_BITS, MAX_BITS = 2, 25
#: the longest elias omega group: the binary form of a value below 2^25 (gaps <= 2^24,
#: levels < 2^24), so a longer group is corrupt (spec 6.2)
MAX_OMEGA_GROUP = 25
#: the longest elias entry: omega(gap <= 2^24) = 36 bits, a sign bit, omega(level) <= 36 bits
MAX_ENTRY_BITS = 73
#: decoder's default element limit: 2^28 elements (1 GiB of float32); see spec section 9
DEFAULT_MAX_ELEMENTS = 1 << 28
CRC_LENGTH = 4
#: the largest array, in bytes, NumPy (and a 64-bit signed size) can describe
MAX_ARRAY_BYTES = (1 << 63) - 1

FLAG_CHECKSUM = 1
KNOWN_FLAGS = FLAG_CHECKSUM

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
DEFAULT_LEVELS = (1 << (DEFAULT_BITS - 1)) - 1
DEFAULT_BUCKET_SIZE = 512
DEFAULT_SCALE = "max"
DEFAULT_CODING = "dense"
DEFAULT_SEED = 0

__all__ = [name for name in dir() if name.isupper()]
