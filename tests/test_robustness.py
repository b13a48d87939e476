"""Untrusted bytes (spec/wire-format.md section 13): every decoder path against damaged
messages, the encoder's refusals, the element limit and 64-bit size arithmetic.

The acceptance oracle is tests/mutation.py's ``judge``: a damaged message is either refused
with the error class the reference raises, or it is itself a well-formed message (the
canonical encoding of what it decodes to) and the path returns the reference's values,
bit for bit, each on its bucket's grid.
"""

import array
import functools
import os
import struct
import sys

import numpy as np
import pytest

import mutation as M
import qsgd_codec
from qsgd_codec import format as fmt
from qsgd_codec import reference as ref
from qsgd_codec.errors import (ChecksumError, DTypeError, LengthError, LimitError,
                               NonFiniteError, ParameterError, QSGDError, TruncatedError)

LIMIT = 1 << 20
MESSAGES = M.small_messages()
NAMES = [name for name, _ in MESSAGES]
IN_PROCESS = ["reference", "api", "api_out"]


@functools.lru_cache(maxsize=None)
def reference_outcome(data):
    return M.run_decoder(M.decode_reference, data, LIMIT)


def check_all(path, messages, *, require_rejection=False):
    """Problems (strings) found decoding ``messages`` [(label, bytes)] with ``path``."""
    problems = []
    for label, data in messages:
        outcome = M.run_decoder(M.PATHS[path], data, LIMIT)
        why = M.judge(data, outcome, LIMIT, reference_outcome(data))
        if why is None and require_rejection and outcome.accepted:
            why = "accepted"
        if why:
            problems.append(f"{label}: {why}")
    return problems


def flips(name, message):
    return [(f"{name} bit {i} ({M.region(message, i >> 3)})", m)
            for i, m in M.bit_flips(message)]


# ----------------------------------------------------------------------------- the corpus

def test_corpus_covers_both_codings_with_and_without_checksum():
    headers = [fmt.parse_header(m) for _, m in MESSAGES]
    kinds = {(h.coding, h.has_checksum) for h in headers}
    assert kinds == {(c, k) for c in ("dense", "elias") for k in (True, False)}
    assert {h.dtype for h in headers} == set(fmt.DTYPE_CODES)
    assert any(h.n == 0 for h in headers) and any(len(h.shape) == 2 for h in headers)
    for _, m in MESSAGES:
        assert M.canonical(m) == m                        # the oracle's re-serialiser is exact


# ----------------------------------------------------------------------------- exhaustive

@pytest.mark.parametrize("path", IN_PROCESS)
@pytest.mark.parametrize("name, message", MESSAGES, ids=NAMES)
def test_every_single_bit_flip_is_refused_or_allowed(path, name, message):
    has_crc = fmt.parse_header(message).has_checksum
    problems = check_all(path, flips(name, message), require_rejection=has_crc)
    assert not problems, f"{len(problems)} bad outcomes, first ones:\n" + "\n".join(problems[:8])


@pytest.mark.parametrize("path", IN_PROCESS)
def test_every_truncation_and_extension_is_refused(path):
    fn = M.PATHS[path]
    for name, message in MESSAGES:
        for prefix in M.truncations(message):
            outcome = M.run_decoder(fn, prefix, LIMIT)
            assert outcome.error == "TruncatedError", (name, len(prefix), outcome)
        for extra in (b"\x00", b"\x00" * 4, message):
            outcome = M.run_decoder(fn, message + extra, LIMIT)
            assert outcome.error == "TrailingDataError", (name, len(extra), outcome)


