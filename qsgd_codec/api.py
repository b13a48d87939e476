"""The public functions: encode, decode, inspect, max_encoded_size, warmup, and decode_like.

They take parameters as keywords or as one :class:`~qsgd_codec.wire.EncodeParams`
(``params=``, validated when it was made and used as it is), route inputs through
:mod:`qsgd_codec.interop`, and call a backend: the Numba CPU kernels (:mod:`qsgd_codec.cpu`)
on little-endian hosts, else the reference implementation, or the GPU kernels
(:mod:`qsgd_codec.cuda`) for device arrays.  All give the same bytes; the reference stays the
test oracle.  The backends are imported on first use, so ``import qsgd_codec`` compiles
nothing.
"""

import sys
from typing import Any, Optional, Union

import numpy as np

from . import interop, reference, wire
from .errors import ParameterError, out_too_small
from .wire import EncodeParams

#: the Numba kernels assume a little-endian host (the wire format is little-endian)
FAST = sys.byteorder == "little"

_CPU = []


def _cpu():
    """qsgd_codec.cpu, imported on first use (it imports numba's compiler)."""
    if not _CPU:
        from . import cpu

        _CPU.append(cpu)
    return _CPU[0]


def encode(
    x: Any,
    *,
    bits: Optional[int] = None,
    levels: Optional[int] = None,
    bucket_size: Optional[int] = None,
    scale: Optional[str] = None,
    coding: Optional[str] = None,
    seed: Optional[int] = None,
    checksum: Optional[bool] = None,
    out: Any = None,
    params: Optional[EncodeParams] = None,
) -> Union[bytes, memoryview]:
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
        the parameters and the seed; vary the seed per step and per worker (see
        :func:`qsgd_codec.derive_seed`).
    checksum : bool, default True
        Append a CRC-32 trailer.
    params : EncodeParams, optional
        All of the above in one validated object, used as it is (then pass none of the
        keywords above).
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
    params = wire.resolve_params(
        params,
        bits=bits,
        levels=levels,
        bucket_size=bucket_size,
        scale=scale,
        coding=coding,
        seed=seed,
        checksum=checksum,
    )
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
        raise ParameterError(
            f"out must be a writable bytes-like object (bytearray, numpy "
            f"uint8 array, memoryview), got {type(out).__name__}"
        ) from None
    if mv.readonly:
        raise ParameterError("out is read-only")
    if not mv.c_contiguous:
        raise ParameterError("out must be a C-contiguous buffer")
    arr = np.frombuffer(mv.cast("B") if mv.ndim != 1 or mv.format != "B" else mv, dtype=np.uint8)
    return arr


def _copy_into(out, message):
    n = len(message)
    if out.size < n:
        raise out_too_small(out.size, n)
    out[:n] = np.frombuffer(message, dtype=np.uint8)
    return memoryview(out)[:n]


def max_encoded_size(
    shape: Union[int, tuple],
    *,
    bits: Optional[int] = None,
    levels: Optional[int] = None,
    bucket_size: Optional[int] = None,
    scale: Optional[str] = None,
    coding: Optional[str] = None,
    seed: Optional[int] = None,
    checksum: Optional[bool] = None,
    params: Optional[EncodeParams] = None,
) -> int:
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
        raise ParameterError(
            f"shape must be an int or a tuple of ints, got {type(shape).__name__}"
        ) from None
    if any(extent < 0 for extent in shape) or len(shape) > wire.MAX_NDIM:
        raise ParameterError(f"invalid shape {shape}")
    params = wire.resolve_params(
        params,
        bits=bits,
        levels=levels,
        bucket_size=bucket_size,
        scale=scale,
        coding=coding,
        seed=seed,
        checksum=checksum,
    )
    return wire.encoded_size(shape, params)


