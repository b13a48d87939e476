"""Loader for the conformance vectors in spec/test-vectors/v1/ (see its README)."""

import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent / "spec" / "test-vectors" / "v1"
BITS = {"float16": "<u2", "bfloat16": "<u2", "float32": "<u4", "float64": "<u8"}


def load_vectors(kind=None):
    """Parsed vector dicts, bytes fields decoded; ``kind`` filters ("valid", "invalid", ...)."""
    index = json.loads((ROOT / "index.json").read_text())
    vectors = []
    for entry in index["vectors"]:
        if kind is not None and entry["kind"] != kind:
            continue
        record = json.loads((ROOT / entry["file"]).read_text())
        record["file"] = entry["file"]
        record["message"] = bytes.fromhex(record["message_hex"])
        if "decoded_hex" in record:
            record["decoded_bits"] = np.frombuffer(bytes.fromhex(record["decoded_hex"]),
                                                   BITS[record["dtype"]])
        if "input_hex" in record:
            record["input"] = input_array(record)
        vectors.append(record)
    return vectors


def input_array(record):
    """The vector's input as an array of its dtype (bfloat16 needs ml_dtypes)."""
    raw = bytes.fromhex(record["input_hex"])
    dtype = record["dtype"]
    if dtype == "bfloat16":
        import ml_dtypes
        arr = np.frombuffer(raw, "<u2").view(ml_dtypes.bfloat16)
    else:
        arr = np.frombuffer(raw, np.dtype(dtype).newbyteorder("<")).astype(dtype)
    return arr.reshape(record["shape"])


def vector_id(record):
    return record["name"]
