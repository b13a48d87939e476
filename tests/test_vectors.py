"""Conformance vectors against the reference implementation and the public API."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import qsgd_codec
from qsgd_codec import reference as ref, wire
from qsgd_codec.conformance import load_vectors, vector_id
from qsgd_codec.errors import QSGDError, error_class

VALID = load_vectors(kind="valid", arrays=True)
DECODE_ONLY = load_vectors(kind=("valid_decode_only", "future_ok"), arrays=True)
INVALID = load_vectors(kind=("invalid", "future"), arrays=True)
ROOT = Path(__file__).resolve().parent.parent


def params_of(record):
    return wire.EncodeParams(**record["params"])


def test_vector_files_are_current():
    result = subprocess.run(
        [sys.executable, "spec/test-vectors/generate.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_vector_set_covers_the_spec():
    codings = {v["params"]["coding"] for v in VALID}
    scales = {v["params"]["scale"] for v in VALID}
    dtypes = {v["dtype"] for v in VALID}
    levels = {v["params"]["levels"] for v in VALID}
    assert codings == {"dense", "elias"} and scales == {"l2", "max"}
    assert dtypes == {"float16", "bfloat16", "float32", "float64"}
    assert {1, 2, 7, 127, (1 << 24) - 1} <= levels
    assert any(v["params"]["levels"] ** 2 == v["params"]["bucket_size"] for v in VALID)
    sizes = {int(np.prod(v["shape"])) for v in VALID}
    assert {0, 1} <= sizes
    assert any(int(np.prod(v["shape"])) % v["params"]["bucket_size"] for v in VALID)
    errors = {v["error"] for v in INVALID}
    spec_errors = {
        "BadMagicError",
        "VersionError",
        "ReservedBitsError",
        "UnsupportedError",
        "TruncatedError",
        "TrailingDataError",
        "LengthError",
        "ChecksumError",
        "CorruptDataError",
        "LimitError",
    }
    assert spec_errors <= errors


@pytest.mark.parametrize("record", VALID, ids=vector_id)
def test_reference_encodes_valid_vector_exactly(record):
    assert ref.encode_array(record["input"], params_of(record)) == record["message"]


@pytest.mark.parametrize("record", VALID + DECODE_ONLY, ids=vector_id)
def test_reference_decodes_valid_vector_exactly(record):
    header, bits = ref.decode_bits(record["message"])
    assert list(header.shape) == record["shape"]
    np.testing.assert_array_equal(bits, record["decoded_bits"])


@pytest.mark.parametrize("record", VALID, ids=vector_id)
def test_api_roundtrips_valid_vector(record):
    p = record["params"]
    data = qsgd_codec.encode(
        record["input"],
        levels=p["levels"],
        bucket_size=p["bucket_size"],
        scale=p["scale"],
        coding=p["coding"],
        seed=p["seed"],
        checksum=p["checksum"],
    )
    assert bytes(data) == record["message"]
    out = qsgd_codec.decode(record["message"])
    assert out.dtype == record["input"].dtype and list(out.shape) == record["shape"]
    np.testing.assert_array_equal(
        np.ascontiguousarray(out).reshape(-1).view(record["decoded_bits"].dtype),
        record["decoded_bits"],
    )


@pytest.mark.parametrize("record", INVALID, ids=vector_id)
def test_reference_rejects_invalid_vector(record):
    expected = error_class(record["error"])
    limit = record["max_elements"] or wire.DEFAULT_MAX_ELEMENTS
    with pytest.raises(expected) as info:
        ref.decode_bits(record["message"], max_elements=limit)
    assert type(info.value) is expected, f"{type(info.value).__name__}: {info.value}"
    assert str(info.value)


@pytest.mark.parametrize("record", INVALID, ids=vector_id)
def test_api_rejects_invalid_vector(record):
    expected = error_class(record["error"])
    with pytest.raises(expected) as info:
        qsgd_codec.decode(record["message"], max_elements=record["max_elements"])
    assert type(info.value) is expected
    assert isinstance(info.value, QSGDError) and isinstance(info.value, ValueError)