def decode(
    data: Any, *, out: Any = None, max_elements: Optional[int] = None, like: Any = None
) -> Any:
    """Decode QSGD bytes to an array of the original dtype and shape.

    ``max_elements`` bounds what a message may make this call allocate (default 2**28);
    with ``out`` given, its size is the bound and the values are written into it (a
    C-contiguous ``out`` is written in place with no further allocation; a strided one
    through one temporary).  After an error the contents of ``out`` are unspecified.
    ``like``: return an array of that object's framework and device (:func:`decode_like`).
    """
    if out is not None and interop.is_device_array(out):
        from . import cuda

        return cuda.decode_device(data, out=out, max_elements=max_elements)
    if like is not None:
        return decode_like(data, like, max_elements=max_elements)
    if out is None:
        header, flat = _decode_bits(data, wire.element_limit(max_elements))
        # after validation, as in the reference: bfloat16 needs ml_dtypes only to be returned
        return flat.view(wire.numpy_dtype(header.dtype)).reshape(header.shape)
    out = _check_out(out)
    max_elements = wire.element_limit(max_elements, out.size)
    if not FAST:
        header, bits = reference.decode_bits(data, max_elements=max_elements)
        _fill_out(out, header, bits)
        return out
    cpu = _cpu()
    header = wire.parse_header(data, max_elements=max_elements, verify_checksum=False)
    msg = cpu.message_array(data)
    cpu.verify_checksum(msg, header)
    bits_dtype = wire.bits_dtype(header.dtype)
    _check_out_matches(out, header)
    if out.flags.c_contiguous:
        cpu.decode_into(header, msg, out.reshape(-1).view(bits_dtype))
    else:
        flat = np.empty(header.n, dtype=bits_dtype)
        cpu.decode_into(header, msg, flat)
        out[...] = flat.view(out.dtype).reshape(out.shape)
    return out


def _decode_bits(data, max_elements):
    """(header, the decoded values as a flat array of raw bit patterns): no ml_dtypes needed."""
    if not FAST:
        return reference.decode_bits(data, max_elements=max_elements)
    cpu = _cpu()
    header = wire.parse_header(data, max_elements=max_elements, verify_checksum=False)
    msg = cpu.message_array(data)
    cpu.verify_checksum(msg, header)
    flat = np.empty(header.n, dtype=wire.bits_dtype(header.dtype))
    cpu.decode_into(header, msg, flat)
    return header, flat


def _check_out(out):
    if not isinstance(out, np.ndarray):
        out = interop.as_host_out(out)
    if not out.flags.writeable:
        raise ParameterError("out is read-only")
    wire.dtype_name(out.dtype)
    if not out.dtype.isnative:
        raise ParameterError(f"out has non-native byte order ({out.dtype}); pass a native array")
    return out


def _check_out_matches(out, header):
    if out.size != header.n:
        raise ParameterError(f"out has {out.size} elements but the message holds {header.n}")
    if wire.dtype_name(out.dtype) != header.dtype:
        raise ParameterError(f"out has dtype {out.dtype} but the message holds {header.dtype}")


def _fill_out(out, header, bits):
    _check_out_matches(out, header)
    target = out.view(wire.bits_dtype(header.dtype)) if out.flags.c_contiguous else None
    if target is not None:
        target.reshape(-1)[...] = bits
    else:
        out.reshape(out.shape)[...] = bits.view(out.dtype).reshape(out.shape)


def inspect(data: Any) -> dict:
    """The message's header fields, sizes and bits per coordinate (no decoding of codes)."""
    if not FAST:
        header = wire.parse_header(data, max_elements=None)
    else:
        cpu = _cpu()
        header = wire.parse_header(data, max_elements=None, verify_checksum=False)
        msg = cpu.message_array(data)
        cpu.verify_checksum(msg, header)
    info = wire.message_fields(header)
    total = header.message_length
    info["message_bytes"] = total
    info["original_bytes"] = header.n * wire.DTYPE_ITEMSIZE[header.dtype]
    info["bits_per_coordinate"] = 8 * total / header.n if header.n else float("nan")
    info["compression_ratio"] = info["original_bytes"] / total
    if header.coding == "elias":
        if FAST:
            info["code_bits"] = cpu.elias_code_bits(msg, header)
        else:
            lengths, _ = wire.elias_table(data, header)
            info["code_bits"] = int(lengths.astype(np.int64).sum())
    return info


def warmup() -> dict:
    """Compile, or load from numba's on-disk cache, every CPU kernel (both codings, every
    dtype, serial and parallel drivers, the CRC), so that the first real call is fast.

    Returns a dict of seconds per group of kernels and ``"total"``.  The first run in a
    fresh environment compiles (tens of seconds); later processes load the cache.
    """
    if not FAST:
        return {"total": 0.0}
    return _cpu().warmup()


# ----------------------------------------------------------------------------- decode_like


def _peek_header(data, max_elements):
    """The header, checked (limit included) but for the CRC, which the decoder verifies."""
    return wire.parse_header(
        data, max_elements=wire.element_limit(max_elements), verify_checksum=False
    )


