"""Numba CPU kernels of the QSGD codec: byte-identical to :mod:`qsgd_codec.reference`.

Every kernel is a module-level ``@njit(cache=True)`` function over flat arrays, byte
offsets and bit positions (no closures, no jitclasses), so numba's on-disk cache holds them
all.  The modules, lowest first (each imports only the ones above it; none imports
:mod:`.drivers`):

- :mod:`.convert` -- per-dtype kernel parameters (:data:`DTYPES`) and exact conversions;
- :mod:`.byteio` -- little- and big-endian word loads and stores;
- :mod:`.crc` -- CRC-32 (:func:`crc32`, :data:`CRC_IMPLEMENTATION`);
- :mod:`.quantize` -- scales (spec 8.2), the random source (8.3), quantization (8.4);
- :mod:`.dense` -- dense encoding (6.1);
- :mod:`.elias` -- the omega tables and elias encoding (6.2);
- :mod:`.decode` -- dense and elias decoding (9);
- :mod:`.drivers` -- the Python side that :mod:`qsgd_codec.api` calls.

Layout of the work
------------------
- Input values arrive as their raw bit patterns (uint16 for float16/bfloat16, uint32 for
  float32, uint64 for float64) and are converted exactly to binary64 inside the loops
  (``convert._to_f64``), so no converted copy of the input is ever made.
- Work is split into *chunks*: runs of whole buckets of about ``CHUNK`` elements whose first
  element index is a multiple of 8, so that a chunk's dense codes start on a byte boundary
  for every field width.  Chunks write disjoint bytes; a chunk's bytes depend only on the
  spec, never on which thread ran it or how many threads there are.  The parallel driver of
  each kernel is a ``prange`` over chunks; its serial twin (for small inputs and
  ``numba.set_num_threads(1)``-free use) is a plain loop over the same chunk function.
- Dense encoding is one fused pass per bucket: the scale, then quantization and packing of
  the same bucket while it is still in cache.  Buckets larger than a chunk take two passes
  (scales, then quantization in element chunks) so that one huge bucket still uses every
  thread.
- Elias encoding takes two passes over the input: the first computes scales and each
  bucket's exact code length ``L_b``, the second quantizes again (the same pure function of
  seed and index) and writes each bucket at its byte offset.  Memory stays at the output
  plus O(number of buckets).
- Decoding reads the message through hand bounds checks (a read past the message is never
  attempted) and reports the first defect of each chunk in a small status array, with the
  codes of :data:`qsgd_codec.errors.DEFECTS`; the Python side raises
  :func:`qsgd_codec.errors.defect` of the first one, so the error class and message are
  the reference's.

Hot loops run over slices with indices counting from 0: numba then knows an index is not
negative, drops its wraparound check and LLVM vectorizes the loop.

Floating point: no fastmath; binary64 operations are written exactly as spec 8.4 and 9 write
them (LLVM does not contract a multiply and an add into an FMA without fast-math flags).
"""

from . import crc as _crc
from .convert import DTYPES  # noqa: F401
from .crc import crc32  # noqa: F401
from .drivers import (  # noqa: F401
    CHUNK,
    PARALLEL_MIN,
    decode_into,
    elias_code_bits,
    encode_array,
    encode_bits,
    flat_bits,
    message_array,
    verify_checksum,
    warmup,
)


def __getattr__(name):
    # read through: crc32 switches to the table kernel if the CPU lacks an intrinsic
    if name == "CRC_IMPLEMENTATION":
        return _crc.CRC_IMPLEMENTATION
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
