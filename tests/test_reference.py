"""The reference implementation against the spec's own statements, and the API's errors."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import qsgd_codec
from qsgd_codec import reference as ref, wire
from qsgd_codec.errors import (
    DTypeError,
    LimitError,
    NonFiniteError,
    ParameterError,
    QSGDError,
    TruncatedError,
)

# ---------------------------------------------------------------- spec tables


@pytest.mark.parametrize(
    "value, bits",
    [
        (1, "0"),
        (2, "100"),
        (3, "110"),
        (4, "101000"),
        (7, "101110"),
        (8, "1110000"),
        (15, "1111110"),
        (16, "10100100000"),
    ],
)
def test_omega_codes_match_spec_table(value, bits):
    assert ref.omega_bits(value) == bits


@pytest.mark.parametrize(
    "value, length",
    [(100, 13), (1000, 17), (65536, 28), (2**32 - 1, 43), (2**24, 36), (2**24 - 1, 35)],
)
def test_omega_lengths_match_paper_notes(value, length):
    assert len(ref.omega_bits(value)) == length


@given(st.integers(1, 2**24))
def test_omega_decodes_what_it_encodes(value):
    bits = ref.omega_bits(value) + "1"
    reader = ref.BitReader(ref.bits_to_bytes(bits), len(bits))
    assert reader.omega() == value
    assert reader.pos == len(bits) - 1


def test_splitmix_known_answers():
    # SplitMix64 started at state 0 (seed 0 -> key 0): its published first outputs
    assert [hex(int(v)) for v in ref.random_bits(0, np.arange(3))] == [
        "0xe220a8397b1dcdaf",
        "0x6e789e6aa1b965f4",
        "0x6c45d188009454f",
    ]
    u = ref.uniform(12345, np.arange(100000))
    assert 0.0 <= u.min() and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.005


def test_crc_check_value():
    assert wire.crc32(b"123456789") == 0xCBF43926


def test_scale_rounds_up_to_float32():
    value = 1.0 + 2.0**-30  # between two float32 values
    r = ref.round_up_to_float32(value)
    assert float(r) >= value and float(np.nextafter(r, np.float32(0))) < value
    assert ref.round_up_to_float32(0.5) == np.float32(0.5)


def test_l2_order_is_lanes_then_fold():
    x = np.arange(1, 70, dtype=np.float64) * 1.1
    acc = [0.0] * 32
    for j, v in enumerate(x):
        acc[j % 32] += v * v
    for h in (16, 8, 4, 2, 1):
        for k in range(h):
            acc[k] += acc[k + h]
    assert ref.l2_sum_of_squares(x) == acc[0]


def test_max_scaled_extremes_reach_level_s():
    x = np.array([0.25, -1.0, 0.5, 1.0], dtype=np.float32)
    y = qsgd_codec.decode(qsgd_codec.encode(x, bits=4, bucket_size=4))
    assert y[1] == -1.0 and y[3] == 1.0


# ---------------------------------------------------------------- round trips

DTYPES = ["float16", "float32", "float64", "bfloat16"]


def make(dtype, values):
    if dtype == "bfloat16":
        import ml_dtypes

        return values.astype(np.float32).astype(ml_dtypes.bfloat16)
    return values.astype(dtype)


@settings(deadline=None, max_examples=60)
@given(
    shape=st.lists(st.integers(0, 7), min_size=0, max_size=3),
    dtype=st.sampled_from(DTYPES),
    coding=st.sampled_from(["dense", "elias"]),
    scale=st.sampled_from(["max", "l2"]),
    levels=st.sampled_from([1, 2, 3, 7, 8, 100, 127, 65535]),
    bucket_size=st.integers(1, 40),
    seed=st.integers(0, 2**64 - 1),
    data=st.data(),
)
def test_roundtrip_properties(shape, dtype, coding, scale, levels, bucket_size, seed, data):
    n = int(np.prod(shape))
    values = np.array(
        data.draw(st.lists(st.floats(-100, 100, width=16), min_size=n, max_size=n)),
        dtype=np.float64,
    ).reshape(shape)
    x = make(dtype, values)
    message = qsgd_codec.encode(
        x, levels=levels, bucket_size=bucket_size, scale=scale, coding=coding, seed=seed
    )
    again = qsgd_codec.encode(
        x, levels=levels, bucket_size=bucket_size, scale=scale, coding=coding, seed=seed
    )
    assert message == again  # a pure function
    info = qsgd_codec.inspect(message)
    assert (
        info["n"] == n and info["shape"] == tuple(shape) and info["message_bytes"] == len(message)
    )
    y = qsgd_codec.decode(message)
    assert y.dtype == x.dtype and y.shape == x.shape
    x64 = ref.to_float64(x, wire.dtype_name(x.dtype))
    y64 = ref.to_float64(y, wire.dtype_name(y.dtype))
    # every value lies on the grid of its bucket and within one level of the input
    for b in range(wire.num_buckets(n, bucket_size)):
        xb, yb = (
            x64[b * bucket_size : (b + 1) * bucket_size],
            y64[b * bucket_size : (b + 1) * bucket_size],
        )
        r = ref.bucket_scale(xb, scale)
        step = float(r) / levels
        output_rounding = (
            float(r)
            * {"float16": 2.0**-10, "bfloat16": 2.0**-7, "float32": 2.0**-23, "float64": 2.0**-52}[
                dtype
            ]
        )
        assert np.all(np.abs(yb - xb) <= step * (1 + 1e-9) + output_rounding)
        assert np.all((yb == 0) | (np.sign(yb) == np.sign(xb)))


def test_a_different_seed_changes_the_rounding_only():
    x = np.random.default_rng(0).standard_normal(4096).astype(np.float32)
    a = qsgd_codec.decode(qsgd_codec.encode(x, bits=2, seed=1))
    b = qsgd_codec.decode(qsgd_codec.encode(x, bits=2, seed=2))
    assert not np.array_equal(a, b)
    assert np.array_equal(np.abs(a) > 0, np.abs(a) > 0)


def test_decode_into_out_and_strided_input():
    base = np.random.default_rng(1).standard_normal((8, 10)).astype(np.float32)
    strided = base[::2, ::3]
    assert not strided.flags.c_contiguous
    message = qsgd_codec.encode(strided, bits=4, bucket_size=3)
    assert message == qsgd_codec.encode(np.ascontiguousarray(strided), bits=4, bucket_size=3)
    out = np.empty(strided.shape, np.float32)
    assert qsgd_codec.decode(message, out=out) is out
    np.testing.assert_array_equal(out, qsgd_codec.decode(message))
    with pytest.raises((ParameterError, LimitError)):
        qsgd_codec.decode(message, out=np.empty(5, np.float32))
    with pytest.raises(ParameterError):
        qsgd_codec.decode(message, out=np.empty(strided.shape, np.float64))


# ---------------------------------------------------------------- encoder errors

X = np.linspace(-1, 1, 10, dtype=np.float32)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(bits=0),
        dict(bits=1),
        dict(bits=26),
        dict(bits=4.0),
        dict(bits=True),
        dict(levels=0),
        dict(levels=2**24),
        dict(levels=-3),
        dict(levels="7"),
        dict(bits=4, levels=3),
        dict(bucket_size=0),
        dict(bucket_size=-1),
        dict(bucket_size=2**24 + 1),
        dict(bucket_size=8.5),
        dict(scale="l1"),
        dict(scale=None, coding="huffman"),
        dict(seed=-1),
        dict(seed=2**64),
        dict(seed=1.5),
    ],
)
def test_bad_parameters_raise_parameter_error(kwargs):
    with pytest.raises(ParameterError) as info:
        qsgd_codec.encode(X, **kwargs)
    assert str(info.value)


@pytest.mark.parametrize(
    "array",
    [
        np.arange(5),
        np.arange(5, dtype=np.int8),
        np.ones(3, dtype=np.complex64),
        np.ones(3, dtype=bool),
        np.array(["a", "b"]),
        np.array([1.0, None], dtype=object),
    ],
)
def test_unsupported_dtypes_raise_dtype_error(array):
    with pytest.raises(DTypeError, match="float16, bfloat16, float32 and float64"):
        qsgd_codec.encode(array)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", DTYPES)
def test_non_finite_input_is_refused(bad, dtype):
    values = np.array([0.5, bad, 1.0])
    with pytest.raises(NonFiniteError, match="element 1"):
        qsgd_codec.encode(make(dtype, values))


def test_l2_scale_beyond_float16_range_is_refused():
    x = np.full(4, 60000.0, dtype=np.float16)
    with pytest.raises(NonFiniteError, match="float16"):
        qsgd_codec.encode(x, scale="l2")
    qsgd_codec.encode(x, scale="max")


def test_float64_beyond_float32_range_is_refused():
    with pytest.raises(NonFiniteError):
        qsgd_codec.encode(np.array([1e39, 1.0]))


def test_non_array_input_is_a_parameter_error():
    with pytest.raises(ParameterError):
        qsgd_codec.encode(object())


def test_errors_are_value_errors():
    assert issubclass(QSGDError, ValueError)
    with pytest.raises(ValueError):
        qsgd_codec.decode(b"\x89QS")
    with pytest.raises(TruncatedError):
        qsgd_codec.decode(b"\x89QS")
