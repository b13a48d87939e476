"""Generate the QSGD wire format 1.0 conformance vectors (deterministically).

    python spec/test-vectors/generate.py            # rewrite spec/test-vectors/v1/
    python spec/test-vectors/generate.py --check    # fail if the files on disk differ

Every valid vector is produced by qsgd_codec.reference (the oracle); every invalid vector is a
valid message with exactly one defect and, where the defect is not in the checksum itself, a
recomputed CRC-32, so a decoder must reach the check the vector is about.
"""

import argparse
import json
import struct
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from qsgd_codec import reference as ref, wire  # noqa: E402

sys.path.insert(0, str(HERE))
import examples  # noqa: E402

OUT = HERE / "v1"
SPEC = HERE.parent / "wire-format.md"
SPEC_KEY = "../../wire-format.md"


def target_path(path):
    return SPEC if path == SPEC_KEY else OUT / path


def np_dtype(name):
    if name == "bfloat16":
        return np.dtype(np.uint16)  # raw bit patterns; see make_input
    return np.dtype(name)


def make_input(dtype, values):
    """Input array of ``dtype`` from float64 ``values``; bfloat16 by truncating float32 bits."""
    values = np.asarray(values, dtype=np.float64)
    if dtype == "bfloat16":
        bits = (values.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
        return bits
    return values.astype(dtype)


def encode_input(arr, dtype, params):
    """Run the oracle on ``arr``; bfloat16 inputs are uint16 bit patterns."""
    if dtype == "bfloat16":
        import ml_dtypes

        arr = arr.view(ml_dtypes.bfloat16)
    return ref.encode_array(arr, params)


def valid_cases():
    rng = np.random.default_rng(20261123)

    def gauss(n, scale=1.0):
        return rng.standard_normal(n) * scale

    cases = []

    def add(name, description, dtype, values, shape=None, **params):
        values = np.asarray(values, dtype=np.float64)
        shape = tuple(shape) if shape is not None else values.shape
        p = dict(
            levels=None,
            bits=None,
            bucket_size=None,
            scale=None,
            coding=None,
            seed=None,
            checksum=True,
        )
        p.update(params)
        cases.append((name, description, dtype, values.reshape(shape), wire.encode_params(**p)))

    add(
        "dense_f32_b4_max",
        "dense, bits=4 (s=7), max scaling, d=8 not dividing n=20",
        "float32",
        gauss(20),
        bits=4,
        bucket_size=8,
        scale="max",
        seed=1,
    )
    add(
        "dense_f32_b2_max",
        "dense ternary, bits=2 (s=1), max scaling, d=16, n=37",
        "float32",
        gauss(37),
        bits=2,
        bucket_size=16,
        scale="max",
        seed=2,
    )
    add(
        "dense_f32_b8_l2",
        "dense, bits=8 (s=127), L2 scaling, d=64, n=100",
        "float32",
        gauss(100),
        bits=8,
        bucket_size=64,
        scale="l2",
        seed=3,
    )
    add(
        "dense_f64_sqrtd_l2",
        "dense, s=sqrt(d)=8 (width 5, fields cross bytes), L2, float64",
        "float64",
        gauss(200, 1e-3),
        levels=8,
        bucket_size=64,
        scale="l2",
        seed=4,
    )
    add(
        "dense_f16_b4_max",
        "dense, float16 input, bits=4, max scaling",
        "float16",
        gauss(50, 10.0),
        bits=4,
        bucket_size=16,
        scale="max",
        seed=5,
    )
    add(
        "dense_bf16_b8_max",
        "dense, bfloat16 input, bits=8, max scaling",
        "bfloat16",
        gauss(40, 3.0),
        bits=8,
        bucket_size=32,
        scale="max",
        seed=6,
    )
    add(
        "dense_f32_b3_max",
        "dense, bits=3 (s=3), width 3, fields cross bytes",
        "float32",
        gauss(29),
        bits=3,
        bucket_size=10,
        scale="max",
        seed=7,
    )
    add(
        "dense_f32_s2_l2",
        "dense, levels=2 (width 3), L2 scaling",
        "float32",
        gauss(24),
        levels=2,
        bucket_size=12,
        scale="l2",
        seed=8,
    )
    add(
        "dense_f32_large_s",
        "dense, levels=2^24-1 (width 25), max scaling",
        "float32",
        gauss(9),
        levels=(1 << 24) - 1,
        bucket_size=4,
        scale="max",
        seed=9,
    )
    add(
        "dense_f32_zero_bucket",
        "dense, a bucket of zeros (scale +0.0) between non-zero ones",
        "float32",
        np.concatenate([gauss(8), np.zeros(8), -np.abs(gauss(5))]),
        bits=4,
        bucket_size=8,
        seed=10,
    )
    add(
        "dense_f32_n0",
        "dense, empty array (n=0): no buckets, empty body",
        "float32",
        np.zeros(0),
        bits=4,
    )
    add(
        "dense_f32_empty_2d",
        "dense, shape (3, 0): n=0 with two dimensions",
        "float32",
        np.zeros(0),
        shape=(3, 0),
        bits=8,
    )
    add(
        "dense_f32_scalar",
        "dense, 0-d array (ndim=0, n=1)",
        "float32",
        np.array(-2.5),
        shape=(),
        bits=4,
        seed=11,
    )
    add("dense_f32_n1", "dense, one element, shape (1,)", "float32", [0.375], bits=2, seed=12)
    add(
        "dense_f32_3d",
        "dense, shape (2, 3, 4), bucket spans rows",
        "float32",
        gauss(24),
        shape=(2, 3, 4),
        bits=4,
        bucket_size=5,
        seed=13,
    )
    add(
        "dense_f32_nochecksum",
        "dense without the CRC-32 trailer (flags=0)",
        "float32",
        gauss(16),
        bits=4,
        bucket_size=8,
        seed=14,
        checksum=False,
    )
    add(
        "dense_f32_maxseed",
        "dense, seed 2^64-1",
        "float32",
        gauss(16),
        bits=4,
        bucket_size=16,
        seed=(1 << 64) - 1,
    )
    add(
        "dense_f64_subnormal_scale",
        "dense, float64 values so small the float32 scale is subnormal (rounded up)",
        "float64",
        gauss(8, 1e-42),
        bits=4,
        bucket_size=8,
        seed=15,
    )
    add(
        "dense_f16_subnormal",
        "dense, float16 values near the subnormal range",
        "float16",
        gauss(16, 1e-5),
        bits=8,
        bucket_size=16,
        seed=16,
    )
    add(
        "dense_f32_d1",
        "dense, bucket_size=1: every element its own scale",
        "float32",
        gauss(6),
        bits=2,
        bucket_size=1,
        seed=17,
    )

    add(
        "elias_f32_l2_s1",
        "elias, s=1, L2 scaling, d=128, n=300 (sparse regime)",
        "float32",
        gauss(300),
        levels=1,
        bucket_size=128,
        scale="l2",
        coding="elias",
        seed=21,
    )
    add(
        "elias_f32_l2_sqrtd",
        "elias, s=sqrt(d)=8, L2 scaling, d=64, n=130",
        "float32",
        gauss(130),
        levels=8,
        bucket_size=64,
        scale="l2",
        coding="elias",
        seed=22,
    )
    add(
        "elias_f32_max_b8",
        "elias, bits=8 (s=127), max scaling",
        "float32",
        gauss(70),
        bits=8,
        bucket_size=32,
        scale="max",
        coding="elias",
        seed=23,
    )
    add(
        "elias_f64_b4_l2",
        "elias, float64 input, bits=4, L2",
        "float64",
        gauss(33, 100.0),
        bits=4,
        bucket_size=16,
        scale="l2",
        coding="elias",
        seed=24,
    )
    add(
        "elias_f16_b2_max",
        "elias, float16 input, ternary, max",
        "float16",
        gauss(40),
        bits=2,
        bucket_size=20,
        coding="elias",
        seed=25,
    )
    add(
        "elias_bf16_b4_max",
        "elias, bfloat16 input, bits=4, max",
        "bfloat16",
        gauss(40),
        bits=4,
        bucket_size=16,
        coding="elias",
        seed=26,
    )
    add(
        "elias_f32_zero_buckets",
        "elias, zero buckets (L_b = 0, no code bytes) around a non-zero one",
        "float32",
        np.concatenate([np.zeros(16), gauss(16), np.zeros(10)]),
        bits=4,
        bucket_size=16,
        coding="elias",
        seed=27,
    )
    add("elias_f32_n0", "elias, empty array", "float32", np.zeros(0), coding="elias")
    add(
        "elias_f32_scalar",
        "elias, 0-d array",
        "float32",
        np.array(1.0),
        shape=(),
        coding="elias",
        bits=4,
    )
    one_hot = np.zeros(9)
    one_hot[4] = -3.0
    add(
        "elias_f32_longest_level",
        "elias, levels=2^24-1 and a level of s: omega codeword of 35 bits",
        "float32",
        one_hot,
        levels=(1 << 24) - 1,
        bucket_size=9,
        coding="elias",
        seed=28,
    )
    far = np.zeros(1 << 16)
    far[-1] = 0.5
    add(
        "elias_f16_longest_gap",
        "elias, d=65536, one non-zero at the last position: gap 65536 (omega codeword of 28 bits)",
        "float16",
        far,
        levels=1,
        bucket_size=1 << 16,
        coding="elias",
        seed=29,
    )
    add(
        "elias_f32_nochecksum",
        "elias without the CRC-32 trailer",
        "float32",
        gauss(20),
        bits=4,
        bucket_size=8,
        coding="elias",
        seed=30,
        checksum=False,
    )
    add(
        "elias_f32_2d_l2_s2",
        "elias, shape (4, 5), s=2, L2",
        "float32",
        gauss(20),
        shape=(4, 5),
        levels=2,
        bucket_size=7,
        scale="l2",
        coding="elias",
        seed=31,
    )
    return cases


def patch(message, offset, fmt_code, value, fix_crc=True):
    """Return message with struct field at offset replaced, CRC recomputed if present."""
    buf = bytearray(message)
    struct.pack_into(fmt_code, buf, offset, value)
    return refresh_crc(buf) if fix_crc else bytes(buf)


def refresh_crc(buf):
    buf = bytearray(buf)
    flags = struct.unpack_from("<H", buf, 8)[0]
    if flags & wire.FLAG_CHECKSUM:
        buf[-4:] = wire.crc32(bytes(buf[:-4])).to_bytes(4, "little")
    return bytes(buf)


def invalid_cases(valid):
    """(name, description, message, error, max_elements) for each way a message is wrong."""
    by_name = {name: message for name, message in valid}
    dense = by_name["dense_f32_b4_max"]  # n=20, d=8, s=7, w=4, 3 buckets, ndim 1
    elias = by_name["elias_f32_max_b8"]  # n=70, d=32, s=127
    h = wire.parse_header(dense)
    he = wire.parse_header(elias)
    cases = []

    def add(name, description, message, error, max_elements=None):
        cases.append((name, description, bytes(message), error, max_elements))

    add("bad_magic", "first byte 0x88 instead of 0x89", b"\x88" + dense[1:], "BadMagicError")
    add(
        "text_magic",
        "the ASCII text 'QSGD...' is not a message",
        b"QSGD" + dense[4:],
        "BadMagicError",
    )
    add("empty", "zero bytes (a prefix of the magic: truncated)", b"", "TruncatedError")
    add("truncated_magic", "only the first two magic bytes", dense[:2], "TruncatedError")
    add("truncated_header", "ends inside the fixed header", dense[:30], "TruncatedError")
    add("truncated_shape", "ends inside the shape", dense[:52], "TruncatedError")
    add("truncated_body", "last 5 bytes missing", dense[:-5], "TruncatedError")
    add("truncated_crc", "the CRC trailer cut to 2 bytes", dense[:-2], "TruncatedError")
    add("trailing_bytes", "one extra byte after the CRC", dense + b"\x00", "TrailingDataError")
    bad_crc = bytearray(dense)
    bad_crc[-1] ^= 0x01
    add("checksum_mismatch", "the CRC-32 trailer's last bit flipped", bad_crc, "ChecksumError")
    flipped = bytearray(dense)
    flipped[h.codes_offset] ^= 0x10
    add("payload_bit_flip", "one code bit flipped, CRC not updated", flipped, "ChecksumError")
    add("reserved_flag", "flag bit 1 set", patch(dense, 8, "<H", 0x0003), "ReservedBitsError")
    add("reserved_flag_high", "flag bit 15 set", patch(dense, 8, "<H", 0x8001), "ReservedBitsError")
    add(
        "reserved_field",
        "reserved u16 at offset 14 non-zero",
        patch(dense, 14, "<H", 1),
        "ReservedBitsError",
    )
    add("unknown_dtype", "dtype code 5", patch(dense, 10, "<B", 5), "UnsupportedError")
    add("dtype_zero", "dtype code 0", patch(dense, 10, "<B", 0), "UnsupportedError")
    add("unknown_scale", "scale kind code 2", patch(dense, 11, "<B", 2), "UnsupportedError")
    add(
        "unknown_coding",
        "coding code 2 (a later minor version's coding)",
        patch(dense, 12, "<B", 2),
        "UnsupportedError",
    )
    add("bucket_size_zero", "bucket_size 0", patch(dense, 24, "<I", 0), "CorruptDataError")
    add(
        "bucket_size_too_large",
        "bucket_size 2^24 + 1",
        patch(dense, 24, "<I", (1 << 24) + 1),
        "CorruptDataError",
    )
    add("levels_zero", "levels 0", patch(dense, 28, "<I", 0), "CorruptDataError")
    add("levels_too_large", "levels 2^24", patch(dense, 28, "<I", 1 << 24), "CorruptDataError")
    add("ndim_too_large", "ndim 65", patch(dense, 13, "<B", 65), "CorruptDataError")
    add(
        "header_length_short",
        "header_length 48 with ndim 1",
        patch(dense, 6, "<H", 48),
        "LengthError",
    )
    add(
        "header_length_past_end",
        "header_length larger than the message",
        patch(dense, 6, "<H", 0xFFF8),
        "TruncatedError",
    )
    add("shape_mismatch", "shape (21,) but n=20", patch(dense, 48, "<Q", 21), "LengthError")
    add("n_mismatch", "n=19 with shape (20,)", patch(dense, 16, "<Q", 19), "LengthError")
    add(
        "body_length_mismatch",
        "dense body_length one more than width and n imply",
        patch(dense, 40, "<Q", h.body_length + 1),
        "LengthError",
    )
    huge = patch(patch(dense, 16, "<Q", 1 << 40), 48, "<Q", 1 << 40)
    add(
        "over_limit",
        "declares 2^40 elements; the limit is the decoder default (2^28)",
        huge,
        "LimitError",
    )
    add("over_caller_limit", "20 elements with a caller limit of 10", dense, "LimitError", 10)

    def scale_patch(message, header, b, bits32):
        return patch(message, header.scales_offset + 4 * b, "<I", bits32)

    add(
        "scale_negative",
        "bucket 1 scale -1.0",
        scale_patch(dense, h, 1, 0xBF800000),
        "CorruptDataError",
    )
    add(
        "scale_negative_zero",
        "bucket 0 scale -0.0",
        scale_patch(dense, h, 0, 0x80000000),
        "CorruptDataError",
    )
    add("scale_nan", "bucket 2 scale NaN", scale_patch(dense, h, 2, 0x7FC00000), "CorruptDataError")
    add(
        "scale_inf", "bucket 0 scale +Inf", scale_patch(dense, h, 0, 0x7F800000), "CorruptDataError"
    )
    f16 = by_name["dense_f16_b4_max"]
    add(
        "scale_above_float16_max",
        "float16 message with scale 65536 > 65504",
        scale_patch(f16, wire.parse_header(f16), 0, 0x47800000),
        "CorruptDataError",
    )

    def code_patch(message, header, byte_index, value):
        buf = bytearray(message)
        buf[header.codes_offset + byte_index] = value
        return refresh_crc(buf)

    add(
        "dense_invalid_field",
        "a 4-bit field holds -8 (0b1000), outside -7..7",
        code_patch(dense, h, 0, (dense[h.codes_offset] & 0xF0) | 0x8),
        "CorruptDataError",
    )
    zero = by_name["dense_f32_zero_bucket"]  # bucket 1 (elements 8..15) has scale 0
    hz = wire.parse_header(zero)
    add(
        "dense_level_in_zero_bucket",
        "a non-zero level in a bucket whose scale is 0",
        code_patch(zero, hz, 4, 0x01),
        "CorruptDataError",
    )
    b3 = by_name["dense_f32_b3_max"]  # n=29, w=3: 87 bits, 1 padding bit
    hb3 = wire.parse_header(b3)
    last = hb3.codes_offset + (hb3.body_length - 4 * hb3.num_buckets) - 1
    buf = bytearray(b3)
    buf[last] |= 0x80
    add(
        "dense_nonzero_padding",
        "the padding bit after the last 3-bit field set",
        refresh_crc(buf),
        "CorruptDataError",
    )

    # elias: build bucket codes by hand so each has exactly one defect
    def elias_message(bucket_codes, m=8, s=7, scales=None, dtype="float32"):
        """One- or multi-bucket elias message from (bit string, declared length) pairs."""
        nb = len(bucket_codes)
        n = m * nb
        scales = scales if scales is not None else [1.0] * nb
        codes = b"".join(ref.bits_to_bytes(bits) for bits, _ in bucket_codes)
        body = (
            np.array(scales, "<f4").tobytes()
            + np.array([length for _, length in bucket_codes], "<u4").tobytes()
            + codes
        )
        header = wire.pack_header(
            dtype=dtype,
            scale="max",
            coding="elias",
            shape=(n,),
            bucket_size=m,
            levels=s,
            seed=0,
            body_length=len(body),
        )
        message = header + body
        return message + wire.crc32(message).to_bytes(4, "little")

    om = ref.omega_bits
    ok_entry = om(3) + "0" + om(2)  # position 2, +2
    add(
        "elias_valid_handmade",
        "(control, valid) a hand-built bucket",
        elias_message([(ok_entry, len(ok_entry))]),
        None,
    )
    gap_past = om(9) + "0" + om(1)
    add(
        "elias_gap_past_end",
        "a gap of 9 in a bucket of 8 elements",
        elias_message([(gap_past, len(gap_past))]),
        "CorruptDataError",
    )
    gap_second = om(5) + "0" + om(1) + om(4) + "1" + om(1)
    add(
        "elias_second_gap_past_end",
        "second gap reaches position 8 of a bucket of 8",
        elias_message([(gap_second, len(gap_second))]),
        "CorruptDataError",
    )
    level_high = om(1) + "0" + om(8)
    add(
        "elias_level_above_s",
        "level 8 with s=7",
        elias_message([(level_high, len(level_high))]),
        "CorruptDataError",
    )
    add(
        "elias_length_ends_inside_code",
        "declared length one bit short of the entry",
        elias_message([(ok_entry, len(ok_entry) - 1)]),
        "CorruptDataError",
    )
    add(
        "elias_length_too_long",
        "declared length 8 bits past the entry (reads zero padding as codes)",
        elias_message([(ok_entry + "0" * 8, len(ok_entry) + 8)]),
        "CorruptDataError",
    )
    add(
        "elias_nonzero_padding",
        "a 1 bit in the padding after the entry",
        elias_message([(ok_entry + "1", len(ok_entry))]),
        "CorruptDataError",
    )
    overlong = "1" + "1" * 40
    add(
        "elias_overlong_omega",
        "an omega code whose groups grow past 25 bits",
        elias_message([(overlong + "0" * 7, 48)]),
        "CorruptDataError",
    )
    add(
        "elias_bits_in_zero_bucket",
        "a bucket with scale 0 but code bits",
        elias_message([(ok_entry, len(ok_entry))], scales=[0.0]),
        "CorruptDataError",
    )
    add(
        "elias_length_over_bound",
        "L_b = 73*m + 8 bits, more than m entries can use",
        elias_message([("0" * (73 * 8 + 8), 73 * 8 + 8)]),
        "CorruptDataError",
    )
    buf = bytearray(elias)
    struct.pack_into(
        "<I", buf, he.table_offset, struct.unpack_from("<I", elias, he.table_offset)[0] + 8
    )
    add(
        "elias_table_sum_mismatch",
        "bucket 0's bit length 8 more than its bytes",
        refresh_crc(buf),
        "LengthError",
    )
    add(
        "elias_body_too_short",
        "body_length less than 8*nb",
        patch(elias, 40, "<Q", 8 * he.num_buckets - 1),
        "LengthError",
    )

    # found by fuzz/fuzz_decode.py (the Numba path): n = 0 with an extent so large that no
    # array of the shape can exist; the decoders raised NumPy's ValueError from reshape
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

    add(
        "shape_unrepresentable",
        "n=0 with shape (2^61, 0) float32: the non-zero extents "
        "times 4 bytes reach 2^63, so no array of that shape can be made",
        empty_message((1 << 61, 0)),
        "LimitError",
    )
    add(
        "shape_extent_over_2_63",
        "n=0 with shape (0, 2^64-1): an extent no signed 64-bit size can hold",
        empty_message((0, (1 << 64) - 1), "float16"),
        "LimitError",
    )
    return cases


def future_cases(valid):
    by_name = {name: message for name, message in valid}
    dense = by_name["dense_f32_b4_max"]
    major2 = patch(dense, 4, "<B", 2)
    cases = [
        ("future", "major_2", "format 2.0: a 1.x reader must refuse it", major2, "VersionError"),
        ("future", "major_255", "format 255.0", patch(dense, 4, "<B", 255), "VersionError"),
        (
            "future",
            "minor_1_unknown_coding",
            "format 1.1 using coding 2, unknown to 1.0: refuse",
            patch(patch(dense, 5, "<B", 1), 12, "<B", 2),
            "UnsupportedError",
        ),
    ]
    # a 1.3 message with 8 more header bytes: a 1.0 reader skips them and decodes it
    h = wire.parse_header(dense)
    buf = bytearray(dense[: h.header_length]) + b"\xab" * 8 + bytearray(dense[h.header_length : -4])
    struct.pack_into("<B", buf, 5, 3)
    struct.pack_into("<H", buf, 6, h.header_length + 8)
    buf += wire.crc32(bytes(buf)).to_bytes(4, "little")
    cases.append(
        (
            "future_ok",
            "minor_3_extra_header",
            "format 1.3 with 8 unknown header bytes: a 1.0 reader ignores them and decodes",
            bytes(buf),
            None,
        )
    )
    return cases


def raw_hex(arr):
    return np.ascontiguousarray(arr).reshape(-1).astype(arr.dtype.newbyteorder("<")).tobytes().hex()


def build():
    files = {}
    index = []
    valid_messages = []
    for name, description, dtype, values, params in valid_cases():
        arr = make_input(dtype, values)
        message = encode_input(arr, dtype, params)
        header, bits = ref.decode_bits(message)
        valid_messages.append((name, message))
        record = {
            "name": name,
            "kind": "valid",
            "description": description,
            "dtype": dtype,
            "shape": list(arr.shape),
            "input_hex": raw_hex(arr),
            "params": {
                "levels": params.levels,
                "bucket_size": params.bucket_size,
                "scale": params.scale,
                "coding": params.coding,
                "seed": params.seed,
                "checksum": params.checksum,
            },
            "message_hex": message.hex(),
            "decoded_hex": raw_hex(bits),
            "roundtrip": True,
        }
        files[f"valid/{name}.json"] = record
        index.append({"file": f"valid/{name}.json", "kind": "valid", "description": description})
    for name, description, message, error, max_elements in invalid_cases(valid_messages):
        kind = "invalid" if error else "valid_decode_only"
        record = {
            "name": name,
            "kind": kind,
            "description": description,
            "message_hex": message.hex(),
            "error": error,
            "max_elements": max_elements,
        }
        if error is None:
            header, bits = ref.decode_bits(message)
            record.update(
                dtype=header.dtype,
                shape=list(header.shape),
                decoded_hex=raw_hex(bits),
                roundtrip=False,
            )
            folder = "valid"
        else:
            folder = "invalid"
        files[f"{folder}/{name}.json"] = record
        index.append({"file": f"{folder}/{name}.json", "kind": kind, "description": description})
    for kind, name, description, message, error in future_cases(valid_messages):
        record = {
            "name": name,
            "kind": kind,
            "description": description,
            "message_hex": message.hex(),
            "error": error,
            "max_elements": None,
        }
        if error is None:
            header, bits = ref.decode_bits(message)
            record.update(
                dtype=header.dtype,
                shape=list(header.shape),
                decoded_hex=raw_hex(bits),
                roundtrip=False,
            )
        files[f"future/{name}.json"] = record
        index.append({"file": f"future/{name}.json", "kind": kind, "description": description})
    files["index.json"] = {
        "format_version": "1.0",
        "generator": "spec/test-vectors/generate.py",
        "vectors": index,
    }
    return {path: json.dumps(record, indent=1) + "\n" for path, record in files.items()}


def readme_table(files):
    index = json.loads(files["index.json"])
    rows = ["| file | kind | expected | what it exercises |", "|---|---|---|---|"]
    for entry in index["vectors"]:
        record = json.loads(files[entry["file"]])
        expected = record.get("error") or "decodes"
        rows.append(
            f"| `{entry['file']}` | {entry['kind']} | {expected} | {entry['description']} |"
        )
    return "\n".join(rows)


README = """# QSGD wire format 1.0 conformance vectors

Generated by `python spec/test-vectors/generate.py` from the reference implementation;
`--check` verifies the files are current. Test your implementation with
`python -m qsgd_codec verify` (see docs/integrations.md for an external decoder).

File kinds:
- `valid`: `input_hex` (raw little-endian input values, C order), `dtype`, `shape`, `params`,
  `message_hex`, `decoded_hex` (raw little-endian decoded values). `roundtrip: true` means an
  encoder given the input and params MUST produce `message_hex` exactly, and a decoder MUST
  produce `decoded_hex` exactly.
- `valid_decode_only` / `future_ok`: a decoder MUST accept `message_hex` and produce
  `decoded_hex`; an encoder need not produce these bytes.
- `invalid`: a decoder MUST reject `message_hex` with the named error class (and, when
  `max_elements` is given, with that limit). Each has one defect, with a valid CRC unless the
  defect is the CRC.
- `future`: messages from a later format version a 1.0 reader MUST refuse with the named error.

bfloat16 values are their 16-bit patterns. Floats are always bit patterns, never decimals.

TABLE
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="verify instead of writing")
    args = parser.parse_args()
    files = build()
    files["README.md"] = README.replace("TABLE", readme_table(files))
    files[SPEC_KEY] = examples.render(SPEC.read_text())
    if args.check:
        stale = [
            p
            for p, text in files.items()
            if not target_path(p).exists() or target_path(p).read_text() != text
        ]
        if stale:
            print("stale or missing vectors:", *stale, sep="\n  ")
            return 1
        print(f"{len(files)} vector files up to date")
        return 0
    for path, text in files.items():
        target = target_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    print(f"wrote {len(files)} files to {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