def test_with_checksum_every_flip_is_detected_without_it_only_well_formed_ones_pass():
    """The detection-rate claims of benchmarks/results/robustness.md, in miniature."""
    caught = {True: 0, False: 0}
    total = {True: 0, False: 0}
    passed_regions = set()
    for name, message in MESSAGES:
        crc = fmt.parse_header(message).has_checksum
        for i, mutant in M.bit_flips(message):
            outcome = reference_outcome(mutant)
            total[crc] += 1
            caught[crc] += not outcome.accepted
            if outcome.accepted:
                passed_regions.add(M.region(message, i >> 3))
    assert caught[True] == total[True]
    assert 0.5 < caught[False] / total[False] < 0.95     # about 70% (seeds, scales, codes pass)
    # what a flip may change undetected without a CRC: values and informational fields,
    # never the framing (magic, version, lengths, flags, reserved, shape, n, bit lengths)
    assert passed_regions <= {"codes", "scales", "seed", "minor", "levels", "bucket_size",
                              "dtype", "scale_kind", "coding"}
    assert {"codes", "scales", "seed"} <= passed_regions


# ----------------------------------------------------------------------------- the oracle

def test_judge_catches_each_kind_of_wrong_outcome(monkeypatch):
    name, message = next(m for m in MESSAGES if m[0] == "dense_b4_zero_bucket_nocrc")
    good = M.decode_reference(message, LIMIT)
    assert M.judge(message, good) is None
    bits = bytearray(good.bits)
    bits[0] ^= 1
    assert "differ" in M.judge(message, good._replace(bits=bytes(bits)))
    assert "wrong rejection" in M.judge(message, M.Outcome("CorruptDataError"))
    truncated = message[:-1]
    assert "wrong acceptance" in M.judge(truncated, good)
    assert "error class" in M.judge(truncated, M.Outcome("LengthError"))
    # a reference that forgot the padding check would accept a non-canonical message
    header = fmt.parse_header(message)
    padded = bytearray(message)
    padded[-1] |= 0x80                                    # n*w = 11*4 bits: 4 padding bits
    assert M.run_decoder(M.decode_reference, bytes(padded), LIMIT).error == "CorruptDataError"
    real_unpack = ref.dense_unpack
    monkeypatch.setattr(ref, "dense_unpack", lambda codes, n, w: real_unpack(
        bytes(codes[:-1]) + bytes([codes[-1] & 0x0F]), n, w))
    lenient = M.decode_reference(bytes(padded), LIMIT)
    assert "non-canonical" in M.judge(bytes(padded), lenient, reference=lenient)
    assert header.coding == "dense"


def test_judge_checks_the_grid_independently_of_the_reference():
    name, message = next(m for m in MESSAGES if m[0] == "elias_s1000_f16_nocrc")
    good = M.decode_reference(message, LIMIT)
    assert M.grid_violation(message, good) is None
    values = np.frombuffer(good.bits, np.float16).copy()
    i = int(np.flatnonzero(values)[0])
    values[i] = np.nextafter(values[i], np.float16(np.inf))  # one ulp off the grid
    assert "grid" in M.grid_violation(message, good._replace(bits=values.tobytes()))
    values[i] = np.float16(np.inf)
    assert "non-finite" in M.grid_violation(message, good._replace(bits=values.tobytes()))


def test_judge_accepts_values_rounded_past_a_subnormal_scale():
    """Found by the fuzzer (a false alarm of an earlier oracle): a bfloat16 message whose
    float32 scale 6.6e-41 lies below bfloat16's smallest subnormal 2^-133 = 9.2e-41.  Level
    s decodes to RN_bfloat16(r) = 2^-133 > r, which is what the spec's arithmetic gives."""
    data = bytes.fromhex("89515347010038000000020101010000060000000000000006000000"
                         "7f0000000b000000000000001200000000000000060000000000000"
                         "03fb800004e0000002be9b0af62dfcd7c1490")
    outcome = M.decode_reference(data, LIMIT)
    assert M.judge(data, outcome, LIMIT, outcome) is None
    values = np.frombuffer(outcome.bits, np.uint16)
    assert 0x0001 in values                                # 2^-133, bfloat16 bits


# ----------------------------------------------------------------------------- child processes

