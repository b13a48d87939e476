"""Input handling (qsgd_codec.interop): every framework in, the same bytes out.

The rule checked throughout: an input encodes to exactly the bytes of the C-ordered NumPy
array of its values, whatever its framework, layout or byte order; host inputs are read
without a copy where the protocol allows; decode(like=x) returns x's framework.  The GPU
protocol paths are tested without a GPU: fake objects exposing __cuda_array_interface__ over
host memory, and the CUDA simulator in this process (marked gpu_sim).
"""

import array
import functools
import json
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest

import qsgd_codec
from qsgd_codec import interop
from qsgd_codec.errors import DTypeError, LimitError, ParameterError

X = np.random.default_rng(0).standard_normal((6, 7)).astype(np.float32)
PARAMS = dict(bits=4, bucket_size=8, seed=3)


def encoded(x):
    return qsgd_codec.encode(x, **PARAMS)


@functools.lru_cache(maxsize=None)
def expected():
    """The bytes every input holding X's values must encode to."""
    return encoded(np.ascontiguousarray(X))


# ----------------------------------------------------------------------------- helpers


class DLPackOnly:
    """Exposes only the DLPack protocol of a NumPy array (no buffer, no array interface)."""

    def __init__(self, arr, device=(1, 0)):
        self._arr, self._device = arr, device

    def __dlpack__(self, **kwargs):
        return self._arr.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._device


class ArrayInterfaceOnly:
    def __init__(self, arr):
        self._arr = arr
        self.__array_interface__ = arr.__array_interface__


class ArrayMethodOnly:
    def __init__(self, arr):
        self._arr = arr

    def __array__(self, dtype=None, copy=None):
        return self._arr


class FakeCudaArray:
    """A "GPU array" over host memory: __cuda_array_interface__ v3, as mpi4py's tests do."""

    def __init__(self, arr, **extra):
        self.arr = arr
        self.extra = extra

    @property
    def __cuda_array_interface__(self):
        iface = {
            "shape": self.arr.shape,
            "typestr": self.arr.dtype.str,
            "data": (self.arr.ctypes.data, not self.arr.flags.writeable),
            "strides": None if self.arr.flags.c_contiguous else self.arr.strides,
            "version": 3,
            "stream": None,
        }
        iface.update(self.extra)
        return iface


def shares_memory(arr, address):
    return arr.__array_interface__["data"][0] == address


# ----------------------------------------------------------------------------- importing


