"""The GPU codec (qsgd_codec.cuda): same bytes and same errors as the reference.

tests/conftest.py switches numba's CUDA simulator on for the whole session (unless
``QSGD_TEST_REAL_GPU=1``), so the tests marked ``gpu_sim`` run the kernels in this process,
on machines without a GPU (``pytest --full``).  Every defect the GPU finds must raise the
reference's class with the reference's message.

Three tests need numba without the simulator and run in child processes: importing
qsgd_codec never loads numba.cuda; a device array without a GPU is a clear error; the GPU's
generator body gives the spec's values when compiled for the CPU.
``test_kernels_compile_for_sm90_without_fma`` (slow) compiles every kernel to PTX for an H100
in another child (when libNVVM and libdevice are installed, no GPU needed) and checks that no
floating-point operation was fused or approximated.  Throughput on a real GPU is measured by
benchmarks/bench_gpu.py, never here.
"""

import glob
import importlib
import os
import pkgutil
import re
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest

import qsgd_codec
from qsgd_codec import errors, reference, wire
from qsgd_codec.conformance import load_vectors

cuda = pytest.importorskip("numba.cuda")
qc = pytest.importorskip("qsgd_codec.cuda")

ROOT = Path(__file__).resolve().parent.parent
VALID = load_vectors(kind=("valid", "valid_decode_only", "future_ok"), arrays=True)
INVALID = load_vectors(kind=("invalid", "future"), arrays=True)

gpu_sim = pytest.mark.gpu_sim
needs_simulator = pytest.mark.skipif(not qc.SIMULATOR, reason="tests the CUDA simulator")


@pytest.fixture(autouse=True)
def _fast_simulator_barriers(request):
    """The simulator's block manager polls its threads while holding the GIL; a short switch
    interval makes every syncthreads() about 10x cheaper."""
    if request.node.get_closest_marker("gpu_sim") is None:
        yield
        return
    previous = sys.getswitchinterval()
    sys.setswitchinterval(5e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def _child_env(**extra):
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


# ============================================================================ child processes


def test_import_never_loads_numba_cuda():
    code = (
        "import sys, numpy, qsgd_codec; from qsgd_codec import reference, wire; "
        "qsgd_codec.inspect(reference.encode_array(numpy.ones(10, numpy.float32), "
        "wire.encode_params())); "
        "assert not any(m == 'numba.cuda' or m.startswith('numba.cuda.') "
        "for m in sys.modules), sorted(m for m in sys.modules if 'cuda' in m)"
    )
    subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=ROOT, env=_child_env(), timeout=300
    )


def test_gpu_path_without_cuda_is_a_clear_error():
    """A device array on a machine without a GPU: ParameterError naming CUDA, not a crash."""
    code = textwrap.dedent("""
        import numpy as np, qsgd_codec
        from qsgd_codec import reference, wire
        from numba import cuda
        if cuda.is_available():
            print("SKIP: a GPU is present")
            raise SystemExit(0)
        class FakeDeviceArray:  # looks like a CUDA array, lives nowhere
            __cuda_array_interface__ = {"shape": (4,), "typestr": "<f4", "data": (0, False),
                                        "version": 3, "strides": None}
        for call in (lambda: qsgd_codec.encode(FakeDeviceArray()),
                     lambda: qsgd_codec.decode(reference.encode_array(
                         np.ones(4, np.float32), wire.encode_params()), out=FakeDeviceArray())):
            try:
                call()
            except qsgd_codec.ParameterError as exc:
                assert "CUDA" in str(exc), exc
            else:
                raise AssertionError("no error")
        print("OK")
    """)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=_child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    if "SKIP" in proc.stdout:
        pytest.skip("a CUDA GPU is present")
    assert "OK" in proc.stdout