def all_damage(limit_messages=None):
    msgs = MESSAGES if limit_messages is None else MESSAGES[:limit_messages]
    out = []
    for name, message in msgs:
        out += flips(name, message)
        out += [(f"{name} prefix {len(p)}", p) for p in M.truncations(message)]
    return out


def test_child_runner_reports_a_segfault_with_its_input():
    ok = MESSAGES[0][1]
    outcomes, crash = M.run_child("selftest_segfault", [ok, b"B" + ok[1:], ok])
    assert len(outcomes) == 1 and outcomes[0].accepted
    assert crash is not None and crash[0] == 1 and "signal 11" in crash[1]


@pytest.mark.parametrize("path, guard", [("api", "after"), ("api", "before"),
                                         ("api_out", "after"), ("api_out", "before")])
def test_damaged_messages_in_guarded_buffers_never_crash(path, guard):
    """Each message ends (or starts) at an inaccessible page, and so does ``out``: a read or
    write one byte outside its buffer kills the child with SIGSEGV, reported here."""
    damage = all_damage()
    outcomes, crash = M.run_child(path, [m for _, m in damage], max_elements=LIMIT,
                                  guard=guard)
    if crash is not None:
        label, data = damage[crash[0]]
        pytest.fail(f"decoder died on {label}: {data.hex()}\n{crash[1]}")
    problems = []
    for (label, data), outcome in zip(damage, outcomes):
        why = M.judge(data, outcome, LIMIT, reference_outcome(data))
        if why:
            problems.append(f"{label}: {why}")
    assert not problems, "\n".join(problems[:8])


@pytest.mark.skipif(not M.cuda_available(), reason="qsgd_codec/cuda.py not present")
def test_cuda_path_under_the_simulator():
    """The CUDA kernels (NUMBA_ENABLE_CUDASIM=1): every flip of one dense and one elias
    message without a checksum, and their truncations.  The simulator is slow, so the full
    corpus runs in benchmarks/robustness_report.py --cuda."""
    chosen = [m for m in MESSAGES if m[0] in ("dense_b4_zero_bucket_nocrc",
                                              "elias_b4_zero_bucket_nocrc")]
    damage = []
    for name, message in chosen:
        damage += flips(name, message)[::6]
        damage += [(f"{name} prefix {len(p)}", p) for p in M.truncations(message)][::8]
    damage += chosen
    outcomes, crash = M.run_child("cuda", [m for _, m in damage], max_elements=LIMIT,
                                  env={"NUMBA_ENABLE_CUDASIM": "1"}, timeout=900)
    if crash is not None:
        label, data = damage[crash[0]]
        pytest.fail(f"CUDA path died on {label}: {data.hex()}\n{crash[1]}")
    problems = [f"{label}: {why}" for (label, data), outcome in zip(damage, outcomes)
                if (why := M.judge(data, outcome, LIMIT, reference_outcome(data)))]
    assert not problems, "\n".join(problems[:8])


# ----------------------------------------------------------------------------- out= after errors

def test_out_untouched_by_header_errors_and_nothing_written_outside_it():
    """A header-level error (spec 3.4 and 7, the CRC included) is raised before any value is
    written; ``out`` keeps its contents.  (After a body error its contents are unspecified;
    the guarded-buffer test shows nothing outside ``out`` is written either way.)"""
    name, message = MESSAGES[0]
    header = fmt.parse_header(message)
    for bad in (message[:-1], message + b"\x00",
                message[:-1] + bytes([message[-1] ^ 1]),           # CRC mismatch
                message[:10] + b"\x09" + message[11:]):            # unknown dtype
        out = np.full(header.shape, 7.0, dtype=np.float32)
        with pytest.raises(QSGDError):
            qsgd_codec.decode(bad, out=out)
        assert np.all(out == 7.0)


# ----------------------------------------------------------------------------- message inputs