def _decode_host(data, max_elements):
    return decode(data, max_elements=max_elements)


def _decode_host_bits(data, max_elements):
    """Decoded values as raw bit patterns (uint16/32/64), shape set: no ml_dtypes needed."""
    header, flat = _decode_bits(data, wire.element_limit(max_elements))
    return header, flat.reshape(header.shape)


def _cuda_module():
    """qsgd_codec.cuda when a CUDA device (or the simulator) is usable, else None."""
    try:
        from numba import cuda

        from . import cuda as qcuda

        if not cuda.is_available():
            return None
    except Exception:
        return None
    return qcuda


def _decode_torch(data, like, max_elements):
    import torch

    device = like.device
    if device.type == "cuda":
        qcuda = _cuda_module()
        if qcuda is not None:
            header = _peek_header(data, max_elements)
            dtype = getattr(torch, header.dtype)
            out = torch.empty(header.shape, dtype=dtype, device=device)
            qcuda.decode_device(data, out=out, max_elements=max_elements)
            return out
    header, bits = _decode_host_bits(data, max_elements)
    if not bits.flags.writeable:
        bits = bits.copy()
    if header.dtype == "bfloat16":
        result = torch.from_numpy(bits.view(np.int16)).view(torch.bfloat16)
    else:
        result = torch.from_numpy(bits.view(np.dtype(header.dtype)))
    return result if device.type == "cpu" else result.to(device)


def _decode_jax(data, like, max_elements):
    import jax

    host = _decode_host(data, max_elements)
    try:
        devices = list(like.devices())
    except Exception:
        devices = []
    if len(devices) == 1:
        return jax.device_put(host, devices[0])
    return jax.numpy.asarray(host)


def _decode_cupy(data, like, max_elements):
    import cupy

    qcuda = _cuda_module()
    if qcuda is not None:
        header = _peek_header(data, max_elements)
        if header.dtype != "bfloat16":
            with cupy.cuda.Device(like.device.id):
                out = cupy.empty(header.shape, dtype=header.dtype)
            qcuda.decode_device(data, out=out, max_elements=max_elements)
            return out
    host = _decode_host(data, max_elements)
    with cupy.cuda.Device(like.device.id):
        return cupy.asarray(host)


def _decode_numba(data, max_elements):
    qcuda = _cuda_module()
    if qcuda is None:
        raise ParameterError(
            "decode(like=<CUDA array>) needs a CUDA device and numba-cuda "
            "(pip install 'qsgd_codec[cuda]')"
        )
    # a new Numba device array of the message's dtype and shape (bfloat16: its uint16 bits)
    return qcuda.decode_device(data, max_elements=max_elements)


def decode_like(data: Any, like: Any, *, max_elements: Optional[int] = None) -> Any:
    """Decode ``data`` into an array of ``like``'s framework and on ``like``'s device.

    - NumPy arrays, buffers, ``__array_interface__`` objects: a NumPy array;
    - torch tensors: a torch tensor on ``like.device`` (CPU: zero-copy over the decoded
      NumPy array; bfloat16 through a 16-bit integer view; CUDA: decoded on the device by
      :mod:`qsgd_codec.cuda` when available, else on the host and copied);
    - JAX arrays: a JAX array on ``like``'s device;
    - CuPy arrays, Numba device arrays, other ``__cuda_array_interface__`` objects: decoded
      on the GPU by :mod:`qsgd_codec.cuda`;
    - other DLPack producers with ``__array_namespace__``: that namespace's ``asarray``.

    The result has the message's dtype and shape (``like`` only picks framework and
    device); ``max_elements`` bounds the allocation as in :func:`decode`.
    """
    framework, _device = interop.classify(like)
    if framework in ("numpy", "array_interface", "buffer"):
        return _decode_host(data, max_elements)
    if framework == "torch":
        return _decode_torch(data, like, max_elements)
    if framework == "jax":
        return _decode_jax(data, like, max_elements)
    if framework == "cupy":
        return _decode_cupy(data, like, max_elements)
    if framework in ("numba", "cuda_array_interface"):
        return _decode_numba(data, max_elements)
    if framework in ("dlpack", "array") and hasattr(like, "__array_namespace__"):
        host = _decode_host(data, max_elements)
        return like.__array_namespace__().asarray(host)
    raise ParameterError(
        f"decode(like=...) does not know objects of type "
        f"{type(like).__name__}: pass a NumPy, torch, JAX or CuPy array"
    )
