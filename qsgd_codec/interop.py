"""Input handling: turn any framework's array into something the codec's backends take.

One place decides what an input is (:func:`classify`) and how it becomes an array a backend
can read: :func:`as_host_array` for host memory (a C-contiguous, native-byte-order NumPy
array of a supported dtype); GPU memory is recognised here (:func:`is_device_array`,
:func:`cuda_array_info`) and wrapped by :func:`qsgd_codec.cuda.arrays.as_device_array`.
Decoding into the caller's framework (``decode(like=...)``) is :func:`qsgd_codec.api.decode_like`,
which uses :func:`classify`.  `encode`, `decode` and every collective go through here.

Accepted inputs, in the order they are recognised:

- NumPy arrays (used as they are when C-contiguous and native-endian, else copied once);
- PyTorch tensors (CPU: a zero-copy NumPy view, bfloat16 through a ``uint16`` view;
  CUDA: the device path);
- Numba device arrays and anything exposing ``__cuda_array_interface__`` (CuPy, PyTorch
  CUDA, JAX GPU, ...): the device path, :mod:`qsgd_codec.cuda`;
- objects exposing ``__array_interface__`` (zero-copy);
- DLPack producers (``__dlpack__``): CPU ones are imported with ``numpy.from_dlpack``
  (zero-copy), CUDA ones take the device path;
- objects with ``__array__`` (JAX CPU arrays are zero-copy here);
- the buffer protocol (``bytes``, ``array.array``, ``memoryview``, ...), typed by its format.

This module never imports torch, jax, cupy or numba.cuda at import time: a framework is
recognised by the module its type comes from, and imported only when one of its objects
is in hand.
"""

from dataclasses import dataclass

import numpy as np

from . import wire
from .errors import DTypeError, ParameterError

# DLPack device types (dlpack.h, DLDeviceType)
DL_CPU = 1
DL_CUDA = 2
DL_CUDA_HOST = 3
DL_ROCM = 10
DL_CUDA_MANAGED = 13
_DL_NAMES = {
    1: "cpu",
    2: "cuda",
    3: "cuda_host",
    4: "opencl",
    7: "vulkan",
    8: "metal",
    9: "vpi",
    10: "rocm",
    11: "rocm_host",
    13: "cuda_managed",
    14: "oneapi",
    15: "webgpu",
    16: "hexagon",
    17: "maia",
}

#: DLPack devices that take the CUDA path (pinned host memory is imported through CuPy there)
_DL_DEVICE_TYPES = (DL_CUDA, DL_CUDA_HOST, DL_CUDA_MANAGED)
_TORCH_HOST_DTYPES = ("float16", "float32", "float64")


# ----------------------------------------------------------------------------- classify


def _type_root(x):
    """The top-level package an object's type comes from ('torch', 'jaxlib', 'cupy', ...)."""
    return (type(x).__module__ or "").partition(".")[0]


def _is_torch(x):
    return _type_root(x) == "torch" and hasattr(x, "data_ptr") and hasattr(x, "device")


def _is_jax(x):
    return _type_root(x) in ("jax", "jaxlib") and hasattr(x, "devices")


def _is_cupy(x):
    return _type_root(x) == "cupy"


def _is_numba_device(x):
    return _type_root(x) in ("numba", "numba_cuda") and hasattr(x, "copy_to_host")


def _cuda_interface(x):
    """x.__cuda_array_interface__, or None.  Some objects raise for CPU data: that is None."""
    if isinstance(x, np.ndarray):
        return None
    try:
        return getattr(x, "__cuda_array_interface__", None)
    except Exception:  # torch raises AttributeError/TypeError for CPU or bf16 tensors
        return None


def _dlpack_device(x):
    """(device_type, device_id) from x.__dlpack_device__(), or None."""
    method = getattr(x, "__dlpack_device__", None)
    if method is None:
        return None
    try:
        kind, index = method()
        return int(kind), int(index)
    except Exception:
        return None


def classify(x):
    """Name what ``x`` is: a pair ``(framework, device)``.

    framework: 'numpy', 'torch', 'jax', 'cupy', 'numba', 'cuda_array_interface', 'dlpack',
    'array_interface', 'array', 'buffer' or 'unknown'; device: 'cpu', 'cuda' or another
    DLPack device name.  Nothing is copied and no framework is imported.
    """
    if isinstance(x, np.ndarray):
        return "numpy", "cpu"
    if _is_torch(x):
        return "torch", str(x.device.type)
    if _is_numba_device(x):
        return "numba", "cuda"
    if _is_cupy(x):
        return "cupy", "cuda"
    if _is_jax(x):
        try:
            platforms = {d.platform for d in x.devices()}
        except Exception:
            platforms = {"unknown"}
        return "jax", (
            "cuda"
            if "gpu" in platforms or "cuda" in platforms
            else "cpu"
            if platforms == {"cpu"}
            else "/".join(sorted(platforms))
        )
    if _cuda_interface(x) is not None:
        return "cuda_array_interface", "cuda"
    if hasattr(x, "__array_interface__"):
        return "array_interface", "cpu"
    dev = _dlpack_device(x) if hasattr(x, "__dlpack__") else None
    if dev is not None:
        return "dlpack", _DL_NAMES.get(dev[0], f"dlpack-device-{dev[0]}")
    if hasattr(x, "__array__"):
        return "array", "cpu"
    try:
        memoryview(x)
    except TypeError:
        return "unknown", "cpu"
    return "buffer", "cpu"