def test_message_may_be_any_contiguous_buffer():
    name, message = next(m for m in MESSAGES if m[0] == "elias_b4_zero_bucket_crc")
    expected = qsgd_codec.decode(message)
    candidates = [bytearray(message), memoryview(message), np.frombuffer(message, np.uint8),
                  np.frombuffer(message, np.uint8).reshape(1, -1),
                  array.array("B", message)]
    for data in candidates:
        np.testing.assert_array_equal(qsgd_codec.decode(data), expected)
    # a multi-byte-item buffer is read as its bytes (this once sliced by items, not bytes)
    for length in range(1, 60):
        x = np.linspace(-1, 1, length, dtype=np.float32)
        for coding in ("dense", "elias"):
            data = qsgd_codec.encode(x, bits=4, bucket_size=8, coding=coding)
            if len(data) % 4 == 0:
                np.testing.assert_array_equal(
                    qsgd_codec.decode(np.frombuffer(data, np.uint32)), qsgd_codec.decode(data))
                np.testing.assert_array_equal(
                    ref.decode_message(np.frombuffer(data, np.uint32)), qsgd_codec.decode(data))


@pytest.mark.parametrize("data", ["a string", None, 42, [0x89, 0x51], 3.5])
def test_a_non_buffer_message_is_a_parameter_error(data):
    with pytest.raises(ParameterError, match="bytes-like"):
        qsgd_codec.decode(data)


def test_a_strided_buffer_is_a_parameter_error():
    message = MESSAGES[0][1]
    strided = np.repeat(np.frombuffer(message, np.uint8), 2)[::2]
    with pytest.raises(ParameterError, match="contiguous"):
        qsgd_codec.decode(strided)


@pytest.mark.parametrize("limit", [-1, "100", 1.5, True])
def test_a_bad_limit_is_a_parameter_error(limit):
    with pytest.raises(ParameterError, match="max_elements"):
        qsgd_codec.decode(MESSAGES[0][1], max_elements=limit)


def test_out_with_non_native_byte_order_is_refused_or_correct():
    """Regression: decode(out=<big-endian array>) once wrote native-order bits into it,
    silently byte-swapping every value."""
    name, message = MESSAGES[0]
    expected = qsgd_codec.decode(message)
    out = np.zeros(expected.shape, expected.dtype.newbyteorder(">"))
    try:
        qsgd_codec.decode(message, out=out)
    except ParameterError:
        return
    np.testing.assert_array_equal(out, expected)


# ----------------------------------------------------------------------------- the limit

def elias_bomb(n, bucket_size=1 << 24, dtype="float32", last_level=None):
    """A tiny elias message declaring n elements, every bucket zero except, optionally, the
    last element of the last bucket at level ``last_level``."""
    nb = fmt.num_buckets(n, bucket_size)
    scales = np.zeros(nb, "<f4")
    lengths = np.zeros(nb, "<u4")
    codes = b""
    if last_level is not None:
        scales[-1] = 1.0
        m = n - (nb - 1) * bucket_size
        bits = ref.omega_bits(m) + "0" + ref.omega_bits(last_level)
        lengths[-1] = len(bits)
        codes = ref.bits_to_bytes(bits)
    body = scales.tobytes() + lengths.tobytes() + codes
    head = fmt.pack_header(dtype=dtype, scale="max", coding="elias", shape=(n,),
                           bucket_size=bucket_size, levels=7, seed=0, body_length=len(body))
    message = head + body
    return message + fmt.crc32(message).to_bytes(4, "little")


