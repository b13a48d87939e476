"""The Numba CPU codec (qsgd_codec.cpu) against the reference, byte for byte.

Every fast path is checked against qsgd_codec.reference: the conformance vectors, random
arrays (hypothesis), corrupted messages (same error class and message), thread counts,
strided inputs and the ``out=`` buffers.  Sizes stay small: the reference is plain Python.
"""

import platform
import tracemalloc
import zlib

import ml_dtypes
import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import qsgd_codec
from qsgd_codec import cpu, reference as ref, wire
from qsgd_codec.conformance import load_vectors, vector_id
from qsgd_codec.cpu import crc, drivers, quantize
from qsgd_codec.errors import (
    D_OK,
    ChecksumError,
    CorruptDataError,
    LengthError,
    LimitError,
    NonFiniteError,
    ParameterError,
    QSGDError,
    error_class,
)

VALID = load_vectors(kind="valid", arrays=True)
DECODE_ONLY = load_vectors(kind=("valid_decode_only", "future_ok"), arrays=True)
INVALID = load_vectors(kind=("invalid", "future"), arrays=True)
DTYPES = ["float16", "bfloat16", "float32", "float64"]
BITS = {"float16": np.uint16, "bfloat16": np.uint16, "float32": np.uint32, "float64": np.uint64}
SETTINGS = settings(
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def numpy_dtype(name):
    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


def fast_encode(x, params, *, parallel=None):
    arr = np.asarray(x)
    dtype = wire.dtype_name(arr.dtype)
    return cpu.encode_bits(cpu.flat_bits(arr, dtype), dtype, arr.shape, params, parallel=parallel)


def fast_decode_bits(data, *, parallel=None, max_elements=wire.DEFAULT_MAX_ELEMENTS):
    header = wire.parse_header(data, max_elements=max_elements, verify_checksum=False)
    msg = cpu.message_array(data)
    cpu.verify_checksum(msg, header)
    out = np.empty(header.n, dtype=BITS[header.dtype])
    return header, cpu.decode_into(header, msg, out, parallel=parallel)


def error_of(fn):
    """(None, result), or ((error class, message), None) when ``fn`` raises a QSGDError."""
    try:
        return None, fn()
    except QSGDError as exc:
        return (type(exc), str(exc)), None


def assert_same_decoding(data, max_elements=wire.DEFAULT_MAX_ELEMENTS):
    """The fast decoder (serial and parallel drivers) agrees with the reference: the same
    values, or the same error class and message (the CPU checks in the reference's order)."""
    want_err, want = error_of(lambda: ref.decode_bits(data, max_elements=max_elements))
    for parallel in (False, True):
        got_err, got = error_of(
            lambda: fast_decode_bits(data, parallel=parallel, max_elements=max_elements)
        )
        assert got_err == want_err, (got_err, want_err)
        if want_err is None:
            np.testing.assert_array_equal(got[1], want[1])


# ----------------------------------------------------------------------------- vectors


@pytest.mark.parametrize("record", VALID, ids=vector_id)
@pytest.mark.parametrize("parallel", [False, True])
def test_fast_encoder_reproduces_valid_vector(record, parallel):
    params = wire.EncodeParams(**record["params"])
    assert fast_encode(record["input"], params, parallel=parallel) == record["message"]


@pytest.mark.parametrize("record", VALID + DECODE_ONLY, ids=vector_id)
@pytest.mark.parametrize("parallel", [False, True])
def test_fast_decoder_reproduces_valid_vector(record, parallel):
    header, bits = fast_decode_bits(record["message"], parallel=parallel)
    assert list(header.shape) == record["shape"]
    np.testing.assert_array_equal(bits, record["decoded_bits"])


@pytest.mark.parametrize("record", INVALID, ids=vector_id)
def test_fast_decoder_rejects_invalid_vector(record):
    """The vector's error class, with the reference's message for the same defect."""
    expected = error_class(record["error"])
    limit = record["max_elements"] or wire.DEFAULT_MAX_ELEMENTS
    want, _ = error_of(lambda: ref.decode_bits(record["message"], max_elements=limit))
    assert want is not None and want[0] is expected
    for parallel in (False, True):
        with pytest.raises(expected) as info:
            fast_decode_bits(record["message"], parallel=parallel, max_elements=limit)
        assert str(info.value) == want[1]
    with pytest.raises(expected) as info:
        qsgd_codec.decode(record["message"], max_elements=limit)
    assert str(info.value) == want[1]


@pytest.mark.parametrize("record", INVALID, ids=vector_id)
def test_inspect_agrees_with_reference_on_invalid_vector(record):
    """inspect() reads no codes, but checks what the reference's header parse checks."""

    def reference_inspect():
        header = wire.parse_header(record["message"], max_elements=None)
        if header.coding == "elias":
            wire.elias_table(wire.byte_view(record["message"]), header)

    want, _ = error_of(reference_inspect)
    got, _ = error_of(lambda: qsgd_codec.inspect(record["message"]))
    assert got == want


# ----------------------------------------------------------------------------- random arrays


@st.composite
def arrays_and_params(draw):
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(
        st.sampled_from([(), (0,), (1,), (7,), (3, 0), (40,), (129,), (5, 11), (2, 3, 17), (300,)])
    )
    n = int(np.prod(shape, dtype=np.int64))
    kind = draw(st.sampled_from(["normal", "wide", "zeros", "tiny", "mixed"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal(n)
    if kind == "wide":
        x *= 10.0 ** rng.integers(-6, 4, n)
    elif kind == "zeros":
        x[rng.random(n) < 0.7] = 0.0
    elif kind == "tiny":
        x *= {"float16": 1e-6, "bfloat16": 1e-38, "float32": 1e-40, "float64": 1e-300}[dtype]
    elif kind == "mixed" and n:
        x[: n // 2] = 0.0
        x[n // 3 :] *= -1.0
    x = x.astype(numpy_dtype(dtype)).reshape(shape)
    levels = draw(st.sampled_from([1, 2, 3, 7, 8, 91, 127, 1000, 4095, 4096, 2**24 - 1]))
    params = wire.EncodeParams(
        levels=levels,
        bucket_size=draw(st.sampled_from([1, 3, 8, 16, 33, 64, 512])),
        scale=draw(st.sampled_from(["max", "l2"])),
        coding=draw(st.sampled_from(["dense", "elias"])),
        seed=draw(st.sampled_from([0, 1, 12345, 2**64 - 1])),
        checksum=draw(st.booleans()),
    )
    return x, params


@SETTINGS
@given(arrays_and_params(), st.booleans())
def test_fast_equals_reference_byte_for_byte(case, parallel):
    x, params = case
    want_err, want = error_of(lambda: ref.encode_array(x, params))
    got_err, got = error_of(lambda: fast_encode(x, params, parallel=parallel))
    assert got_err == want_err
    if want_err is not None:
        return
    assert got == want
    assert_same_decoding(got)
    # through the public API: same bytes, same values, same dtype and shape
    p = params
    assert (
        qsgd_codec.encode(
            x,
            levels=p.levels,
            bucket_size=p.bucket_size,
            scale=p.scale,
            coding=p.coding,
            seed=p.seed,
            checksum=p.checksum,
        )
        == want
    )
    y = qsgd_codec.decode(want)
    assert y.dtype == x.dtype and y.shape == x.shape
    np.testing.assert_array_equal(
        np.ascontiguousarray(y).reshape(-1).view(BITS[wire.dtype_name(x.dtype)]),
        ref.decode_bits(want)[1],
    )


@SETTINGS
@given(arrays_and_params(), st.data())
def test_corrupted_messages_give_the_reference_error_class(case, data):
    x, params = case
    try:
        message = bytearray(ref.encode_array(x, params))
    except QSGDError:
        return
    edits = data.draw(
        st.lists(
            st.tuples(st.integers(0, len(message) - 1), st.integers(0, 255)), min_size=1, max_size=3
        )
    )
    for at, value in edits:
        message[at] = value
    cut = data.draw(st.sampled_from([None, 1, 3, 9]))
    if cut is not None and cut < len(message):
        message = message[:-cut]
    assert_same_decoding(bytes(message))


def test_every_single_byte_corruption_of_elias_body():
    """Each byte of a small elias message's body (no checksum) set to each of several
    values: every code path of the bit reader meets bad input, never crashing."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(70) * (rng.random(70) < 0.5)).astype(np.float32)
    for levels, d in ((1, 32), (9, 16), (5000, 70)):
        message = ref.encode_array(x, wire.EncodeParams(levels, d, "l2", "elias", 7, False))
        start = wire.parse_header(message).codes_offset - 8 * -(-70 // d)
        for at in range(start, len(message)):
            for value in (0x00, 0xFF, 0x80, 0x7F, message[at] ^ 1):
                mutated = bytearray(message)
                mutated[at] = value
                assert_same_decoding(bytes(mutated))


def test_overlong_and_truncated_omega_groups():
    header = wire.pack_header(
        dtype="float32",
        scale="max",
        coding="elias",
        shape=(4,),
        bucket_size=4,
        levels=3,
        seed=0,
        body_length=8 + 8,
        checksum=False,
    )
    scale = np.float32(1.0).tobytes()
    for code in (b"\xff" * 8, b"\x80\x00\x00\x00\x00\x00\x00\x00", b"\xc0" + b"\x00" * 7):
        for nbits in (1, 2, 5, 20, 32, 64):
            message = header + scale + np.uint32(nbits).tobytes() + code
            assert_same_decoding(message)


# ----------------------------------------------------------------------------- threads, sizes


@pytest.fixture
def restore_threads():
    saved = numba.get_num_threads()
    yield
    numba.set_num_threads(saved)


@pytest.mark.parametrize(
    "coding, levels, d, scale",
    [
        ("dense", 127, 512, "max"),
        ("dense", 7, 100, "l2"),
        ("dense", 3, 64, "max"),
        ("dense", 1, 33, "max"),
        ("dense", 7, (1 << 15) + 24, "l2"),
        ("elias", 91, 8192, "l2"),
        ("elias", 1, 513, "max"),
        ("elias", 5000, 2048, "max"),
    ],
)
def test_output_is_independent_of_thread_count(restore_threads, coding, levels, d, scale):
    n = (1 << 17) + 13
    rng = np.random.default_rng(11)
    x = (rng.standard_normal(n) * (rng.random(n) < 0.9)).astype(np.float32)
    params = wire.EncodeParams(levels, d, scale, coding, 99, True)
    results = []
    for threads in (1, 2):
        numba.set_num_threads(threads)
        results.append(fast_encode(x, params, parallel=True))
        results.append(
            qsgd_codec.encode(x, levels=levels, bucket_size=d, scale=scale, coding=coding, seed=99)
        )
    results.append(fast_encode(x, params, parallel=False))
    assert all(r == results[0] for r in results)
    if coding == "dense":  # the reference is quick enough here (vectorized NumPy)
        assert results[0] == ref.encode_array(x, params)
    decoded = []
    for threads in (1, 2):
        numba.set_num_threads(threads)
        decoded.append(qsgd_codec.decode(results[0]).view(np.uint32))
    decoded.append(fast_decode_bits(results[0], parallel=False)[1])
    assert all(np.array_equal(decoded[0], other) for other in decoded)
    _, want = ref.decode_bits(results[0])
    np.testing.assert_array_equal(decoded[0], want)


def test_elias_reference_agrees_on_a_parallel_sized_input():
    """Above PARALLEL_MIN, through the parallel drivers and the public API."""
    n = cpu.PARALLEL_MIN + 1000
    x = np.random.default_rng(5).standard_normal(n).astype(np.float32)
    params = wire.EncodeParams(12, 4096, "l2", "elias", 3, True)
    want = ref.encode_array(x, params)
    assert fast_encode(x, params, parallel=True) == want
    assert (
        qsgd_codec.encode(x, levels=12, bucket_size=4096, scale="l2", coding="elias", seed=3)
        == want
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_special_values_round_exactly(dtype):
    """Subnormals, extremes and signed zeros of every dtype: fast == reference."""
    if dtype == "float16":
        bits = np.array(
            [0x0001, 0x03FF, 0x0400, 0x7BFF, 0xFBFF, 0x8000, 0x0000, 0x8001, 0x3C00, 0x3555],
            dtype=np.uint16,
        )
    elif dtype == "bfloat16":
        bits = np.array(
            [0x0001, 0x007F, 0x0080, 0x7F7F, 0xFF7F, 0x8000, 0x0000, 0x8001, 0x3F80, 0x3EAB],
            dtype=np.uint16,
        )
    elif dtype == "float32":
        bits = np.array(
            [
                0x00000001,
                0x007FFFFF,
                0x00800000,
                0x7F7FFFFF,
                0xFF7FFFFF,
                0x80000000,
                0,
                0x80000001,
                0x3F800000,
                0x3EAAAAAB,
            ],
            dtype=np.uint32,
        )
    else:
        bits = np.array(
            [
                1,
                0x000FFFFFFFFFFFFF,
                0x0010000000000000,
                0x47EFFFFFE0000000,
                0xC7EFFFFFE0000000,
                1 << 63,
                0,
                (1 << 63) | 1,
                0x3FF0000000000000,
                0x36A0000000000000,
            ],
            dtype=np.uint64,
        )
    x = bits.view(numpy_dtype(dtype))
    for coding in ("dense", "elias"):
        for scale in ("max", "l2"):
            for levels, d in ((1, 1), (7, 3), (127, 10), (2**24 - 1, 4)):
                params = wire.EncodeParams(levels, d, scale, coding, 5, True)
                want_err, want = error_of(lambda: ref.encode_array(x, params))
                got_err, got = error_of(lambda: fast_encode(x, params))
                assert got_err == want_err
                if want is not None:
                    assert got == want
                    assert_same_decoding(got)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_refused(dtype, bad):
    x = np.ones(50, dtype=numpy_dtype(dtype))
    x[37] = bad
    for coding in ("dense", "elias"):
        want, _ = error_of(
            lambda: ref.encode_array(x, wire.encode_params(bucket_size=16, coding=coding))
        )
        with pytest.raises(NonFiniteError, match="element 37") as info:
            qsgd_codec.encode(x, bucket_size=16, coding=coding)
        assert (type(info.value), str(info.value)) == want


def test_scale_overflow_is_refused_like_the_reference():
    x = np.full(64, 60000.0, dtype=np.float16)
    with pytest.raises(NonFiniteError):
        ref.encode_array(x, wire.encode_params(scale="l2", bucket_size=64))
    for coding in ("dense", "elias"):
        want, _ = error_of(
            lambda: ref.encode_array(
                x, wire.encode_params(scale="l2", bucket_size=64, coding=coding)
            )
        )
        with pytest.raises(NonFiniteError, match="bucket 0") as info:
            qsgd_codec.encode(x, scale="l2", bucket_size=64, coding=coding)
        assert (type(info.value), str(info.value)) == want
    qsgd_codec.encode(x, scale="max", bucket_size=64)  # max scaling fits


def test_fma_free_l2_scale_matches_reference_sum():
    """The 32-lane sum of squares is not contracted into FMAs: compared before the upward
    rounding to float32 hides the last bits."""
    rng = np.random.default_rng(8)
    acc = np.empty(32)
    for m in (1, 31, 32, 33, 100, 1000):
        x = rng.standard_normal(m) * 10.0 ** rng.integers(-3, 3, m)
        bits = drivers._readonly(x.view(np.uint64))
        y, status = quantize._bucket_scale(
            bits, 0, m, True, 52, np.uint64(2**63 - 1), np.uint64(0x7FF0000000000000), acc
        )
        assert status == D_OK
        assert y == float(np.sqrt(ref.l2_sum_of_squares(x)))


# ----------------------------------------------------------------------------- layouts


@pytest.mark.parametrize(
    "make",
    [
        lambda a: a[::2],
        lambda a: a[::-1],
        lambda a: a.reshape(20, 30).T,
        lambda a: np.asfortranarray(a.reshape(20, 30)),
        lambda a: a.reshape(20, 30)[:, 5:25],
        lambda a: a.astype(a.dtype.newbyteorder(">")),
        lambda a: np.frombuffer(b"\x00" + a.tobytes(), dtype=a.dtype, offset=1),
    ],
)
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_strided_and_unusual_inputs_encode_their_c_order_values(make, dtype):
    a = np.random.default_rng(2).standard_normal(600).astype(dtype)
    x = make(a)
    params = wire.EncodeParams(7, 64, "l2", "dense", 1, True)
    want = ref.encode_array(np.ascontiguousarray(x).astype(dtype), params)
    assert qsgd_codec.encode(x, levels=7, bucket_size=64, scale="l2", seed=1) == want
    assert fast_encode(x, params) == want


def test_zero_d_and_empty_inputs():
    for x in (
        np.float32(2.5),
        np.array(-1.0),
        np.zeros((0,), np.float16),
        np.zeros((4, 0, 3), np.float64),
    ):
        x = np.asarray(x)
        for coding in ("dense", "elias"):
            message = qsgd_codec.encode(x, coding=coding, seed=3)
            assert message == ref.encode_array(x, wire.encode_params(coding=coding, seed=3))
            y = qsgd_codec.decode(message)
            assert y.shape == x.shape and y.dtype == x.dtype


# ----------------------------------------------------------------------------- out= buffers


@pytest.mark.parametrize("coding", ["dense", "elias"])
def test_encode_into_caller_buffer(coding):
    x = np.random.default_rng(4).standard_normal((30, 40)).astype(np.float32)
    kw = dict(bits=4, bucket_size=128, coding=coding, seed=9)
    want = qsgd_codec.encode(x, **kw)
    size = qsgd_codec.max_encoded_size(x.shape, **kw)
    assert size >= len(want)
    if coding == "dense":
        assert size == len(want)
    for out in (bytearray(size + 5), np.zeros(size, np.uint8), memoryview(bytearray(size))):
        view = qsgd_codec.encode(x, out=out, **kw)
        assert isinstance(view, memoryview) and view.nbytes == len(want)
        assert bytes(view) == want
        assert bytes(memoryview(out)[: len(want)]) == want
    with pytest.raises(ParameterError, match="max_encoded_size"):
        qsgd_codec.encode(x, out=bytearray(len(want) - 1), **kw)
    with pytest.raises(ParameterError, match="read-only"):
        qsgd_codec.encode(x, out=bytes(size), **kw)


@pytest.mark.parametrize("levels", [1, 7, 91, 127, 2**24 - 1])
@pytest.mark.parametrize("n, d", [(1000, 64), (37, 8), (8192, 8192), (1, 1)])
def test_max_encoded_size_bounds_elias(levels, n, d):
    """The bound is reached by a constant vector with max scaling (every level = s)."""
    x = np.full(n, -3.0, dtype=np.float32)
    kw = dict(levels=levels, bucket_size=d, coding="elias", scale="max")
    assert len(qsgd_codec.encode(x, **kw)) == qsgd_codec.max_encoded_size(n, **kw)
    y = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    assert len(qsgd_codec.encode(y, **kw)) <= qsgd_codec.max_encoded_size(n, **kw)


def test_max_encoded_size_validates():
    assert qsgd_codec.max_encoded_size((), bits=8) == len(qsgd_codec.encode(np.float32(1)))
    with pytest.raises(ParameterError):
        qsgd_codec.max_encoded_size((3, -1))
    with pytest.raises(ParameterError):
        qsgd_codec.max_encoded_size(10, bits=1)


def test_decode_into_out_in_place_and_strided():
    x = np.random.default_rng(6).standard_normal((64, 50)).astype(np.float32)
    message = qsgd_codec.encode(x, bits=8, seed=2)
    want = qsgd_codec.decode(message)
    out = np.empty_like(x)
    assert qsgd_codec.decode(message, out=out) is out
    np.testing.assert_array_equal(out, want)
    big = np.zeros((64, 100), np.float32)
    strided = big[:, ::2]
    qsgd_codec.decode(message, out=strided)
    np.testing.assert_array_equal(strided, want)
    assert not big[:, 1::2].any()
    with pytest.raises(LimitError):  # out's size is the element limit (spec 9)
        qsgd_codec.decode(message, out=np.empty(10, np.float32))
    with pytest.raises(ParameterError):
        qsgd_codec.decode(message, out=np.empty(x.size + 1, np.float32))
    with pytest.raises(ParameterError):
        qsgd_codec.decode(message, out=np.empty_like(x, dtype=np.float64))


def test_memory_decode_in_place_allocates_nothing_large():
    x = np.random.default_rng(1).standard_normal(1 << 18).astype(np.float32)
    for kw in (dict(bits=4), dict(levels=23, bucket_size=512, coding="elias", scale="l2")):
        message = qsgd_codec.encode(x, **kw)
        out = np.empty_like(x)
        qsgd_codec.decode(message, out=out)
        tracemalloc.start()
        qsgd_codec.decode(message, out=out)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < 64 * 1024, peak  # O(chunks) bookkeeping, never O(n)


def test_memory_encode_is_output_plus_small():
    x = np.random.default_rng(1).standard_normal(1 << 18).astype(np.float32)
    for kw in (dict(bits=4), dict(levels=23, bucket_size=512, coding="elias", scale="l2")):
        size = len(qsgd_codec.encode(x, **kw))
        tracemalloc.start()
        qsgd_codec.encode(x, **kw)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        nb = -(-x.size // 512)
        assert peak < size + 16 * nb + 64 * 1024, (peak, size)


# ----------------------------------------------------------------------------- CRC


def _crc_kernels():
    kernels = [crc.crc32_table]
    features = crc._cpu_features()
    if platform.machine().lower() in ("x86_64", "amd64"):
        if {"pclmul", "sse4.1"} <= features:
            kernels.append(crc.crc32_clmul128)
        if {"vpclmulqdq", "avx512f", "avx512bw"} <= features:
            kernels.append(crc.crc32_clmul512)
    return kernels


@pytest.mark.parametrize("kernel", _crc_kernels(), ids=lambda k: k.__name__)
def test_crc32_matches_zlib(kernel):
    rng = np.random.default_rng(12)
    data = rng.integers(0, 256, 5000, dtype=np.uint8)
    for n in list(range(0, 700, 7)) + [1023, 1024, 1025, 4096, 4999]:
        for offset in (0, 1, 5):
            buf = data[offset : offset + n]
            for start in (0, 0xFFFFFFFF, 0x12345678):
                assert int(kernel(buf, np.uint32(start))) == zlib.crc32(buf.tobytes(), start)


def test_checksum_is_verified_before_body_checks():
    x = np.linspace(-1, 1, 100, dtype=np.float32)
    message = bytearray(qsgd_codec.encode(x, coding="elias", bucket_size=16))
    message[-10] ^= 0xFF  # a code byte: would also be corrupt data
    with pytest.raises(ChecksumError):
        qsgd_codec.decode(bytes(message))
    with pytest.raises(ChecksumError):
        qsgd_codec.inspect(bytes(message))


def test_inspect_reports_code_bits_and_table_errors():
    x = np.random.default_rng(0).standard_normal(300).astype(np.float32)
    message = qsgd_codec.encode(x, coding="elias", levels=5, bucket_size=64, checksum=False)
    info = qsgd_codec.inspect(message)
    header = wire.parse_header(message)
    lengths, _ = wire.elias_table(message, header)
    assert info["code_bits"] == int(lengths.astype(np.int64).sum())
    bad = bytearray(message)
    bad[header.table_offset] ^= 0x40  # bucket 0 declares more bytes than the body has
    with pytest.raises(LengthError):
        qsgd_codec.inspect(bytes(bad))
    with pytest.raises(LengthError):
        qsgd_codec.decode(bytes(bad))


def test_dense_errors_match_reference_classes():
    x = np.linspace(-1, 1, 40, dtype=np.float32)
    message = bytearray(qsgd_codec.encode(x, bits=4, bucket_size=8, checksum=False))
    header = wire.parse_header(bytes(message))
    for at, value in (
        (header.codes_offset, 0x88),
        (header.scales_offset + 3, 0x80),
        (header.scales_offset, 0),
        (header.scales_offset + 1, 0),
        (header.scales_offset + 2, 0),
        (header.scales_offset + 3, 0),
    ):
        mutated = bytearray(message)
        mutated[at] = value
        assert_same_decoding(bytes(mutated))
    zero_scale = bytearray(message)
    zero_scale[header.scales_offset : header.scales_offset + 4] = b"\x00" * 4
    with pytest.raises(CorruptDataError, match="scale 0"):
        qsgd_codec.decode(bytes(zero_scale))


def test_warmup_reports_timings():
    timings = qsgd_codec.warmup()
    assert timings["total"] >= 0
    assert {"crc32", "dense/float32", "elias/bfloat16"} <= set(timings)


def test_kernels_take_the_key_as_any_integer_type():
    """numba types a Python int below 2^63 as int64, and int64 mixed with uint64 becomes
    float64: the kernels coerce the key, so both typings give the spec's levels."""
    x = drivers._readonly(
        np.random.default_rng(9).standard_normal(300).astype(np.float32).view(np.uint32)
    )
    key = wire.rng.seed_key(12345)
    q_int, q_u64 = np.empty(1024, np.int32), np.empty(1024, np.int32)
    for r in (2.5, 4.0):  # 2.5 < max |x|: spec 8.4's clamp to s matters too
        quantize._quantize(x, 0, 300, r, 7, key if key < 2**63 else key - 2**64, 23, q_int)
        quantize._quantize(x, 0, 300, r, 7, np.uint64(key), 23, q_u64)
        np.testing.assert_array_equal(q_int[:300], q_u64[:300])
        u = ref.uniform(12345, np.arange(300))
        want = ref.quantize_bucket(x.view(np.float32).astype(np.float64), np.float32(r), 7, u)
        np.testing.assert_array_equal(q_u64[:300], want)


def test_kernels_compile_the_one_splitmix64():
    """The CPU kernels' generator is wire.rng.mix64 itself, compiled, not a copy of it."""
    assert quantize._mix64.py_func is wire.rng.mix64
    z = np.array([0, 1, 12345, 2**64 - 1], dtype=np.uint64)
    assert [int(quantize._mix64(v)) for v in z] == [int(v) for v in wire.rng.mix64(z)]