def is_device_array(x):
    """True for GPU (CUDA) arrays: they go to :mod:`qsgd_codec.cuda`, never through the host.

    Numba device arrays (also under the CUDA simulator), objects exposing
    ``__cuda_array_interface__``, CUDA torch tensors, and DLPack producers on a CUDA device.
    """
    if isinstance(x, (np.ndarray, bytes, bytearray, memoryview)):
        return False
    if _is_numba_device(x):
        return True
    if _is_torch(x):
        return x.device.type == "cuda"
    if _cuda_interface(x) is not None:
        return True
    if hasattr(x, "__dlpack__") and not hasattr(x, "__array_interface__"):
        dev = _dlpack_device(x)
        return dev is not None and dev[0] in _DL_DEVICE_TYPES
    return False


# ----------------------------------------------------------------------------- host inputs


def _finish_host(arr, what):
    """Check the dtype; return a C-contiguous, native-byte-order array of the same values."""
    try:
        wire.dtype_name(arr.dtype)
    except DTypeError:
        hint = ""
        if arr.dtype.kind in "iub" or arr.dtype.kind == "V" and arr.dtype.itemsize != 2:
            hint = (
                " (a raw byte buffer carries no element type: view it as the float dtype "
                "first, for example numpy.frombuffer(buf, dtype=numpy.float32))"
            )
        elif arr.dtype.kind == "V" and arr.dtype.itemsize == 2:
            hint = (
                " (bfloat16 data needs the ml_dtypes.bfloat16 dtype: pip install "
                "'qsgd_codec[bfloat16]')"
            )
        raise DTypeError(
            f"cannot encode {what} of dtype {arr.dtype}: the format carries "
            f"float16, bfloat16, float32 and float64{hint}"
        ) from None
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if not arr.flags.c_contiguous:
        # C order is the format's element order (spec 8.1): copy strided, Fortran-ordered
        # and negatively strided inputs once, never read them with the wrong strides
        arr = np.ascontiguousarray(arr)
    return arr


def _torch_unsigned16():
    import torch

    return getattr(torch, "uint16", torch.int16)


def _torch_host_view(t, *, writable=False):
    """A NumPy view (no copy) of a CPU torch tensor's memory, bfloat16 included."""
    import torch

    if t.device.type != "cpu":
        raise ParameterError(
            f"torch tensors on device {t.device} are not supported: move the "
            f"tensor to the CPU, or to a CUDA device for the GPU path"
        )
    if t.layout != torch.strided:
        raise ParameterError(
            f"torch tensors with layout {t.layout} are not supported: call .to_dense() first"
        )
    if not writable:
        t = t.detach()
    elif t.requires_grad:
        raise ParameterError("out is a torch tensor that requires grad: pass out.detach()")
    name = str(t.dtype).removeprefix("torch.")
    if name == "bfloat16":
        bf16 = wire.bfloat16_dtype()
        return t.view(_torch_unsigned16()).numpy().view(bf16)
    if name not in _TORCH_HOST_DTYPES:
        raise DTypeError(
            f"torch dtype {t.dtype} is not supported: the format carries "
            f"float16, bfloat16, float32 and float64"
        )
    return t.numpy()


def _host_view(x, what="an object"):
    """A NumPy array over x's host memory (zero-copy where the protocol allows)."""
    if isinstance(x, np.ndarray):
        return x
    if _is_torch(x):
        return _torch_host_view(x)
    if hasattr(x, "__array_interface__"):
        return np.asarray(x)
    dev = _dlpack_device(x) if hasattr(x, "__dlpack__") else None
    if dev is not None and dev[0] != DL_CPU:
        name = _DL_NAMES.get(dev[0], str(dev[0]))
        raise ParameterError(
            f"cannot read {what} on DLPack device '{name}': only host "
            f"memory and CUDA devices are supported"
        )
    if dev is not None:
        try:
            return np.from_dlpack(x)
        except (BufferError, RuntimeError, TypeError, ValueError):
            if not hasattr(x, "__array__"):  # e.g. bfloat16, which DLPack cannot describe
                raise ParameterError(
                    f"cannot import {what} of type {type(x).__name__} through DLPack"
                ) from None
    if hasattr(x, "__array__"):
        arr = np.asarray(x)
        if arr.dtype == object:
            raise DTypeError(f"{what} of type {type(x).__name__} converts to an object array")
        return arr
    try:
        return np.asarray(memoryview(x))
    except (TypeError, ValueError, NotImplementedError) as exc:
        raise ParameterError(
            f"cannot use {what} of type {type(x).__name__}: pass a NumPy array, a buffer, or an "
            f"object with __array_interface__, __dlpack__ or __cuda_array_interface__ "
            f"({exc})"
        ) from None