def test_gpu_generator_body_matches_spec():
    """The GPU's generator device function (qsgd_codec.cuda.primitives._u53 calling
    wire.rng.mix64; the simulator calls wire.rng.random_word instead) gives the spec's values
    when its body is compiled by Numba for the CPU."""
    code = textwrap.dedent("""
        import types
        import numba, numpy as np
        from qsgd_codec import reference, wire
        from qsgd_codec.cuda import primitives as P
        assert not P.SIMULATOR
        assert P._mix64.py_func is wire.rng.mix64      # the package's one SplitMix64
        body = P._u53.py_func
        u53 = numba.njit(types.FunctionType(
            body.__code__, dict(body.__globals__, _mix64=numba.njit(wire.rng.mix64))))
        for seed in (0, 1, 2**63, 2**64 - 1, 0x0123456789ABCDEF):
            key = np.uint64(wire.rng.seed_key(seed))
            index = np.array([0, 1, 2, 31, 1000, 2**33 + 5, 2**62], dtype=np.int64)
            got = np.array([u53(key, np.int64(i)) for i in index])
            want = (reference.random_bits(seed, index.astype(np.uint64)) >> np.uint64(11))
            assert np.array_equal(got, want.astype(np.int64)), (seed, got, want)
        print("OK")
    """)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=_child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout + proc.stderr


def _find_cuda_toolkit():
    for nvvm in sorted(glob.glob("/usr/local/cuda*/nvvm/libdevice/libdevice.10.bc")):
        home = str(Path(nvvm).parents[2])
        if glob.glob(home + "/lib*/libnvvm.so*") or glob.glob(home + "/nvvm/lib64/libnvvm.so*"):
            return home, nvvm
    return None, None


@pytest.mark.slow
def test_kernels_compile_for_sm90_without_fma():
    """Every kernel specialisation compiles for compute capability 9.0 (H100) and its PTX
    has no fused multiply-add, no approximate or flush-to-zero operation, and no unrounded
    multiply other than libdevice frexp's exact scaling by 2^54."""
    home, libdevice = _find_cuda_toolkit()
    if home is None:
        pytest.skip("no CUDA toolkit with libNVVM and libdevice in /usr/local/cuda*")
    code = textwrap.dedent(f"""
        # Compile without a GPU: pin what numba-cuda would ask the driver and NVRTC for.
        from numba.cuda.cudadrv import nvrtc, nvvm
        from numba.cuda import dispatcher
        LIBDEVICE = {libdevice!r}
        def _read():
            with open(LIBDEVICE, "rb") as f:
                return f.read()
        nvrtc.get_arch_option = lambda major, minor: f"compute_{{major}}{{minor}}"
        nvvm.get_libdevice = lambda: LIBDEVICE
        nvvm.open_libdevice = _read
        class _Device:
            compute_capability = (9, 0)
        dispatcher.get_current_device = lambda: _Device()
        from qsgd_codec import cuda as qc
        problems = qc.audit_ptx(cc=(9, 0), few=True)
        assert not problems, problems
        print("OK")
    """)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=_child_env(CUDA_HOME=home),
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = proc.stdout + proc.stderr
    if proc.returncode != 0 and ("AttributeError" in out and "nvrtc" in out):
        pytest.skip(
            "this numba-cuda version's internals differ; run the audit on a GPU "
            "machine with benchmarks/bench_gpu.py --audit-only"
        )
    assert proc.returncode == 0 and "OK" in proc.stdout, out[-4000:]


def test_ptx_signatures_cover_every_kernel():
    """audit_ptx's table names every kernel of the package (so the audit cannot miss one)."""
    kernels = set()
    for info in pkgutil.iter_modules(qc.__path__):
        module = importlib.import_module(f"{qc.__name__}.{info.name}")
        kernels |= {name for name in vars(module) if name.startswith("_k_")}
    assert kernels == {name for name, _ in qc.kernel_signatures()}
    assert kernels == set(qc.audit.KERNELS)


