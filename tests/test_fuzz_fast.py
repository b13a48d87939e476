"""A fast, hypothesis-driven mutation fuzz of every in-process decoder path (normal suite).

The long campaigns live in fuzz/ (see fuzz/README.md); this file runs a few hundred
structure-aware mutations per path in seconds, with shrinking, so a regression shows up in
the ordinary test run.  Judged by tests/mutation.py's oracle, like the exhaustive tests.
"""

import struct

import mutation as M
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from qsgd_codec import wire

LIMIT = 1 << 20
MESSAGES = [m for _, m in M.small_messages()]
PATHS = ["reference", "api", "api_out"]
SETTINGS = settings(
    deadline=None, max_examples=250, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


def check(data):
    reference = M.run_decoder(M.decode_reference, data, LIMIT)
    for path in PATHS:
        outcome = M.run_decoder(M.PATHS[path], data, LIMIT)
        why = M.judge(data, outcome, LIMIT, reference)
        assert why is None, f"{path}: {why}\nmessage: {bytes(data).hex()}"
    return reference


@settings(SETTINGS, max_examples=600)
@given(
    message=st.sampled_from(MESSAGES),
    rnd=st.randoms(use_true_random=False),
    rounds=st.integers(1, 3),
)
def test_structured_mutations(message, rnd, rounds):
    data = message
    for _ in range(rounds):
        data = M.mutate(data, rnd)
    check(data)


@SETTINGS
@given(
    message=st.sampled_from(MESSAGES),
    offset=st.integers(0, 1 << 16),
    value=st.integers(0, (1 << 64) - 1),
    size=st.sampled_from([1, 2, 4, 8]),
    fix_crc=st.booleans(),
)
def test_one_field_overwritten_anywhere(message, offset, value, size, fix_crc):
    """A little-endian integer of any width written at any offset, CRC optionally fixed."""
    buf = bytearray(message)
    offset %= max(1, len(buf) - size + 1)
    if offset + size <= len(buf):
        struct.pack_into(
            "<" + {1: "B", 2: "H", 4: "I", 8: "Q"}[size],
            buf,
            offset,
            value & ((1 << (8 * size)) - 1),
        )
    data = M.refresh_crc(buf) if fix_crc else bytes(buf)
    check(data)


@SETTINGS
@given(tail=st.binary(max_size=200), major=st.sampled_from([1, 1, 1, 2]), fix_crc=st.booleans())
def test_arbitrary_bytes_after_the_magic(tail, major, fix_crc):
    data = wire.MAGIC + bytes([major]) + tail
    check(M.refresh_crc(data) if fix_crc else data)


@SETTINGS
@given(data=st.binary(max_size=120))
def test_arbitrary_bytes(data):
    outcome = check(data)
    assert not outcome.accepted or data.startswith(wire.MAGIC)


@pytest.mark.parametrize("path", PATHS)
def test_the_oracle_sees_a_deliberately_lenient_decoder(path, monkeypatch):
    """The check above can fail: a decoder that ignores non-zero elias padding is caught."""
    message = next(m for n, m in M.small_messages(checksum=False) if n.startswith("elias_b4"))
    header = wire.parse_header(message)
    lengths, offsets = wire.elias_table(message, header)
    b = next(i for i in range(header.num_buckets) if lengths[i] % 8)
    buf = bytearray(message)
    buf[header.codes_offset + int(offsets[b + 1]) - 1] |= 1  # a padding bit of bucket b
    assert M.run_decoder(M.PATHS[path], bytes(buf), LIMIT).error == "CorruptDataError"
    lenient = M.Outcome(None, "float32", header.shape, M.decode_reference(message, LIMIT).bits)
    assert "wrong acceptance" in M.judge(bytes(buf), lenient, LIMIT)
