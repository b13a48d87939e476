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
import sys

import mutation as M
import numpy as np
import pytest

import qsgd_codec
from qsgd_codec import reference as ref, wire
from qsgd_codec.errors import (
    DTypeError,
    LengthError,
    LimitError,
    NonFiniteError,
    ParameterError,
    QSGDError,
    TruncatedError,
)

LIMIT = 1 << 20
MESSAGES = M.small_messages()
NAMES = [name for name, _ in MESSAGES]
IN_PROCESS = ["reference", "api", "api_out"]


@functools.lru_cache(maxsize=None)
def reference_outcome(data):
    return M.run_decoder(M.decode_reference, data, LIMIT)


def check_all(path, messages, *, require_rejection=False, same_message=False):
    """Problems (strings) found decoding ``messages`` [(label, bytes)] with ``path``; with
    ``same_message``, a rejection must also carry the reference's message text."""
    problems = []
    for label, data in messages:
        outcome = M.run_decoder(M.PATHS[path], data, LIMIT)
        reference = reference_outcome(data)
        why = M.judge(data, outcome, LIMIT, reference)
        if why is None and require_rejection and outcome.accepted:
            why = "accepted"
        if why is None and same_message and outcome.detail != reference.detail:
            why = f"message {outcome.detail!r}, the reference's {reference.detail!r}"
        if why:
            problems.append(f"{label}: {why}")
    return problems


def flips(name, message):
    return [(f"{name} bit {i} ({M.region(message, i >> 3)})", m) for i, m in M.bit_flips(message)]


# ----------------------------------------------------------------------------- the corpus


def test_corpus_covers_both_codings_with_and_without_checksum():
    headers = [wire.parse_header(m) for _, m in MESSAGES]
    kinds = {(h.coding, h.has_checksum) for h in headers}
    assert kinds == {(c, k) for c in ("dense", "elias") for k in (True, False)}
    assert {h.dtype for h in headers} == set(wire.DTYPE_CODES)
    assert any(h.n == 0 for h in headers) and any(len(h.shape) == 2 for h in headers)
    for _, m in MESSAGES:
        assert M.canonical(m) == m  # the oracle's re-serialiser is exact


# ----------------------------------------------------------------------------- exhaustive


@pytest.mark.parametrize("path", IN_PROCESS)
@pytest.mark.parametrize("name, message", MESSAGES, ids=NAMES)
def test_every_single_bit_flip_is_refused_or_allowed(path, name, message):
    """Refused with the reference's error class and message (the CPU kernels check in the
    reference's order and raise the same defect), or allowed as a well-formed message."""
    has_crc = wire.parse_header(message).has_checksum
    problems = check_all(path, flips(name, message), require_rejection=has_crc, same_message=True)
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
    for _name, message in MESSAGES:
        crc = wire.parse_header(message).has_checksum
        for i, mutant in M.bit_flips(message):
            outcome = reference_outcome(mutant)
            total[crc] += 1
            caught[crc] += not outcome.accepted
            if outcome.accepted:
                passed_regions.add(M.region(message, i >> 3))
    assert caught[True] == total[True]
    assert 0.5 < caught[False] / total[False] < 0.95  # about 70% (seeds, scales, codes pass)
    # what a flip may change undetected without a CRC: values and informational fields,
    # never the framing (magic, version, lengths, flags, reserved, shape, n, bit lengths)
    assert passed_regions <= {
        "codes",
        "scales",
        "seed",
        "minor",
        "levels",
        "bucket_size",
        "dtype",
        "scale_kind",
        "coding",
    }
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
    header = wire.parse_header(message)
    padded = bytearray(message)
    padded[-1] |= 0x80  # n*w = 11*4 bits: 4 padding bits
    assert M.run_decoder(M.decode_reference, bytes(padded), LIMIT).error == "CorruptDataError"
    real_unpack = ref.dense_unpack
    monkeypatch.setattr(
        ref,
        "dense_unpack",
        lambda codes, n, w: real_unpack(bytes(codes[:-1]) + bytes([codes[-1] & 0x0F]), n, w),
    )
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
    data = bytes.fromhex(
        "89515347010038000000020101010000060000000000000006000000"
        "7f0000000b000000000000001200000000000000060000000000000"
        "03fb800004e0000002be9b0af62dfcd7c1490"
    )
    outcome = M.decode_reference(data, LIMIT)
    assert M.judge(data, outcome, LIMIT, outcome) is None
    values = np.frombuffer(outcome.bits, np.uint16)
    assert 0x0001 in values  # 2^-133, bfloat16 bits


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