def test_no_message_text_or_private_defect_numbers_in_the_kernels():
    """Every GPU error message comes from qsgd_codec.errors.DEFECTS (or the shared header
    checks): no hand-written defect text or own reason table in qsgd_codec/cuda."""
    text = "".join(p.read_text() for p in (ROOT / "qsgd_codec" / "cuda").glob("*.py"))
    for banned in (
        "CRC-32 mismatch",
        "_REASONS",
        "R_PADDING",
        "MIX_1 =",
        "0xBF58476D1CE4E5B9",
        "elias bit lengths add up",
    ):
        assert banned not in text, banned


# ============================================================================ simulator


def _device(x):
    return cuda.to_device(x)


def _bits(arr):
    """Raw little-endian bit patterns of a host array."""
    return arr.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[arr.dtype.itemsize]).reshape(-1)


def _host(device_array):
    return device_array.copy_to_host()


def _random_input(rng, n, dtype, kind="normal"):
    if kind == "normal":
        x = rng.standard_normal(n) * rng.choice([1e-3, 1.0, 30.0])
    elif kind == "sparse":
        x = rng.standard_normal(n) * (rng.random(n) < 0.1)
    elif kind == "ties":  # many equal magnitudes, zeros and -0.0
        x = rng.choice([0.0, -0.0, 1.0, -1.0, 0.5, -0.25], size=n)
    else:  # tiny values: subnormal float32 scales
        x = rng.standard_normal(n) * 1e-42
    if dtype == "bfloat16":
        import ml_dtypes

        return x.astype(np.float32).astype(ml_dtypes.bfloat16)
    return x.astype(dtype)


def _expected(x, **params):
    return reference.encode_array(x, wire.encode_params(**params))


def _reference_error(message, max_elements=None):
    """The QSGDError the reference raises for ``message``, or None when it decodes it."""
    try:
        reference.decode_bits(message, max_elements=wire.element_limit(max_elements))
    except errors.QSGDError as exc:
        return exc
    return None


def _assert_gpu_decodes_like_reference(message, max_elements=None, device_bytes=True):
    """qc.decode of ``message`` (host bytes, and a device copy of it) raises the reference's
    class with the reference's message, or returns the reference's bits."""
    want = _reference_error(message, max_elements)
    sources = [message]
    if device_bytes and message:
        sources.append(_device(np.frombuffer(message, np.uint8)))
    for source in sources:
        if want is None:
            _, bits = reference.decode_bits(message, max_elements=wire.element_limit(max_elements))
            got = qc.decode(source, max_elements=max_elements)
            assert np.array_equal(_bits(_host(got)), bits)
            continue
        with pytest.raises(type(want)) as info:
            qc.decode(source, max_elements=max_elements)
        assert type(info.value) is type(want)
        assert str(info.value) == str(want)
    return want


@gpu_sim
@needs_simulator
def test_simulator_is_active():
    assert qc.SIMULATOR and cuda.is_available()


@gpu_sim
@pytest.mark.parametrize(
    "vector", [v for v in VALID if v.get("roundtrip") and "input" in v], ids=lambda v: v["name"]
)
def test_valid_vector_encodes_to_its_bytes(vector):
    """qsgd_codec.encode(device array) takes the GPU path and writes the vector's bytes."""
    x = vector["input"]
    got = qsgd_codec.encode(_device(np.array(x, order="C")), **vector["params"])
    assert isinstance(got, bytes)
    assert got == vector["message"]


@gpu_sim
@pytest.mark.parametrize("vector", VALID, ids=lambda v: v["name"])
def test_valid_vector_decodes_into_device_array(vector):
    """decode(data, out=device array) fills it with the vector's values, from host bytes and
    from a device copy of the message."""
    header = wire.parse_header(vector["message"], max_elements=None)
    dtype = wire.numpy_dtype(header.dtype)
    out = cuda.device_array(header.shape, dtype=dtype)
    result = qsgd_codec.decode(vector["message"], out=out)
    assert result is out
    assert np.array_equal(_bits(_host(out)), vector["decoded_bits"])
    message = _device(np.frombuffer(vector["message"], np.uint8))
    fresh = qc.decode(message)
    assert tuple(fresh.shape) == tuple(header.shape)
    assert np.array_equal(_bits(_host(fresh)), vector["decoded_bits"])


