"""The GPU codec: QSGD wire format 1.0 encoded and decoded by CUDA kernels (numba-cuda).

The bytes are the reference's (:mod:`qsgd_codec.reference`), bit for bit, for every input,
coding, scale kind and dtype.  docs/gpu.md explains the kernels, the stream rules and how
to measure them; this docstring is the short version.

Public functions
----------------
- :func:`encode` (``x`` a device array) -> host ``bytes``, or a device ``uint8`` array with
  ``device_output=True``.
- :func:`decode` (``data`` host bytes or a device ``uint8`` array) -> a device array, or fills
  the device array ``out``.
- :func:`encode_device` / :func:`decode_device`: the hooks :mod:`qsgd_codec.api` calls when
  ``encode`` gets a device array or ``decode`` gets a device ``out``.
- :func:`is_available`, :func:`audit_ptx`, :func:`kernel_signatures`.

Device arrays are whatever :func:`qsgd_codec.cuda.arrays.as_device_array` takes: numba device
arrays (also the simulator's), objects exposing ``__cuda_array_interface__`` (CuPy, PyTorch
CUDA tensors, JAX GPU arrays), CUDA DLPack producers.  The input is never copied to the host;
it must be C-contiguous.

Modules
-------
- :mod:`.primitives`: the only code that differs between a GPU and the simulator;
- :mod:`.layout`: sizes, dtype codes, the status array's slots;
- :mod:`.device`: device functions (loads, conversions, rounding, scans, bit I/O);
- :mod:`.encoder`, :mod:`.scan`, :mod:`.decoder`, :mod:`.crc`: the kernels (not named
  ``encode``/``decode``: those names are the public functions);
- :mod:`.arrays`: device arrays, messages and streams;
- :mod:`.host`: launch sizing, :func:`encode_device`, :func:`decode_device`, error reading;
- :mod:`.audit`: :func:`kernel_signatures`, :func:`audit_ptx`.

Exactness
---------
The spec (sections 8.2-9) writes every floating-point operation out.  On the GPU, NVVM
contracts a multiply feeding an add into an FMA by default, which changes a rounding and so a
byte.  The kernels do every binary64 product, sum, quotient and square root through ``_mul``,
``_add``, ``_div`` and ``_sqrt``: on a GPU the libdevice intrinsics ``dmul_rn``, ``dadd_rn``,
``ddiv_rn`` and ``dsqrt_rn``, which lower to ``mul.rn.f64`` etc. (an explicit rounding mode
is never contracted).  :func:`audit_ptx` checks the generated PTX for any FMA, approximate or
flush-to-zero instruction.  The counter-based generator is :func:`qsgd_codec.wire.rng.mix64`
compiled as a device function (uint64 arithmetic).  Rounding up to float32 and the
float16/bfloat16 conversions use exact operations (``frexp``, ``ldexp``, integer rounding).

Under ``NUMBA_ENABLE_CUDASIM=1`` six primitives are plain Python instead: the four above
(Python's float arithmetic is IEEE binary64, round to nearest, never fused), ``_ldexp`` and
the generator ``_u53`` (:func:`qsgd_codec.wire.rng.random_word` on ``np.uint64`` values; the
GPU version is checked against the spec by compiling it for the CPU in tests/test_cuda.py).
Every other line of every kernel is the code the GPU runs.  The simulator also gets a lock
around its shared-array creation
(:func:`qsgd_codec.cuda.primitives._patch_simulator_shared_arrays`).

Errors
------
The kernels report defects with the codes of :data:`qsgd_codec.errors.DEFECTS`, and the host
raises :func:`qsgd_codec.errors.defect` of the first one, in the reference's order: the same
class and message as the reference for the same message.

Streams
-------
Every kernel, allocation and copy of one call is queued on ``stream`` (default: numba's
default stream).  ``stream`` may be a numba stream, a raw ``cudaStream_t`` handle (int), or an
object with a ``cuda_stream`` (PyTorch) or ``ptr`` (CuPy) attribute.  Inputs imported through
``__cuda_array_interface__`` are synchronised with the stream their producer exported (CAI v3).
Each call synchronises ``stream`` before it returns: to raise errors (non-finite input, corrupt
messages) and, for elias encoding, to size the output from the bit lengths.  The returned
arrays are complete when the call returns.

CRC-32
------
Computed on the device (the message never passes through the host for it): each thread
takes the CRC register of a 1 KiB chunk with slicing-by-4 tables, multiplies it by
x^(8 * bytes after the chunk) modulo the polynomial (crc32_combine's algebra), the
contributions are XORed, and the last block to finish applies the initial and final XOR.
"""

from ..errors import ParameterError

try:
    import numba.cuda  # noqa: F401
    from numba.cuda.core import config as _cuda_config  # noqa: F401
except ImportError as exc:  # pragma: no cover - numba-cuda is an optional extra
    raise ParameterError(
        f"the GPU codec needs the numba-cuda package: pip install 'qsgd_codec[cuda]' ({exc})"
    ) from exc

from .audit import audit_ptx, kernel_signatures  # noqa: E402
from .host import decode, decode_device, encode, encode_device, is_available  # noqa: E402
from .primitives import SIMULATOR  # noqa: E402

__all__ = [
    "encode",
    "decode",
    "encode_device",
    "decode_device",
    "is_available",
    "audit_ptx",
    "kernel_signatures",
    "SIMULATOR",
]