@pytest.mark.parametrize(
    "path, guard",
    [("api", "after"), ("api", "before"), ("api_out", "after"), ("api_out", "before")],
)
def test_damaged_messages_in_guarded_buffers_never_crash(path, guard):
    """Each message ends (or starts) at an inaccessible page, and so does ``out``: a read or
    write one byte outside its buffer kills the child with SIGSEGV, reported here."""
    damage = all_damage()
    outcomes, crash = M.run_child(path, [m for _, m in damage], max_elements=LIMIT, guard=guard)
    if crash is not None:
        label, data = damage[crash[0]]
        pytest.fail(f"decoder died on {label}: {data.hex()}\n{crash[1]}")
    problems = []
    for (label, data), outcome in zip(damage, outcomes):
        why = M.judge(data, outcome, LIMIT, reference_outcome(data))
        if why:
            problems.append(f"{label}: {why}")
    assert not problems, "\n".join(problems[:8])


@pytest.mark.gpu_sim
def test_cuda_path_under_the_simulator():
    """The CUDA kernels (under the simulator tests/conftest.py turns on): every sixth flip of
    one dense and one elias message without a checksum, and their truncations, decoded in
    this process from host bytes and from device bytes.  The simulator is slow, so the full
    corpus runs in benchmarks/robustness_report.py --cuda."""
    pytest.importorskip("numba.cuda")
    chosen = [
        m for m in MESSAGES if m[0] in ("dense_b4_zero_bucket_nocrc", "elias_b4_zero_bucket_nocrc")
    ]
    damage = []
    for name, message in chosen:
        damage += flips(name, message)[::6]
        damage += [(f"{name} prefix {len(p)}", p) for p in M.truncations(message)][::8]
    damage += chosen
    problems = []
    for path in ("cuda", "cuda_device_bytes"):
        problems += [
            f"{path} {label}: {why}"
            for label, why in (
                (
                    label,
                    M.judge(
                        data,
                        M.run_decoder(M.PATHS[path], data, LIMIT),
                        LIMIT,
                        reference_outcome(data),
                    ),
                )
                for label, data in damage
            )
            if why
        ]
    assert not problems, "\n".join(problems[:8])


@pytest.mark.gpu_sim
def test_cuda_out_untouched_by_header_errors():
    """Spec 13.2: a failed check of 3.4 leaves a device ``out`` as it was (simulator)."""
    cuda = pytest.importorskip("numba.cuda")
    name, m = M.small_messages(checksum=True)[0]
    h = wire.parse_header(m)
    seen = []
    for bad in (
        m[:-1],
        m + b"\x00",
        m[:10] + b"\x09" + m[11:],
        m[:4] + b"\x02" + m[5:],
        m[:8] + b"\x03" + m[9:],
    ):
        out = cuda.to_device(np.full(h.shape, 7.0, np.float32))
        with pytest.raises(QSGDError) as info:
            qsgd_codec.decode(bad, out=out)
        seen += [type(info.value).__name__, bool(np.all(out.copy_to_host() == 7.0))]
    assert seen == [
        "TruncatedError",
        True,
        "TrailingDataError",
        True,
        "UnsupportedError",
        True,
        "VersionError",
        True,
        "ReservedBitsError",
        True,
    ]