def test_default_limit_is_2_to_the_28_and_checked_before_allocation():
    import tracemalloc
    assert fmt.DEFAULT_MAX_ELEMENTS == 1 << 28
    bomb = elias_bomb((1 << 28) + 1)
    assert len(bomb) < 200
    tracemalloc.start()
    try:
        with pytest.raises(LimitError, match="limit"):
            qsgd_codec.decode(bomb)
        with pytest.raises(LimitError):
            ref.decode_bits(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20                       # nothing sized by n was allocated


@pytest.mark.parametrize("path", ["reference", "api"])
def test_limit_is_exact(path):
    bomb = elias_bomb(5000, bucket_size=1000, last_level=3)
    assert M.run_decoder(M.PATHS[path], bomb, 4999).error == "LimitError"
    outcome = M.run_decoder(M.PATHS[path], bomb, 5000)
    assert outcome.accepted
    values = np.frombuffer(outcome.bits, np.float32)
    assert values[-1] == np.float32(3 / 7) and not values[:-1].any()


PEAK_SCRIPT = """
import sys
sys.path.insert(0, "tests")
import qsgd_codec
from test_robustness import elias_bomb

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

n = 1 << 24
bomb = elias_bomb(n, bucket_size=1 << 16, last_level=7)
qsgd_codec.decode(elias_bomb(1000, bucket_size=100, last_level=7))   # compile / load
open("/proc/self/clear_refs", "w").write("5")                        # reset the peak RSS
before = status("VmRSS:")
qsgd_codec.decode(bomb)
print((status("VmHWM:") - before) / (4 * n))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
def test_peak_memory_of_a_decode_is_the_output_plus_a_little():
    """A 4 KiB elias message declaring 2^24 float32 elements: the decoder's peak resident
    memory grows by the 64 MiB output and not much more (measured in a child process, so
    memory the kernels allocate outside NumPy counts too)."""
    import subprocess
    result = subprocess.run([sys.executable, "-c", PEAK_SCRIPT], capture_output=True,
                            text=True, cwd=M.ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    ratio = float(result.stdout.split()[-1])
    assert ratio < 1.25, f"peak memory {ratio:.2f} x the output"


def test_reference_decoder_memory_is_linear_in_the_element_count():
    """The oracle is not frugal (int64 levels, float64 temporaries), but linear in n."""
    import tracemalloc
    peaks = []
    for n in (1 << 14, 1 << 16):
        bomb = elias_bomb(n, bucket_size=1 << 12, last_level=7)
        tracemalloc.start()
        try:
            ref.decode_bits(bomb)
            peaks.append(tracemalloc.get_traced_memory()[1] / n)
        finally:
            tracemalloc.stop()
    assert peaks[1] < 80 and abs(peaks[1] - peaks[0]) < 8


# ----------------------------------------------------------------------------- 64-bit sizes

@pytest.mark.parametrize("n", [(1 << 31) - 1, 1 << 31, (1 << 32) + 7, 1 << 40, (1 << 63) + 5,
                               (1 << 64) - 1])
@pytest.mark.parametrize("levels", [1, 127, (1 << 24) - 1])
def test_size_arithmetic_is_exact_beyond_32_bits(n, levels):
    w = fmt.dense_width(levels)
    assert fmt.dense_codes_length(n, levels) * 8 >= n * w > (fmt.dense_codes_length(n, levels)
                                                             - 1) * 8
    for d in (1, 512, 1 << 24):
        nb = fmt.num_buckets(n, d)
        assert (nb - 1) * d < n <= nb * d


def crafted_header(n, coding, levels=7, bucket_size=1 << 24, body_length=0, checksum=False):
    return fmt.pack_header(dtype="float32", scale="max", coding=coding, shape=(n,),
                           bucket_size=bucket_size, levels=levels, seed=0,
                           body_length=body_length, checksum=checksum)


@pytest.mark.parametrize("n", [1 << 31, (1 << 32) + 1, 1 << 40, (1 << 64) - 1])
def test_huge_dense_headers_are_refused_by_length_not_overflow(n):
    head = crafted_header(n, "dense", levels=(1 << 24) - 1)
    with pytest.raises(LimitError):
        qsgd_codec.decode(head)
    expected = 4 * fmt.num_buckets(n, 1 << 24) + -(-n * 25 // 8)
    with pytest.raises(LengthError, match=str(expected)):
        fmt.parse_header(head, max_elements=None)
    # a body_length that wraps a 64-bit computation must not line up by accident
    wrapped = expected % (1 << 64)
    with pytest.raises((LengthError, TruncatedError)):
        fmt.parse_header(crafted_header(n, "dense", levels=(1 << 24) - 1,
                                        body_length=wrapped), max_elements=None)


def test_elias_message_beyond_2_to_the_32_elements_is_inspected_exactly():
    n = (1 << 33) + 5
    bomb = elias_bomb(n, last_level=7)
    assert len(bomb) < 5000
    info = qsgd_codec.inspect(bomb)
    assert info["n"] == n and info["num_buckets"] == 513
    header = fmt.parse_header(bomb, max_elements=None)
    lengths, offsets = fmt.elias_table(bomb, header)
    assert offsets.dtype == np.int64 and int(offsets[-1]) == len(bomb) - header.codes_offset - 4
    assert info["code_bits"] == int(lengths[-1]) and info["code_bits"] > 0
    with pytest.raises(LimitError):
        qsgd_codec.decode(bomb)


@pytest.mark.skipif(os.environ.get("QSGD_LARGE_TESTS") != "1",
                    reason="needs ~5 GiB and minutes: set QSGD_LARGE_TESTS=1")
def test_decode_past_2_to_the_31_elements():
    """A float16 elias message of 2^31 + 3 elements (4 GiB decoded): the non-zero elements
    at 2^31 - 1, 2^31 and the last index land exactly there."""
    n = (1 << 31) + 3
    d = 1 << 24
    nb = fmt.num_buckets(n, d)
    scales = np.zeros(nb, "<f4")
    lengths = np.zeros(nb, "<u4")
    codes = []
    targets = {(1 << 31) - 1: 3, 1 << 31: -5, n - 1: 7}
    for b in range(nb):
        here = sorted(i for i in targets if b * d <= i < (b + 1) * d)
        if not here:
            continue
        scales[b] = 7.0
        bits, previous = "", -1
        for i in here:
            p = i - b * d
            q = targets[i]
            bits += ref.omega_bits(p - previous) + ("1" if q < 0 else "0") + ref.omega_bits(abs(q))
            previous = p
        lengths[b] = len(bits)
        codes.append(ref.bits_to_bytes(bits))
    body = scales.tobytes() + lengths.tobytes() + b"".join(codes)
    head = fmt.pack_header(dtype="float16", scale="max", coding="elias", shape=(n,),
                           bucket_size=d, levels=7, seed=0, body_length=len(body))
    message = head + body + fmt.crc32(head + body).to_bytes(4, "little")
    out = qsgd_codec.decode(message, max_elements=n)
    assert out.shape == (n,)
    for i, q in targets.items():
        assert out[i] == q, i
    assert np.count_nonzero(out) == len(targets)


# ----------------------------------------------------------------------------- encoder side

X = np.linspace(-1, 1, 10, dtype=np.float32)


@pytest.mark.parametrize("kwargs", [
    dict(scale=[]), dict(coding={}), dict(scale=b"max"), dict(coding=1), dict(scale="MAX"),
    dict(bits=np.int8(-128)), dict(bits=np.uint64(1 << 63)), dict(levels=np.uint64(2 ** 64 - 1)),
    dict(levels=np.float64(7)), dict(levels=7.0), dict(bucket_size=2 ** 100),
    dict(bucket_size=np.uint64(2 ** 64 - 1)), dict(bucket_size=np.float32(8)),
    dict(seed=np.int64(-1)), dict(seed="1"), dict(bits=25, levels=(1 << 24) - 2),
])
def test_more_absurd_parameters_are_parameter_errors(kwargs):
    with pytest.raises(ParameterError) as info:
        qsgd_codec.encode(X, **kwargs)
    assert type(info.value) is ParameterError and str(info.value)


def test_numpy_integer_parameters_mean_the_same_as_ints():
    a = qsgd_codec.encode(X, bits=np.int8(4), bucket_size=np.uint32(4), seed=np.uint64(3))
    assert a == qsgd_codec.encode(X, bits=4, bucket_size=4, seed=3)
    assert qsgd_codec.encode(X, levels=np.int64(7)) == qsgd_codec.encode(X, bits=4)


@pytest.mark.parametrize("array", [
    np.array(["2020-01-01"], dtype="datetime64[D]"), np.zeros(3, dtype=[("a", "f4")]),
    np.zeros(3, dtype=np.longdouble), np.zeros(3, dtype=np.uint16),
    np.zeros(3, dtype=np.complex128), np.zeros(3, dtype="timedelta64[s]"),
])
def test_non_numeric_and_lookalike_dtypes_are_refused(array):
    with pytest.raises(DTypeError):
        qsgd_codec.encode(array)


@pytest.mark.parametrize("x", [[1.0, 2.0], 1.0, "abc", None, {"a": 1}])
def test_non_array_inputs_are_parameter_errors(x):
    with pytest.raises(ParameterError):
        qsgd_codec.encode(x)


@pytest.mark.parametrize("coding", ["dense", "elias"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("where", [0, 1, 1023])
@pytest.mark.parametrize("bad", [np.nan, -np.inf])
def test_non_finite_values_are_refused_anywhere(coding, dtype, where, bad):
    import ml_dtypes
    values = np.random.default_rng(where).standard_normal(1024)
    values[where] = bad
    x = (values.astype(np.float32).astype(ml_dtypes.bfloat16) if dtype == "bfloat16"
         else values.astype(dtype))
    with np.errstate(invalid="ignore"):
        with pytest.raises(NonFiniteError, match=f"element {where}"):
            qsgd_codec.encode(x, bits=4, bucket_size=100, coding=coding)


def test_signalling_nan_and_zero_dim_nan_are_refused():
    snan = np.array([0.0, 0.0], np.float32)
    snan.view(np.uint32)[1] = 0x7F800001
    with np.errstate(invalid="ignore"):
        with pytest.raises(NonFiniteError):
            qsgd_codec.encode(snan)
    with pytest.raises(NonFiniteError):
        qsgd_codec.encode(np.array(np.nan))


def test_extreme_finite_values_round_trip_or_are_refused_clearly():
    big = np.float32(np.finfo(np.float32).max)
    x = np.array([big, -big, 1.0], np.float32)
    y = qsgd_codec.decode(qsgd_codec.encode(x, bits=8, scale="max"))
    assert y[0] == big and y[1] == -big
    with pytest.raises(NonFiniteError, match="largest scale"):
        qsgd_codec.encode(x, scale="l2")
    with pytest.raises(NonFiniteError, match="float32 range"):
        qsgd_codec.encode(np.array([1e300, 1.0]))
    tiny = np.array([5e-324, -5e-324, 0.0])          # the scale rounds up to a float32
    y = qsgd_codec.decode(qsgd_codec.encode(tiny, bits=2))
    assert np.all(np.isfinite(y)) and np.all(np.abs(y) <= 1.5e-45)
    neg_zero = qsgd_codec.decode(qsgd_codec.encode(np.array([-0.0, -0.0], np.float32)))
    assert not np.signbit(neg_zero).any()


def test_encoder_counters_use_64_bits():
    """The reference encoder's per-element random stream is keyed by a 64-bit index."""
    index = np.array([(1 << 31) - 1, 1 << 31, (1 << 32) + 1, (1 << 40) + 3], dtype=np.int64)
    u = ref.uniform(5, index)
    expected = [ref.uniform(5, np.array([i], dtype=np.uint64))[0] for i in index.tolist()]
    assert u.tolist() == expected and len(set(u.tolist())) == 4
    assert ref.random_bits(5, np.array([1 << 32])) != ref.random_bits(5, np.array([0]))


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