@gpu_sim
@pytest.mark.parametrize("vector", INVALID, ids=lambda v: v["name"])
def test_invalid_vector_raises_its_error(vector):
    """The GPU decoder rejects every invalid and future vector with the named class and the
    reference's message, from host bytes and from device bytes."""
    cls = errors.error_class(vector["error"])
    limit = vector.get("max_elements")
    want = _reference_error(vector["message"], limit)
    assert type(want) is cls, (want, cls)
    with pytest.raises(cls) as info:
        qc.decode(vector["message"], max_elements=limit)
    assert str(info.value) == str(want)
    if vector["message"]:
        with pytest.raises(cls) as info:
            qc.decode(_device(np.frombuffer(vector["message"], np.uint8)), max_elements=limit)
        assert str(info.value) == str(want)


CASES = [
    # (n, dtype, params, input kind)
    (300, "float32", dict(bits=4, bucket_size=64), "normal"),
    (257, "float32", dict(bits=2, bucket_size=40), "sparse"),
    (200, "float64", dict(levels=9, bucket_size=50), "normal"),  # w = 5, d*w % 32 != 0
    (150, "float16", dict(bits=8, bucket_size=33), "normal"),
    (150, "bfloat16", dict(bits=3, bucket_size=48), "ties"),
    (131, "float32", dict(levels=1000, bucket_size=70), "normal"),  # int16 levels, w = 11
    (90, "float32", dict(levels=(1 << 24) - 1, bucket_size=35), "normal"),  # int32, w = 25
    (96, "float32", dict(bits=8, bucket_size=96), "tiny"),  # subnormal scales
    (70, "float64", dict(bits=5, bucket_size=1), "normal"),  # one element per bucket
    (160, "float32", dict(bits=6, bucket_size=7), "ties"),
]