# ----------------------------------------------------------------------------- out= after errors


def test_out_untouched_by_header_and_checksum_errors():
    """A header-level error (spec 3.4 and 7, the CRC included) is raised before any value is
    written; ``out`` keeps its contents.  (After a body error its contents are unspecified;
    the guarded-buffer test shows nothing outside ``out`` is written either way.)"""
    name, message = MESSAGES[0]
    header = wire.parse_header(message)
    for bad in (
        message[:-1],
        message + b"\x00",
        message[:-1] + bytes([message[-1] ^ 1]),  # CRC mismatch
        message[:10] + b"\x09" + message[11:],
    ):  # unknown dtype
        out = np.full(header.shape, 7.0, dtype=np.float32)
        with pytest.raises(QSGDError):
            qsgd_codec.decode(bad, out=out)
        assert np.all(out == 7.0)


# ----------------------------------------------------------------------------- message inputs


def test_message_may_be_any_contiguous_buffer():
    name, message = next(m for m in MESSAGES if m[0] == "elias_b4_zero_bucket_crc")
    expected = qsgd_codec.decode(message)
    candidates = [
        bytearray(message),
        memoryview(message),
        np.frombuffer(message, np.uint8),
        np.frombuffer(message, np.uint8).reshape(1, -1),
        array.array("B", message),
    ]
    for data in candidates:
        np.testing.assert_array_equal(qsgd_codec.decode(data), expected)
    # a multi-byte-item buffer is read as its bytes (this once sliced by items, not bytes)
    for length in range(1, 60):
        x = np.linspace(-1, 1, length, dtype=np.float32)
        for coding in ("dense", "elias"):
            data = qsgd_codec.encode(x, bits=4, bucket_size=8, coding=coding)
            if len(data) % 4 == 0:
                np.testing.assert_array_equal(
                    qsgd_codec.decode(np.frombuffer(data, np.uint32)), qsgd_codec.decode(data)
                )
                np.testing.assert_array_equal(
                    ref.decode_message(np.frombuffer(data, np.uint32)), qsgd_codec.decode(data)
                )


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
    nb = wire.num_buckets(n, bucket_size)
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
    head = wire.pack_header(
        dtype=dtype,
        scale="max",
        coding="elias",
        shape=(n,),
        bucket_size=bucket_size,
        levels=7,
        seed=0,
        body_length=len(body),
    )
    message = head + body
    return message + wire.crc32(message).to_bytes(4, "little")


def test_default_limit_is_2_to_the_28_and_checked_before_allocation():
    import tracemalloc

    assert wire.DEFAULT_MAX_ELEMENTS == 1 << 28
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
    assert peak < 1 << 20  # nothing sized by n was allocated


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

    result = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT], capture_output=True, text=True, cwd=M.ROOT, timeout=600
    )
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


def empty_message(shape, dtype="float32"):
    head = wire.pack_header(
        dtype=dtype,
        scale="max",
        coding="dense",
        shape=shape,
        bucket_size=512,
        levels=127,
        seed=0,
        body_length=0,
    )
    return head + wire.crc32(head).to_bytes(4, "little")


@pytest.mark.parametrize("path", ["reference", "api", "api_out"])
def test_an_empty_array_needs_a_shape_that_can_exist(path):
    """Found by the fuzzer: n = 0 with a huge extent made NumPy's reshape raise ValueError.
    Now the header check refuses a shape no array can have (LimitError), at the exact
    boundary: the non-zero extents times the element size must stay below 2^63 bytes."""
    fits = M.run_decoder(M.PATHS[path], empty_message(((1 << 61) - 1, 0)), LIMIT)
    assert fits.accepted and fits.shape == ((1 << 61) - 1, 0) and fits.bits == b""
    for shape, dtype in [
        ((1 << 61, 0), "float32"),
        ((0, (1 << 63)), "float16"),
        ((1 << 31, 1 << 31, 0), "float16"),
        ((0, (1 << 64) - 1), "float64"),
    ]:
        assert (
            M.run_decoder(M.PATHS[path], empty_message(shape, dtype), LIMIT).error == "LimitError"
        ), shape
    assert qsgd_codec.inspect(empty_message((1 << 61, 0)))["n"] == 0  # no array is built