def as_host_array(x):
    """A NumPy array of a host input: supported dtype, native byte order, C-contiguous.

    A view (no copy) when the input already is C-contiguous and native-endian: NumPy
    arrays, CPU torch tensors, JAX CPU arrays, DLPack CPU producers, ``__array_interface__``
    objects and buffers.  Any other layout is copied once into C order, so the values
    reach the encoder in the format's element order.  Raises :class:`DTypeError` for an
    unsupported dtype and :class:`ParameterError` for an object it cannot read.
    """
    if is_device_array(x):
        raise ParameterError(
            f"{type(x).__name__} is a GPU array: encode it with "
            f"qsgd_codec.encode, which uses the CUDA path, or copy it to the "
            f"host first"
        )
    return _finish_host(_host_view(x, "the input"), "an array")


def as_host_out(out):
    """A writable NumPy view sharing memory with ``out`` (never a copy), for ``decode(out=)``.

    Accepts NumPy arrays, CPU torch tensors (bfloat16 included) and writable objects
    exposing ``__array_interface__`` or the buffer protocol.  Writing into a copy would lose
    the result silently, so anything that cannot be viewed raises :class:`ParameterError`.
    """
    if isinstance(out, np.ndarray):
        arr = out
    elif _is_torch(out):
        arr = _torch_host_view(out, writable=True)
    elif hasattr(out, "__array_interface__"):
        arr = np.asarray(out)
    else:
        try:
            arr = np.asarray(memoryview(out))
        except TypeError:
            raise ParameterError(
                f"out of type {type(out).__name__} cannot be written in "
                f"place: pass a NumPy array, a CPU torch tensor or a "
                f"writable buffer"
            ) from None
    if not arr.flags.writeable:
        raise ParameterError("out is read-only")
    wire.dtype_name(arr.dtype)
    return arr


# ----------------------------------------------------------------------------- device inputs


@dataclass(frozen=True)
class CudaArrayInfo:
    """A validated ``__cuda_array_interface__`` (version 0..3)."""

    ptr: int
    shape: tuple
    strides: tuple  # in bytes; None means C-contiguous
    dtype: np.dtype
    readonly: bool
    stream: object
    version: int

    @property
    def size(self):
        n = 1
        for extent in self.shape:
            n *= extent
        return n

    @property
    def c_contiguous(self):
        if self.strides is None or self.size <= 1:
            return True
        expected = self.dtype.itemsize
        for extent, stride in zip(reversed(self.shape), reversed(self.strides)):
            if extent != 1 and stride != expected:
                return False
            expected *= extent
        return True


def cuda_array_info(x):
    """Read and check ``x.__cuda_array_interface__``; return a :class:`CudaArrayInfo`.

    Rejects (ParameterError) masked arrays and malformed interfaces, and (DTypeError)
    element types the format does not carry.
    """
    iface = x if isinstance(x, dict) else _cuda_interface(x)
    if not isinstance(iface, dict):
        raise ParameterError(f"{type(x).__name__} does not expose __cuda_array_interface__")
    try:
        shape = tuple(int(v) for v in iface["shape"])
        typestr = iface["typestr"]
        ptr, readonly = iface["data"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ParameterError(f"malformed __cuda_array_interface__: {exc!r}") from None
    if any(v < 0 for v in shape):
        raise ParameterError(f"__cuda_array_interface__ shape {shape} has a negative extent")
    if iface.get("mask") is not None:
        raise ParameterError("masked CUDA arrays are not supported")
    strides = iface.get("strides")
    if strides is not None:
        strides = tuple(int(v) for v in strides)
        if len(strides) != len(shape):
            raise ParameterError(
                f"__cuda_array_interface__ strides {strides} do not match shape {shape}"
            )
    try:
        dtype = np.dtype(typestr)
    except TypeError:
        raise DTypeError(f"unknown __cuda_array_interface__ typestr {typestr!r}") from None
    wire.dtype_name(dtype)
    n = 1
    for extent in shape:
        n *= extent
    if ptr is None or (ptr == 0 and n > 0):
        raise ParameterError("__cuda_array_interface__ has a null data pointer")
    return CudaArrayInfo(
        int(ptr or 0),
        shape,
        strides,
        dtype,
        bool(readonly),
        iface.get("stream"),
        int(iface.get("version", 0)),
    )
