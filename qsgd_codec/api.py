"""The public functions: encode, decode, inspect, max_encoded_size, warmup.

They validate parameters, route inputs through :mod:`qsgd_codec.interop`, and call a
backend: the Numba CPU kernels (:mod:`qsgd_codec.cpu`) on little-endian hosts, else the
reference implementation.  Both give the same bytes; the reference stays the test oracle.
"""

import sys

import numpy as np

from . import format as fmt
from . import interop
from . import reference
from .errors import ParameterError

#: the Numba kernels assume a little-endian host (the wire format is little-endian)
FAST = sys.byteorder == "little"


_CPU = []


def _cpu():
    """qsgd_codec.cpu, imported on first use (it imports numba's compiler)."""
    if not _CPU:
        from . import cpu
        _CPU.append(cpu)
    return _CPU[0]


def _backend():
    return _cpu() if FAST else reference


def encode(x, *, bits=None, levels=None, bucket_size=None, scale=None, coding=None, seed=None,
           checksum=True, out=None):
    """Encode an array to QSGD wire-format bytes (spec/wire-format.md).

    Parameters
    ----------
    x : array-like of float16, bfloat16, float32 or float64 (NumPy, buffer, DLPack, ...)
        Any shape and strides; values are taken in C order (a non-contiguous input is
        copied once).
    bits : int, optional
        Dense code width b in 2..25; means levels s = 2**(b-1) - 1.  Default 8 (s = 127).
    levels : int, optional
        s directly, 1 .. 2**24 - 1 (for example ``int(sqrt(bucket_size))``).
    bucket_size : int, default 512
    scale : {"max", "l2"}, default "max"
    coding : {"dense", "elias"}, default "dense"
    seed : int, default 0
        Key of the counter-based random source.  Encoding is a pure function of the input,
        the parameters and the seed; vary the seed per step and per worker.
    checksum : bool, default True
        Append a CRC-32 trailer.
    out : writable bytes-like, optional
        A C-contiguous buffer (``bytearray``, ``numpy.uint8`` array, writable
        ``memoryview``, ...) that receives the message from its first byte.  Size it with
        :func:`max_encoded_size` (exact for dense coding, a bound for elias).  With ``out``
        the result is a ``memoryview`` of the bytes written (its ``nbytes`` is the message
        length) and no message-sized allocation is made; a too-small ``out`` raises
        :class:`ParameterError` before anything is written.  After any other error the
        contents of ``out`` are unspecified.

    Returns
    -------
    bytes, or a memoryview into ``out``.
    """
    params = fmt.encode_params(bits=bits, levels=levels, bucket_size=bucket_size, scale=scale,
                               coding=coding, seed=seed, checksum=checksum)
    if out is not None:
        out = _encode_out(out)
    if interop.is_device_array(x):
        from . import cuda  # the GPU path; imported only when a device array arrives
        if out is not None:
            return _copy_into(out, cuda.encode_device(x, params))
        return cuda.encode_device(x, params)
    arr = interop.as_host_array(x)
    if FAST:
        return _cpu().encode_array(arr, params, out=out)
    message = reference.encode_array(arr, params)
    return message if out is None else _copy_into(out, message)


def _encode_out(out):
    """``out`` as a flat writable uint8 array sharing its memory."""
    try:
        mv = memoryview(out)
    except TypeError:
        raise ParameterError(f"out must be a writable bytes-like object (bytearray, numpy "
                             f"uint8 array, memoryview), got {type(out).__name__}") from None
    if mv.readonly:
        raise ParameterError("out is read-only")
    if not mv.c_contiguous:
        raise ParameterError("out must be a C-contiguous buffer")
    arr = np.frombuffer(mv.cast("B") if mv.ndim != 1 or mv.format != "B" else mv,
                        dtype=np.uint8)
    return arr


def _copy_into(out, message):
    n = len(message)
    if out.size < n:
        raise ParameterError(f"out holds {out.size} bytes but the message needs {n}; size it "
                             f"with qsgd_codec.max_encoded_size(...)")
    out[:n] = np.frombuffer(message, dtype=np.uint8)
    return memoryview(out)[:n]


def max_encoded_size(shape, *, bits=None, levels=None, bucket_size=None, scale=None,
                     coding=None, seed=None, checksum=True):
    """Bytes that :func:`encode` may write for an array of ``shape`` with these parameters.

    ``shape`` is a tuple (or an int ``n`` for a 1-D array).  For dense coding this is the
    exact message length; for elias coding it is the length when every level is +-s
    (the longest message the parameters allow), so a buffer of this size always suffices
    for ``encode(..., out=buffer)``.
    """
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (int(shape),)
    try:
        shape = tuple(int(extent) for extent in shape)
    except TypeError:
        raise ParameterError(f"shape must be an int or a tuple of ints, got "
                             f"{type(shape).__name__}") from None
    if any(extent < 0 for extent in shape) or len(shape) > fmt.MAX_NDIM:
        raise ParameterError(f"invalid shape {shape}")
    params = fmt.encode_params(bits=bits, levels=levels, bucket_size=bucket_size, scale=scale,
                               coding=coding, seed=seed, checksum=checksum)
    return _cpu().encoded_size(shape, params)


