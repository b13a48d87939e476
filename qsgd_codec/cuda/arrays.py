"""Device arrays and streams: the one place that turns a caller's GPU array, message or
stream into what the kernels take.

:func:`as_device_array` views any CUDA array (numba device arrays, ``__cuda_array_interface__``
objects such as CuPy arrays and CUDA torch tensors, CUDA DLPack producers) as a numba device
array without a copy.  Under the simulator a ``__cuda_array_interface__`` pointer is host
memory, wrapped as a simulated device array, which lets the GPU path run in tests on machines
without a GPU.  :mod:`qsgd_codec.interop` only classifies inputs; it never imports this.
"""

import numpy as np
from numba import cuda

from .. import wire
from ..errors import DTypeError, ParameterError
from ..interop import (
    _DL_DEVICE_TYPES,
    _cuda_interface,
    _dlpack_device,
    _is_numba_device,
    _is_torch,
    cuda_array_info,
    is_device_array,
)
from .primitives import SIMULATOR

# ----------------------------------------------------------------------------- streams


def _resolve_stream(stream):
    """A numba stream for ``stream`` (see the package docstring)."""
    if SIMULATOR or stream is None:
        return cuda.default_stream()
    if hasattr(stream, "handle") and hasattr(stream, "synchronize"):
        return stream  # a numba stream
    handle = stream
    if not isinstance(stream, (int, np.integer)):
        handle = getattr(stream, "cuda_stream", None)  # PyTorch
        if handle is None:
            handle = getattr(stream, "ptr", None)  # CuPy
    if not isinstance(handle, (int, np.integer)):
        raise ParameterError(
            f"stream must be a numba stream, a cudaStream_t handle or an "
            f"object with .cuda_stream or .ptr, got {type(stream).__name__}"
        )
    return cuda.external_stream(int(handle)) if int(handle) else cuda.default_stream()


def _to_host(darr, stream):
    """Copy a device array to the host and wait for it (and everything queued before)."""
    host = darr.copy_to_host(stream=stream)
    stream.synchronize()
    return host


# ----------------------------------------------------------------------------- wrapping


class _HostInterface:
    """Expose a CUDA-array-interface description as a NumPy ``__array_interface__``."""

    def __init__(self, iface, owner):
        self._owner = owner  # keep the memory alive
        self.__array_interface__ = {
            "shape": tuple(iface["shape"]),
            "typestr": iface["typestr"],
            "data": tuple(iface["data"]),
            "strides": iface.get("strides"),
            "version": 3,
        }


def _view_interface(x):
    """A numba device array over the memory of a ``__cuda_array_interface__`` object."""
    if SIMULATOR:
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        return FakeCUDAArray(np.asarray(_HostInterface(_cuda_interface(x), x)))
    return cuda.as_cuda_array(x)


def as_device_array(x):
    """A Numba CUDA device array viewing ``x``'s memory (no copy), for the CUDA kernels.

    Takes Numba device arrays, anything exposing ``__cuda_array_interface__``, CUDA torch
    tensors (bfloat16 ones through an ``int16`` view) and CUDA DLPack producers (through
    CuPy).  Returns ``(device_array, dtype_name)``: the format's dtype name travels
    separately because the interface cannot describe bfloat16.  Raises
    :class:`~qsgd_codec.errors.DTypeError` for a dtype the format does not carry.
    """
    dtype_name = None
    if _is_numba_device(x):
        return x, wire.dtype_name(x.dtype)
    if _is_torch(x) and str(x.dtype) == "torch.bfloat16":
        import torch

        x = x.detach().view(torch.int16)
        dtype_name = "bfloat16"
    elif _is_torch(x):
        x = x.detach()
    if _cuda_interface(x) is None:
        dev = _dlpack_device(x)
        if dev is not None and dev[0] in _DL_DEVICE_TYPES:
            try:
                import cupy
            except ImportError:
                raise ParameterError(
                    f"{type(x).__name__} is a CUDA DLPack array without "
                    f"__cuda_array_interface__; install cupy to import "
                    f"it"
                ) from None
            x = cupy.from_dlpack(x)
        else:
            raise ParameterError(f"{type(x).__name__} is not a CUDA array")
    if dtype_name is None:
        dtype_name = wire.dtype_name(cuda_array_info(x).dtype)
    return _view_interface(x), dtype_name