def test_import_pulls_in_no_framework():
    code = textwrap.dedent("""
        import sys, json
        import numpy as np
        import qsgd_codec, qsgd_codec.interop, qsgd_codec.cli
        x = np.linspace(-1, 1, 100, dtype=np.float32)
        qsgd_codec.decode(qsgd_codec.encode(x), like=x)
        qsgd_codec.interop.classify(x)
        banned = ["torch", "cupy", "jax", "jaxlib", "numcodecs", "mpi4py", "zarr",
                  "numba.cuda", "tqdm", "tensorflow"]
        print(json.dumps(sorted(m for m in banned if m in sys.modules)))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


# ----------------------------------------------------------------------------- host inputs


def host_inputs():
    """(id, factory) pairs: each factory returns an object holding X's values."""
    F = np.asfortranarray(X)
    padded = np.zeros((12, 14), np.float32)
    padded[::2, ::2] = X
    flipped = np.ascontiguousarray(X[::-1, ::-1])[::-1, ::-1]
    return [
        ("numpy", lambda: X),
        ("numpy-fortran", lambda: F),
        ("numpy-strided", lambda: padded[::2, ::2]),
        ("numpy-negative-strides", lambda: flipped),
        ("numpy-big-endian", lambda: X.astype(">f4")),
        ("numpy-readonly", lambda: np.frombuffer(X.tobytes(), np.float32).reshape(X.shape)),
        ("array-interface", lambda: ArrayInterfaceOnly(X)),
        ("array-interface-fortran", lambda: ArrayInterfaceOnly(F)),
        ("dlpack", lambda: DLPackOnly(X)),
        ("dlpack-strided", lambda: DLPackOnly(padded[::2, ::2])),
        ("__array__", lambda: ArrayMethodOnly(X)),
    ]


@pytest.mark.parametrize("name,factory", host_inputs(), ids=[n for n, _ in host_inputs()])
def test_host_inputs_encode_to_same_bytes(name, factory):
    obj = factory()
    arr = interop.as_host_array(obj)
    assert arr.flags.c_contiguous and arr.dtype.isnative
    assert np.array_equal(arr, X)
    assert not interop.is_device_array(obj)
    assert encoded(obj) == expected()


def test_buffer_protocol_inputs():
    flat = X.reshape(-1)
    expected = encoded(flat)
    for obj in (
        array.array("f", flat.tobytes()),
        memoryview(flat),
        memoryview(flat.tobytes()).cast("f"),
    ):
        assert interop.classify(obj) == ("buffer", "cpu")
        assert encoded(obj) == expected
    d = array.array("d", flat.astype(np.float64).tobytes())
    assert interop.as_host_array(d).dtype == np.float64


def test_contiguous_host_inputs_are_not_copied():
    assert interop.as_host_array(X) is X
    for obj in (ArrayInterfaceOnly(X), DLPackOnly(X), ArrayMethodOnly(X), memoryview(X)):
        assert shares_memory(interop.as_host_array(obj), X.ctypes.data), type(obj)


def test_scalars_and_empty():
    for x in (np.float32(1.5), np.array(2.5, np.float64), np.zeros((3, 0), np.float16)):
        assert qsgd_codec.encode(x) == qsgd_codec.encode(np.asarray(x))
        out = qsgd_codec.decode(qsgd_codec.encode(x))
        assert out.shape == np.shape(x) and out.dtype == np.asarray(x).dtype


@pytest.mark.parametrize(
    "obj,error",
    [
        (np.arange(4), DTypeError),
        (np.arange(4, dtype=np.complex64), DTypeError),
        (np.array(["a"]), DTypeError),
        (np.array([1.0, None]), DTypeError),
        (b"\x00\x00\x80\x3f", DTypeError),
        (bytearray(8), DTypeError),
        ([1.0, 2.0], ParameterError),
        ("1.0", ParameterError),
        (None, ParameterError),
        (object(), ParameterError),
        (DLPackOnly(X, device=(4, 0)), ParameterError),
    ],
)
def test_bad_inputs_raise_typed_errors(obj, error):
    with pytest.raises(error):
        qsgd_codec.encode(obj)


def test_raw_bytes_error_says_how_to_fix():
    with pytest.raises(DTypeError, match="frombuffer"):
        interop.as_host_array(b"\x00" * 8)


# ----------------------------------------------------------------------------- torch


def test_torch_cpu_inputs():
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(X.copy())
    arr = interop.as_host_array(t)
    assert arr.ctypes.data == t.data_ptr()  # zero-copy
    assert interop.classify(t) == ("torch", "cpu")
    assert not interop.is_device_array(t)
    assert encoded(t) == expected()
    assert encoded(t.T.contiguous().T) == expected()  # Fortran-like strides
    assert encoded(torch.from_numpy(X.T.copy()).T) == expected()
    big = torch.zeros(12, 14)
    big[::2, ::2] = t
    assert encoded(big[::2, ::2]) == expected()  # non-contiguous view
    assert encoded(t.clone().requires_grad_(True)) == expected()  # autograd leaf
    assert encoded(torch.flip(torch.flip(t, [0]), [0])) == expected()


@pytest.mark.parametrize("name", ["float16", "bfloat16", "float64"])
def test_torch_dtypes(name):
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(X.copy()).to(getattr(torch, name))
    if name == "bfloat16":
        ml_dtypes = pytest.importorskip("ml_dtypes")
        ref = t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    else:
        ref = t.numpy()
    assert qsgd_codec.encode(t, **PARAMS) == qsgd_codec.encode(ref, **PARAMS)
    data = qsgd_codec.encode(t, **PARAMS)
    back = qsgd_codec.decode(data, like=t)
    assert isinstance(back, torch.Tensor) and back.dtype == t.dtype and back.shape == t.shape
    expected = qsgd_codec.decode(data)
    assert np.array_equal(
        back.view(
            torch.int16
            if t.element_size() == 2
            else torch.int32
            if t.element_size() == 4
            else torch.int64
        ).numpy(),
        expected.view({2: np.int16, 4: np.int32, 8: np.int64}[expected.dtype.itemsize]),
    )


def test_torch_rejections():
    torch = pytest.importorskip("torch")
    with pytest.raises(DTypeError):
        qsgd_codec.encode(torch.arange(5))
    with pytest.raises(DTypeError):
        qsgd_codec.encode(torch.zeros(3, dtype=torch.complex64))
    with pytest.raises(ParameterError, match="device"):
        qsgd_codec.encode(torch.zeros(3, device="meta"))
    with pytest.raises(ParameterError, match="to_dense"):
        qsgd_codec.encode(torch.zeros(3, 3).to_sparse())


def test_decode_like_torch_is_zero_copy_and_bounded():
    torch = pytest.importorskip("torch")
    data = qsgd_codec.encode(X, **PARAMS)
    like = torch.zeros(1)
    out = qsgd_codec.decode(data, like=like)
    assert isinstance(out, torch.Tensor) and out.device == like.device
    assert np.array_equal(out.numpy(), qsgd_codec.decode(data))
    out.add_(1)  # writable, owns its memory
    with pytest.raises(LimitError):
        qsgd_codec.decode(data, like=like, max_elements=X.size - 1)


@pytest.mark.parametrize("name", ["float32", "bfloat16"])
def test_decode_into_torch_out(name):
    torch = pytest.importorskip("torch")
    if name == "bfloat16":
        pytest.importorskip("ml_dtypes")
    t = torch.from_numpy(X.copy()).to(getattr(torch, name))
    data = qsgd_codec.encode(t, **PARAMS)
    expected = qsgd_codec.decode(data, like=t)
    out = torch.zeros_like(t)
    assert qsgd_codec.decode(data, out=out) is not None
    assert torch.equal(out, expected)
    strided = torch.zeros(X.shape[1], X.shape[0], dtype=t.dtype).T  # non-contiguous
    qsgd_codec.decode(data, out=strided)
    assert torch.equal(strided, expected)


def test_as_host_out():
    torch = pytest.importorskip("torch")
    t = torch.zeros(5)
    view = interop.as_host_out(t)
    view[...] = 7
    assert torch.equal(t, torch.full((5,), 7.0))
    assert interop.as_host_out(X) is X
    ro = np.frombuffer(X.tobytes(), np.float32)
    with pytest.raises(ParameterError, match="read-only"):
        interop.as_host_out(ro)
    with pytest.raises(ParameterError):
        interop.as_host_out(b"\x00" * 8)
    with pytest.raises(ParameterError, match="grad"):
        interop.as_host_out(torch.zeros(3, requires_grad=True))
    with pytest.raises(DTypeError):
        interop.as_host_out(np.zeros(3, np.int32))


# ----------------------------------------------------------------------------- JAX


def test_jax_arrays():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    j = jnp.asarray(X)
    assert interop.classify(j) == ("jax", "cpu")
    arr = interop.as_host_array(j)
    assert arr.ctypes.data == j.unsafe_buffer_pointer()  # zero-copy on CPU
    assert encoded(j) == expected()
    assert encoded(j.T.T) == expected()
    assert encoded(jnp.asarray(X.T).T) == expected()
    data = qsgd_codec.encode(j, **PARAMS)
    back = qsgd_codec.decode(data, like=j)
    assert isinstance(back, jax.Array) and back.devices() == j.devices()
    assert np.array_equal(np.asarray(back), qsgd_codec.decode(data))
    jb = j.astype(jnp.bfloat16)
    back = qsgd_codec.decode(qsgd_codec.encode(jb), like=jb)
    assert back.dtype == jnp.bfloat16 and back.shape == X.shape


# ----------------------------------------------------------------------------- decode_like


def test_decode_like_host_objects():
    data = qsgd_codec.encode(X, **PARAMS)
    expected = qsgd_codec.decode(data)
    for like in (X, ArrayInterfaceOnly(X), array.array("f", [0.0]), memoryview(X)):
        out = qsgd_codec.decode(data, like=like)
        assert type(out) is np.ndarray and np.array_equal(out, expected)
    with pytest.raises(ParameterError, match="like"):
        qsgd_codec.decode(data, like=object())


# ----------------------------------------------------------------------------- CUDA protocol


def test_fake_cuda_array_is_a_device_array():
    fake = FakeCudaArray(X)
    assert interop.is_device_array(fake)
    assert interop.classify(fake) == ("cuda_array_interface", "cuda")
    info = interop.cuda_array_info(fake)
    assert info.ptr == X.ctypes.data and info.shape == X.shape and info.c_contiguous
    assert info.dtype == np.float32 and info.size == X.size and info.version == 3
    t = FakeCudaArray(np.asfortranarray(X))
    info = interop.cuda_array_info(t)
    assert info.strides == np.asfortranarray(X).strides and not info.c_contiguous
    with pytest.raises(ParameterError, match="GPU"):
        interop.as_host_array(fake)
    # DLPack producers on a CUDA device count too; CPU ones do not
    assert interop.is_device_array(DLPackOnly(X, device=(2, 0)))
    assert interop.is_device_array(DLPackOnly(X, device=(13, 0)))
    assert interop.is_device_array(DLPackOnly(X, device=(3, 0)))  # CUDA pinned host memory
    assert not interop.is_device_array(DLPackOnly(X))


@pytest.mark.parametrize(
    "extra,error",
    [
        ({"mask": object()}, ParameterError),
        ({"typestr": "<i4"}, DTypeError),
        ({"typestr": "<c8"}, DTypeError),
        ({"shape": (-1, 2)}, ParameterError),
        ({"strides": (4,)}, ParameterError),
        ({"data": (0, False)}, ParameterError),
        ({"data": None}, ParameterError),
    ],
)
def test_malformed_cuda_interfaces_rejected(extra, error):
    with pytest.raises(error):
        interop.cuda_array_info(FakeCudaArray(X, **extra))


def test_encode_routes_device_arrays_to_cuda_module(monkeypatch):
    calls = []
    stub = types.ModuleType("qsgd_codec.cuda")

    def encode_device(x, params):
        calls.append((x, params))
        return b"from-cuda"

    stub.encode_device = encode_device
    monkeypatch.setitem(sys.modules, "qsgd_codec.cuda", stub)
    monkeypatch.setattr(qsgd_codec, "cuda", stub, raising=False)
    fake = FakeCudaArray(X)
    assert qsgd_codec.encode(fake, bits=4, seed=5) == b"from-cuda"
    ((x, params),) = calls
    assert x is fake and params.levels == 7 and params.seed == 5


@pytest.mark.gpu_sim
def test_cuda_simulator_paths():
    """Under the CUDA simulator (tests/conftest.py turns it on): numba device arrays are
    device arrays, qsgd_codec.cuda.arrays.as_device_array views a __cuda_array_interface__
    object without a copy, and encode / decode(like=) take the GPU path to the oracle's
    bytes and values."""
    cuda = pytest.importorskip("numba.cuda")
    qarrays = pytest.importorskip("qsgd_codec.cuda.arrays")
    from qsgd_codec import reference, wire

    if not qarrays.SIMULATOR:
        pytest.skip("the CUDA simulator is off (QSGD_TEST_REAL_GPU=1)")
    x = np.random.default_rng(1).standard_normal(300).astype(np.float32)
    d = cuda.to_device(x)
    assert interop.is_device_array(d)
    assert interop.classify(d) == ("numba", "cuda")
    host = x.copy()
    fake = FakeCudaArray(host)
    dev, name = qarrays.as_device_array(fake)
    assert np.array_equal(dev.copy_to_host(), x) and name == "float32"
    host[0] = 42.0  # a view, not a copy: the simulated device array sees the change
    assert float(dev.copy_to_host()[0]) == 42.0
    host[0] = x[0]
    params = dict(bits=4, bucket_size=64, seed=3)
    ref = reference.encode_array(x, wire.encode_params(**params))  # the oracle
    assert qsgd_codec.encode(d, **params) == ref
    assert qsgd_codec.encode(qarrays.as_device_array(fake)[0], **params) == ref
    # encode(<object with __cuda_array_interface__>) directly: qsgd_codec.cuda wraps it with
    # as_device_array, as numba's simulator has no cuda.as_cuda_array
    assert qsgd_codec.encode(fake, **params) == ref
    out = qsgd_codec.decode(ref, like=d)
    assert interop.is_device_array(out)
    assert np.array_equal(out.copy_to_host(), reference.decode_message(ref))