@gpu_sim
@pytest.mark.parametrize("coding", ["dense", "elias"])
@pytest.mark.parametrize("scale", ["max", "l2"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_random_inputs_match_reference(case, scale, coding):
    n, dtype, params, kind = CASES[case]
    rng = np.random.default_rng(1000 + case)
    x = _random_input(rng, n, dtype, kind)
    seed = int(rng.integers(0, 2**64, dtype=np.uint64))
    params = dict(params, scale=scale, coding=coding, seed=seed)
    if dtype in ("float16", "bfloat16") and scale == "l2" and kind == "normal":
        x = (x.astype(np.float32) * 0.01).astype(x.dtype)  # keep the l2 scale in range
    expected = _expected(x, **params)
    assert qsgd_codec.encode(_device(x), **params) == expected
    # and back: the GPU decoder gives the reference's values
    header, bits = reference.decode_bits(expected)
    out = qc.decode(expected)
    assert np.array_equal(_bits(_host(out)), bits)


@gpu_sim
@pytest.mark.parametrize("threads", [8, 32])
@pytest.mark.parametrize("coding", ["dense", "elias"])
def test_block_sizes_and_multi_tile_buckets(threads, coding, monkeypatch):
    """Buckets spanning several tiles and SQ_TILE rounds, with 8 and 32 threads per block."""
    monkeypatch.setattr(qc.host, "SIM_THREADS", threads)
    rng = np.random.default_rng(7)
    x = rng.standard_normal(1100).astype(np.float32)
    for params in (
        dict(bits=4, bucket_size=600, scale="l2"),
        dict(levels=3, bucket_size=1100, scale="max"),
    ):
        params = dict(params, coding=coding, seed=11)
        expected = _expected(x, **params)
        assert qc.encode(_device(x), **params) == expected


@gpu_sim
def test_multidimensional_and_empty_shapes():
    rng = np.random.default_rng(3)
    for shape in [(2, 3, 5), (1,), (), (4, 0), (0,)]:
        x = rng.standard_normal(shape).astype(np.float32)
        for coding in ("dense", "elias"):
            expected = _expected(x, bits=4, bucket_size=4, coding=coding)
            assert qc.encode(_device(x), bits=4, bucket_size=4, coding=coding) == expected
            out = qc.decode(expected)
            assert tuple(out.shape) == shape
            assert np.array_equal(_host(out), reference.decode_message(expected))


@gpu_sim
def test_device_output_and_device_round_trip():
    rng = np.random.default_rng(5)
    x = rng.standard_normal(333).astype(np.float32)
    for coding in ("dense", "elias"):
        expected = _expected(x, bits=5, bucket_size=64, coding=coding, seed=9)
        message = qc.encode(
            _device(x), bits=5, bucket_size=64, coding=coding, seed=9, device_output=True
        )
        assert message.dtype == np.uint8 and message.shape == (len(expected),)
        assert _host(message).tobytes() == expected
        out = cuda.device_array(333, np.float32)
        assert qc.decode(message, out=out) is out
        assert np.array_equal(_host(out), reference.decode_message(expected))


@gpu_sim
def test_checksum_is_zlib_crc32_and_optional():
    rng = np.random.default_rng(6)
    for n in (1, 5, 77, 500):
        x = rng.standard_normal(n).astype(np.float32)
        message = qc.encode(_device(x), bits=3, bucket_size=16)
        assert int.from_bytes(message[-4:], "little") == zlib.crc32(message[:-4])
        bare = qc.encode(_device(x), bits=3, bucket_size=16, checksum=False)
        assert bare == _expected(x, bits=3, bucket_size=16, checksum=False)


def _reference_encode_error(x, **params):
    with pytest.raises(errors.QSGDError) as info:
        _expected(x, **params)
    return info.value


def _assert_gpu_encode_fails_like_reference(x, **params):
    want = _reference_encode_error(x, **params)
    with pytest.raises(type(want)) as info:
        qc.encode(_device(x), **params)
    assert type(info.value) is type(want)
    assert str(info.value) == str(want)
    return info.value


@gpu_sim
def test_non_finite_input_and_scale_overflow_raise():
    """The encoder's refusals: the reference's class and message."""
    x = np.ones(100, np.float32)
    x[37] = np.nan
    with pytest.raises(errors.NonFiniteError, match="element 37"):
        qc.encode(_device(x))
    _assert_gpu_encode_fails_like_reference(x)
    x[37] = -np.inf
    x[60] = np.nan
    for coding in ("dense", "elias"):
        for scale in ("max", "l2"):
            exc = _assert_gpu_encode_fails_like_reference(x, coding=coding, scale=scale)
            assert isinstance(exc, errors.NonFiniteError) and "element 37" in str(exc)
    half = np.ones(40, np.float16)
    half[5] = np.inf
    _assert_gpu_encode_fails_like_reference(half, bucket_size=8)
    big = np.full(64, 60000.0, np.float16)  # l2 scale beyond the float16 range
    with pytest.raises(errors.NonFiniteError, match="scale"):
        qc.encode(_device(big), scale="l2", bucket_size=64)
    for coding in ("dense", "elias"):
        _assert_gpu_encode_fails_like_reference(big, scale="l2", bucket_size=16, coding=coding)
    huge = np.full(8, 1e300)  # float64 beyond float32
    with pytest.raises(errors.NonFiniteError):
        qc.encode(_device(huge), coding="elias")
    huge[:4] = 1.0  # bucket 1 is the first out of range
    for coding in ("dense", "elias"):
        exc = _assert_gpu_encode_fails_like_reference(huge, bucket_size=4, coding=coding)
        assert "bucket 1" in str(exc)


@gpu_sim
def test_bad_out_and_bad_parameters():
    message = _expected(np.ones(10, np.float32))
    with pytest.raises(errors.LimitError):  # out's size bounds n, as on the CPU
        qc.decode(message, out=cuda.device_array(9, np.float32))
    with pytest.raises(errors.ParameterError):
        qc.decode(message, out=cuda.device_array((11,), np.float32))
    with pytest.raises(errors.ParameterError):
        qc.decode(message, out=cuda.device_array(10, np.float64))
    with pytest.raises(errors.LimitError):
        qc.decode(message, max_elements=9)
    with pytest.raises(errors.ParameterError):
        qc.encode(_device(np.ones(4, np.float32)), bits=1)
    with pytest.raises(errors.DTypeError):
        qc.encode(_device(np.ones(4, np.int32)))
    with pytest.raises(errors.ParameterError):
        qc.encode(np.ones(4, np.float32))  # a host array is not a device array
    strided = _device(np.ones((4, 4), np.float32))[:, ::2]
    with pytest.raises(errors.ParameterError, match="contiguous"):
        qc.encode(strided)


@gpu_sim
def test_bfloat16_out_as_uint16_bits():
    import ml_dtypes

    x = np.linspace(-3, 3, 50).astype(ml_dtypes.bfloat16)
    message = _expected(x, bits=4, bucket_size=16)
    out = cuda.device_array(50, np.uint16)
    qc.decode(message, out=out)
    assert np.array_equal(_host(out), reference.decode_bits(message)[1])


@gpu_sim
@pytest.mark.parametrize("coding", ["dense", "elias"])
def test_corrupted_messages_fail_like_the_reference(coding):
    """Random byte and bit damage (no checksum, so the code validation is what answers): the
    GPU decoder raises the reference's error class and message, or returns the reference's
    values."""
    rng = np.random.default_rng(21 if coding == "dense" else 22)
    x = (rng.standard_normal(120) * (rng.random(120) < 0.5)).astype(np.float32)
    message = _expected(x, levels=5, bucket_size=24, coding=coding, checksum=False)
    header = wire.parse_header(message, max_elements=None)
    lo = header.header_length  # damage the body, where the kernels look
    for trial in range(40):
        damaged = bytearray(message)
        k = int(rng.integers(lo, len(message)))
        if trial % 2:
            damaged[k] ^= 1 << int(rng.integers(0, 8))
        else:
            damaged[k] = int(rng.integers(0, 256))
        _assert_gpu_decodes_like_reference(bytes(damaged), device_bytes=trial % 4 == 1)


def _set_scale(message, b, value):
    h = wire.parse_header(message, max_elements=None)
    m = bytearray(message)
    struct.pack_into("<f", m, h.scales_offset + 4 * b, value)
    return bytes(m)


def _with_crc(body_without_crc):
    return body_without_crc + zlib.crc32(body_without_crc).to_bytes(4, "little")


def _defect_messages():
    """(label, damaged message, expected defect code): one of each defect the GPU reports,
    and pairs that check which one is reported first."""
    x = np.linspace(-1, 1, 50).astype(np.float32)
    x[7] = 0.0
    dense = _expected(x, levels=5, bucket_size=8, checksum=False)  # w = 4, n*w = 200
    odd = _expected(x[:49], levels=5, bucket_size=8, checksum=False)  # 196 bits: 4 padding
    elias = _expected(x, levels=5, bucket_size=8, coding="elias", checksum=False)
    h_dense = wire.parse_header(dense)
    h_odd = wire.parse_header(odd)
    h_elias = wire.parse_header(elias)
    out = []
    # the checksum: stored and computed values in the message, before any other defect
    crc = _expected(x, levels=5, bucket_size=8)
    bad = bytearray(crc)
    bad[h_dense.codes_offset + 2] ^= 0x10
    out.append(("checksum", bytes(bad), errors.D_CHECKSUM))
    bad = bytearray(_set_scale(crc, 2, -1.0))
    out.append(("checksum before bad scale", bytes(bad), errors.D_CHECKSUM))
    ecrc = _expected(x, levels=5, bucket_size=8, coding="elias")
    bad = bytearray(ecrc)
    bad[h_elias.table_offset] ^= 0x01
    out.append(("elias checksum before table sum", bytes(bad), errors.D_CHECKSUM))
    # bad scales: the first bucket's value and bits, before the codes
    for value in (-1.0, float("nan"), float("inf"), -0.0):
        out.append(
            (
                f"bad scale {value}",
                _set_scale(_set_scale(dense, 3, value), 5, -2.0),
                errors.D_BAD_SCALE,
            )
        )
        out.append((f"elias bad scale {value}", _set_scale(elias, 4, value), errors.D_BAD_SCALE))
    m = bytearray(_set_scale(dense, 4, -3.0))
    m[h_dense.codes_offset] = 0x77  # fields 0 and 1 out of range
    out.append(("bad scale before field range", bytes(m), errors.D_BAD_SCALE))
    # dense: padding before any field, then the first element in error
    m = bytearray(odd)
    m[-1] |= 0xF0
    out.append(("dense padding", bytes(m), errors.D_DENSE_PADDING))
    m[h_odd.codes_offset] = 0x07  # element 0: level 7 > 5
    out.append(("padding before field range", bytes(m), errors.D_DENSE_PADDING))
    m = bytearray(dense)
    m[h_dense.codes_offset + 10] = 0x77  # elements 20, 21
    out.append(("field range", bytes(m), errors.D_FIELD_RANGE))
    zero = _set_scale(dense, 1, 0.0)  # bucket 1: elements 8..15
    out.append(("zero scale names the bucket", zero, errors.D_ZERO_SCALE))
    m = bytearray(zero)
    m[h_dense.codes_offset + 10] = 0x77
    out.append(
        ("zero scale (element 8) before field range (element 20)", bytes(m), errors.D_ZERO_SCALE)
    )
    m = bytearray(_set_scale(dense, 3, 0.0))  # bucket 3: elements 24..31
    m[h_dense.codes_offset + 10] = 0x77
    out.append(
        ("field range (element 20) before zero scale (element 24)", bytes(m), errors.D_FIELD_RANGE)
    )
    # elias: the table sum, then the first bucket in error
    m = bytearray(elias)
    m[h_elias.table_offset + 8] ^= 0x08  # L_2 += or -= 8
    out.append(("elias table sum", bytes(m), errors.D_TABLE_SUM))
    out.append(("elias zero scale", _set_scale(elias, 2, 0.0), errors.D_ZERO_SCALE))
    return out


@gpu_sim
@pytest.mark.parametrize(
    "label, message, code", _defect_messages(), ids=[label for label, _, _ in _defect_messages()]
)
def test_each_defect_reads_as_the_reference(label, message, code):
    """Each defect, and each pair where one must be reported before the other: the reference's
    class and message, from host and from device bytes."""
    want = _assert_gpu_decodes_like_reference(message)
    cls, template = errors.DEFECTS[code]
    assert type(want) is cls, (label, want)
    pattern = re.sub(r"\\\{[^}]*\\\}", ".*", re.escape(template))
    assert re.fullmatch(pattern, str(want)), (label, str(want), template)


@gpu_sim
@needs_simulator
def test_simulator_shared_arrays_are_shared_under_preemption(monkeypatch):
    """The simulator creates a block's shared array on first use without a lock; qsgd_codec.cuda
    installs a locked lookup.  With allocation made slow (a preemption in the window), every
    thread must still see the one array the others write."""
    import time

    from numba.cuda import types as nbt

    real_empty = np.empty

    def slow_empty(*args, **kwargs):
        time.sleep(0.002)
        return real_empty(*args, **kwargs)

    @cuda.jit
    def kernel(out):
        sh = cuda.shared.array(16, nbt.int64)
        t = cuda.threadIdx.x
        sh[t] = t
        cuda.syncthreads()
        total = 0
        for j in range(16):
            total += sh[j]
        out[t] = total

    monkeypatch.setattr(np, "empty", slow_empty)
    for _ in range(5):
        out = cuda.device_array(16, np.int64)
        kernel[1, 16](out)
        assert (out.copy_to_host() == 120).all()
