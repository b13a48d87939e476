"""The public functions: encode, decode, inspect.

They validate parameters, route inputs through :mod:`qsgd_codec.interop`, and call a
backend: the Numba CPU kernels when available, else the reference implementation.
"""

import numpy as np

from . import format as fmt
from . import interop
from . import reference
from .errors import ParameterError


def _backend():
    return reference


def encode(x, *, bits=None, levels=None, bucket_size=None, scale=None, coding=None, seed=None,
           checksum=True):
    """Encode an array to QSGD wire-format bytes (spec/wire-format.md).

    Parameters
    ----------
    x : array-like of float16, bfloat16, float32 or float64 (NumPy, buffer, DLPack, ...)
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
    """
    params = fmt.encode_params(bits=bits, levels=levels, bucket_size=bucket_size, scale=scale,
                               coding=coding, seed=seed, checksum=checksum)
    if interop.is_device_array(x):
        from . import cuda  # the GPU path; imported only when a device array arrives
        return cuda.encode_device(x, params)
    arr = interop.as_host_array(x)
    return _backend().encode_array(arr, params)


def decode(data, *, out=None, max_elements=None, like=None):
    """Decode QSGD bytes to an array of the original dtype and shape.

    ``max_elements`` bounds what a message may make this call allocate (default 2**28);
    with ``out`` given, its size is the bound and the values are written into it.
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
    header, bits = reference.decode_bits(data, max_elements=max_elements)
    if out is None:
        return bits.view(fmt.numpy_dtype(header.dtype)).reshape(header.shape)
    _fill_out(out, header, bits)
    return out


def _check_out(out):
    if not isinstance(out, np.ndarray):
        raise ParameterError(f"out must be a NumPy array, got {type(out).__name__}")
    if not out.flags.writeable:
        raise ParameterError("out is read-only")
    fmt.dtype_name(out.dtype)
    return out


def _fill_out(out, header, bits):
    if out.size != header.n:
        raise ParameterError(f"out has {out.size} elements but the message holds {header.n}")
    if fmt.dtype_name(out.dtype) != header.dtype:
        raise ParameterError(f"out has dtype {out.dtype} but the message holds {header.dtype}")
    target = out.view(fmt.bits_dtype(header.dtype)) if out.flags.c_contiguous else None
    if target is not None:
        target.reshape(-1)[...] = bits
    else:
        out.reshape(out.shape)[...] = bits.view(out.dtype).reshape(out.shape)


def inspect(data):
    """The message's header fields, sizes and bits per coordinate (no decoding of codes)."""
    header = fmt.parse_header(data, max_elements=None)
    info = fmt.message_fields(header)
    total = header.message_length
    info["message_bytes"] = total
    info["original_bytes"] = header.n * fmt.DTYPE_ITEMSIZE[header.dtype]
    info["bits_per_coordinate"] = 8 * total / header.n if header.n else float("nan")
    info["compression_ratio"] = info["original_bytes"] / total
    if header.coding == "elias":
        lengths, _ = fmt.elias_table(data, header)
        info["code_bits"] = int(lengths.astype(np.int64).sum())
    return info