def decode(data, *, out=None, max_elements=None, like=None):
    """Decode QSGD bytes to an array of the original dtype and shape.

    ``max_elements`` bounds what a message may make this call allocate (default 2**28);
    with ``out`` given, its size is the bound and the values are written into it (a
    C-contiguous ``out`` is written in place with no further allocation; a strided one
    through one temporary).  After an error the contents of ``out`` are unspecified.
    ``like``: return an array of that object's framework and device (see interop).
    """
    if out is not None and interop.is_device_array(out):
        from . import cuda
        return cuda.decode_device(data, out=out, max_elements=max_elements)
    if like is not None:
        return interop.decode_like(data, like, max_elements=max_elements)
    if out is not None:
        out = _check_out(out)
        max_elements = out.size if max_elements is None else min(max_elements, out.size)
    elif max_elements is None:
        max_elements = fmt.DEFAULT_MAX_ELEMENTS
    if not FAST:
        header, bits = reference.decode_bits(data, max_elements=max_elements)
        if out is None:
            return bits.view(fmt.numpy_dtype(header.dtype)).reshape(header.shape)
        _fill_out(out, header, bits)
        return out
    cpu = _cpu()
    header = fmt.parse_header(data, max_elements=max_elements, verify_checksum=False)
    msg = cpu.message_array(data)
    cpu.verify_checksum(msg, header)
    bits_dtype = fmt.bits_dtype(header.dtype)
    if out is None:
        flat = np.empty(header.n, dtype=bits_dtype)
        cpu.decode_into(header, msg, flat)
        # after validation, as in the reference: bfloat16 needs ml_dtypes only to be returned
        return flat.view(fmt.numpy_dtype(header.dtype)).reshape(header.shape)
    _check_out_matches(out, header)
    if out.flags.c_contiguous:
        cpu.decode_into(header, msg, out.reshape(-1).view(bits_dtype))
    else:
        flat = np.empty(header.n, dtype=bits_dtype)
        cpu.decode_into(header, msg, flat)
        out[...] = flat.view(out.dtype).reshape(out.shape)
    return out


def _check_out(out):
    if not isinstance(out, np.ndarray):
        as_host_out = getattr(interop, "as_host_out", None)
        if as_host_out is None:
            raise ParameterError(f"out must be a NumPy array, got {type(out).__name__}")
        out = as_host_out(out)
    if not out.flags.writeable:
        raise ParameterError("out is read-only")
    fmt.dtype_name(out.dtype)
    if not out.dtype.isnative:
        raise ParameterError(f"out has non-native byte order ({out.dtype}); pass a native "
                             f"array")
    return out


def _check_out_matches(out, header):
    if out.size != header.n:
        raise ParameterError(f"out has {out.size} elements but the message holds {header.n}")
    if fmt.dtype_name(out.dtype) != header.dtype:
        raise ParameterError(f"out has dtype {out.dtype} but the message holds {header.dtype}")


def _fill_out(out, header, bits):
    _check_out_matches(out, header)
    target = out.view(fmt.bits_dtype(header.dtype)) if out.flags.c_contiguous else None
    if target is not None:
        target.reshape(-1)[...] = bits
    else:
        out.reshape(out.shape)[...] = bits.view(out.dtype).reshape(out.shape)


def inspect(data):
    """The message's header fields, sizes and bits per coordinate (no decoding of codes)."""
    if not FAST:
        header = fmt.parse_header(data, max_elements=None)
    else:
        cpu = _cpu()
        header = fmt.parse_header(data, max_elements=None, verify_checksum=False)
        msg = cpu.message_array(data)
        cpu.verify_checksum(msg, header)
    info = fmt.message_fields(header)
    total = header.message_length
    info["message_bytes"] = total
    info["original_bytes"] = header.n * fmt.DTYPE_ITEMSIZE[header.dtype]
    info["bits_per_coordinate"] = 8 * total / header.n if header.n else float("nan")
    info["compression_ratio"] = info["original_bytes"] / total
    if header.coding == "elias":
        if FAST:
            info["code_bits"] = cpu.elias_code_bits(msg, header)
        else:
            lengths, _ = fmt.elias_table(data, header)
            info["code_bits"] = int(lengths.astype(np.int64).sum())
    return info


def warmup():
    """Compile, or load from numba's on-disk cache, every CPU kernel (both codings, every
    dtype, serial and parallel drivers, the CRC), so that the first real call is fast.

    Returns a dict of seconds per group of kernels and ``"total"``.  The first run in a
    fresh environment compiles (tens of seconds); later processes load the cache.
    """
    if not FAST:
        return {"total": 0.0}
    return _cpu().warmup()