# ----------------------------------------------------------------------------- 64-bit sizes


@pytest.mark.parametrize(
    "n", [(1 << 31) - 1, 1 << 31, (1 << 32) + 7, 1 << 40, (1 << 63) + 5, (1 << 64) - 1]
)
@pytest.mark.parametrize("levels", [1, 127, (1 << 24) - 1])
def test_size_arithmetic_is_exact_beyond_32_bits(n, levels):
    w = wire.dense_width(levels)
    assert (
        wire.dense_codes_length(n, levels) * 8
        >= n * w
        > (wire.dense_codes_length(n, levels) - 1) * 8
    )
    for d in (1, 512, 1 << 24):
        nb = wire.num_buckets(n, d)
        assert (nb - 1) * d < n <= nb * d


def crafted_header(n, coding, levels=7, bucket_size=1 << 24, body_length=0, checksum=False):
    return wire.pack_header(
        dtype="float32",
        scale="max",
        coding=coding,
        shape=(n,),
        bucket_size=bucket_size,
        levels=levels,
        seed=0,
        body_length=body_length,
        checksum=checksum,
    )


@pytest.mark.parametrize("n", [1 << 31, (1 << 32) + 1, 1 << 40, (1 << 64) - 1])
def test_huge_dense_headers_are_refused_by_length_not_overflow(n):
    head = crafted_header(n, "dense", levels=(1 << 24) - 1)
    with pytest.raises(LimitError):
        qsgd_codec.decode(head)
    expected = 4 * wire.num_buckets(n, 1 << 24) + -(-n * 25 // 8)
    with pytest.raises(LengthError, match=str(expected)):
        wire.parse_header(head, max_elements=None)
    # a body_length that wraps a 64-bit computation must not line up by accident
    wrapped = expected % (1 << 64)
    with pytest.raises((LengthError, TruncatedError)):
        wire.parse_header(
            crafted_header(n, "dense", levels=(1 << 24) - 1, body_length=wrapped), max_elements=None
        )


def test_elias_message_beyond_2_to_the_32_elements_is_inspected_exactly():
    n = (1 << 33) + 5
    bomb = elias_bomb(n, last_level=7)
    assert len(bomb) < 5000
    info = qsgd_codec.inspect(bomb)
    assert info["n"] == n and info["num_buckets"] == 513
    header = wire.parse_header(bomb, max_elements=None)
    lengths, offsets = wire.elias_table(bomb, header)
    assert offsets.dtype == np.int64 and int(offsets[-1]) == len(bomb) - header.codes_offset - 4
    assert info["code_bits"] == int(lengths[-1]) and info["code_bits"] > 0
    with pytest.raises(LimitError):
        qsgd_codec.decode(bomb)


def sparse_array(count, dtype):
    """A zero-filled array of ``count`` elements in an anonymous private mapping: pages that
    are never written cost no memory, so element indices past 2^32 are cheap to reach."""
    import mmap

    dtype = np.dtype(dtype)
    mapping = mmap.mmap(-1, count * dtype.itemsize, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return np.frombuffer(mapping, dtype=dtype)


def call_kernel(kernel, **pool):
    """Call a Numba CPU kernel by its parameter names (a readable failure if they change)."""
    import inspect

    names = list(inspect.signature(kernel.py_func).parameters)
    missing = [name for name in names if name not in pool]
    if missing:
        pytest.fail(f"{kernel.py_func.__name__} now takes {names}; teach this test {missing}")
    return kernel(*[pool[name] for name in names])


def kernel_pool(header, msg, out, **extra):
    from qsgd_codec import cpu

    info = cpu.DTYPES[header.dtype]
    pool = dict(
        msg=msg,
        soff=header.scales_offset,
        toff=header.table_offset,
        coff=header.codes_offset,
        clen=header.header_length + header.body_length - header.codes_offset,
        n=header.n,
        d=header.bucket_size,
        s=header.levels,
        w=header.width,
        mant=info.mant,
        emin=info.emin,
        signbit=info.signbit,
        out=out,
    )
    pool.update(extra)
    return pool


def test_cpu_dense_kernel_offsets_past_2_to_the_32_elements():
    """The dense decode kernel at element 2^32 + k, w = 3 (fields cross bytes): the bit offset
    j*w is past 2^33, the byte offset past 2^31.  Message and output are sparse mappings, so
    only the pages holding these elements are ever touched."""
    from qsgd_codec.cpu import decode

    n, d, s, w = (1 << 32) + 64, 1 << 24, 3, 3
    nb = wire.num_buckets(n, d)
    clen = -(-n * w // 8)
    head = wire.pack_header(
        dtype="float16",
        scale="max",
        coding="dense",
        shape=(n,),
        bucket_size=d,
        levels=s,
        seed=0,
        body_length=4 * nb + clen,
        checksum=False,
    )
    header = wire.Header(
        1, 0, len(head), 0, "float16", "max", "dense", n, d, s, 0, 4 * nb + clen, (n,)
    )  # what parse_header gives for it
    msg = sparse_array(len(head) + 4 * nb + clen, np.uint8)
    msg[: len(head)] = np.frombuffer(head, np.uint8)
    msg[header.scales_offset + 4 * 256 : header.scales_offset + 4 * 257] = np.frombuffer(
        np.float32(6.0).tobytes(), np.uint8
    )  # bucket 256 starts at 2^32
    levels = np.array([(k % 7) - 3 for k in range(64)], dtype=np.int64)
    codes = ref.dense_pack(levels, w)  # 64 * 3 bits = 24 bytes
    start = header.codes_offset + (1 << 32) * w // 8  # element 2^32's first byte
    msg[start : start + len(codes)] = np.frombuffer(codes, np.uint8)
    msg.flags.writeable = False
    out = sparse_array(n, np.uint16)
    err, at = call_kernel(
        decode._dense_decode_chunk, **kernel_pool(header, msg, out, i0=1 << 32, i1=n)
    )
    assert err == 0, (err, at)
    got = out[1 << 32 :].view(np.float16).astype(np.float64)
    np.testing.assert_array_equal(got, levels * 2.0)  # r / s = 2
    assert not out[: 1 << 12].any() and not out[(1 << 32) - 4096 : 1 << 32].any()


def test_cpu_elias_kernel_offsets_past_2_to_the_32_elements():
    """The elias decode kernel on the buckets that start at element 2^32 and 2^32 + 2^16."""
    from qsgd_codec import cpu
    from qsgd_codec.cpu import decode

    d = 1 << 16
    n = (1 << 32) + d + 5
    nb = wire.num_buckets(n, d)
    targets = {(1 << 32) + 3: -7, (1 << 32) + d - 1: 5, n - 1: 1}
    scales = np.zeros(nb, "<f4")
    lengths = np.zeros(nb, "<u4")
    codes = []
    for b in (nb - 2, nb - 1):
        here = sorted(i for i in targets if b * d <= i < (b + 1) * d)
        bits, previous = "", -1
        for i in here:
            q = targets[i]
            bits += (
                ref.omega_bits(i - b * d - previous)
                + ("1" if q < 0 else "0")
                + ref.omega_bits(abs(q))
            )
            previous = i - b * d
        scales[b], lengths[b] = 7.0, len(bits)
        codes.append(ref.bits_to_bytes(bits))
    body = scales.tobytes() + lengths.tobytes() + b"".join(codes)
    head = wire.pack_header(
        dtype="float16",
        scale="max",
        coding="elias",
        shape=(n,),
        bucket_size=d,
        levels=7,
        seed=0,
        body_length=len(body),
        checksum=False,
    )
    header = wire.parse_header(head + body, max_elements=None)
    msg = cpu.message_array(head + body)
    out = sparse_array(n, np.uint16)
    out[(1 << 32) - 1] = 0x3C00  # the element before: untouched
    err, at = call_kernel(
        decode._elias_decode_chunk, **kernel_pool(header, msg, out, b0=nb - 2, b1=nb, off=0)
    )
    assert err == 0, (err, at)
    got = out[(1 << 32) - 1 :].view(np.float16)
    assert got[0] == 1.0
    for i, q in targets.items():
        assert got[i - (1 << 32) + 1] == q, i
    assert np.count_nonzero(got) == len(targets) + 1


@pytest.mark.large
def test_decode_past_2_to_the_31_elements():
    """A float16 elias message of 2^31 + 3 elements (4 GiB decoded): the non-zero elements
    at 2^31 - 1, 2^31 and the last index land exactly there."""
    n = (1 << 31) + 3
    d = 1 << 24
    nb = wire.num_buckets(n, d)
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
    head = wire.pack_header(
        dtype="float16",
        scale="max",
        coding="elias",
        shape=(n,),
        bucket_size=d,
        levels=7,
        seed=0,
        body_length=len(body),
    )
    message = head + body + wire.crc32(head + body).to_bytes(4, "little")
    out = qsgd_codec.decode(message, max_elements=n)
    assert out.shape == (n,)
    for i, q in targets.items():
        assert out[i] == q, i
    assert np.count_nonzero(out) == len(targets)


# ----------------------------------------------------------------------------- encoder side

X = np.linspace(-1, 1, 10, dtype=np.float32)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(scale=[]),
        dict(coding={}),
        dict(scale=b"max"),
        dict(coding=1),
        dict(scale="MAX"),
        dict(bits=np.int8(-128)),
        dict(bits=np.uint64(1 << 63)),
        dict(levels=np.uint64(2**64 - 1)),
        dict(levels=np.float64(7)),
        dict(levels=7.0),
        dict(bucket_size=2**100),
        dict(bucket_size=np.uint64(2**64 - 1)),
        dict(bucket_size=np.float32(8)),
        dict(seed=np.int64(-1)),
        dict(seed="1"),
        dict(bits=25, levels=(1 << 24) - 2),
    ],
)
def test_more_absurd_parameters_are_parameter_errors(kwargs):
    with pytest.raises(ParameterError) as info:
        qsgd_codec.encode(X, **kwargs)
    assert type(info.value) is ParameterError and str(info.value)


def test_numpy_integer_parameters_mean_the_same_as_ints():
    a = qsgd_codec.encode(X, bits=np.int8(4), bucket_size=np.uint32(4), seed=np.uint64(3))
    assert a == qsgd_codec.encode(X, bits=4, bucket_size=4, seed=3)
    assert qsgd_codec.encode(X, levels=np.int64(7)) == qsgd_codec.encode(X, bits=4)


@pytest.mark.parametrize(
    "array",
    [
        np.array(["2020-01-01"], dtype="datetime64[D]"),
        np.zeros(3, dtype=[("a", "f4")]),
        np.zeros(3, dtype=np.longdouble),
        np.zeros(3, dtype=np.uint16),
        np.zeros(3, dtype=np.complex128),
        np.zeros(3, dtype="timedelta64[s]"),
    ],
)
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
    x = (
        values.astype(np.float32).astype(ml_dtypes.bfloat16)
        if dtype == "bfloat16"
        else values.astype(dtype)
    )
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
    tiny = np.array([5e-324, -5e-324, 0.0])  # the scale rounds up to a float32
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