def _is_numba_device_array(x):
    return bool(getattr(x, "__cuda_ndarray__", False))


def _as_device(x, what):
    """(numba device array viewing ``x`` without a copy, the format's dtype name)."""
    if not is_device_array(x):
        raise ParameterError(
            f"{what} must be a GPU array (a numba device array or an object "
            f"with __cuda_array_interface__), got {type(x).__name__}"
        )
    return as_device_array(x)


def _as_device_bits16(x):
    """A numba device array of a 16-bit integer device array (bfloat16 bits), no copy."""
    if _is_numba_device_array(x):
        return x
    return _view_interface(x)


def _as_device_bytes(data):
    """A contiguous 1-D uint8 numba device array of a device message, no copy."""
    if _is_numba_device_array(data):
        arr = data
    else:
        try:
            arr, _ = as_device_array(data)
        except DTypeError:  # a uint8 array is not a float dtype: view it directly
            arr = _view_interface(data)
    if arr.dtype.itemsize != 1:
        raise ParameterError(f"a device message must be a uint8 array, got dtype {arr.dtype}")
    if arr.ndim != 1 or not arr.is_c_contiguous():
        raise ParameterError("a device message must be a contiguous 1-D uint8 array")
    return arr if arr.dtype == np.uint8 else arr.view(np.uint8)


def _flat(arr, what):
    if arr.size and not arr.is_c_contiguous():
        raise ParameterError(
            f"{what} must be C-contiguous on the device (make a contiguous "
            f"copy on the GPU first, e.g. .contiguous() or "
            f"cupy.ascontiguousarray)"
        )
    return arr.reshape(arr.size) if arr.ndim != 1 else arr


def _bits_view(flat, dtype):
    """The array the kernels read or write: native float32/float64, uint16 bits otherwise."""
    if dtype in ("float16", "bfloat16"):
        return flat.view(np.uint16)
    return flat


# ----------------------------------------------------------------------------- allocations


def _message_buffer(total, stream):
    """A device message of ``total`` bytes as (uint32 words, uint8 view, float32 view)."""
    words = cuda.device_array(max(1, -(-total // 4)), dtype=np.uint32, stream=stream)
    return words, words.view(np.uint8), words.view(np.float32)


def _check_out(out, header):
    """The flat array the decode kernels write for the caller's ``out``."""
    if header.dtype == "bfloat16" and str(getattr(out, "dtype", "")) in ("uint16", "int16"):
        arr, dtype = _as_device_bits16(out), "bfloat16"  # bfloat16 bits in 16-bit integers
    else:
        arr, dtype = _as_device(out, "out")
    if arr.size != header.n:
        raise ParameterError(f"out has {arr.size} elements but the message holds {header.n}")
    if dtype != header.dtype:
        raise ParameterError(f"out has dtype {arr.dtype} but the message holds {header.dtype}")
    return _bits_view(_flat(arr, "out"), dtype)


def _new_output(header, stream):
    """(device array for the caller, flat array the kernels write) for a message."""
    n = header.n
    if header.dtype in ("float16", "bfloat16"):
        flat = cuda.device_array(n, dtype=np.uint16, stream=stream)
        result = flat
        try:
            result = flat.view(wire.numpy_dtype(header.dtype))
        except Exception:  # numba cannot hold bfloat16: return the bits
            pass
    else:
        flat = cuda.device_array(n, dtype=np.dtype(header.dtype), stream=stream)
        result = flat
    if header.shape != (n,):
        result = result.reshape(header.shape)
    return result, flat
