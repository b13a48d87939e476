"""The conformance vectors (spec/test-vectors/v1): finding, loading and checking them.

The one loader of the vectors: the command line's ``qsgd verify``, the test suite and the
fuzz harness all read them through :func:`load_vectors`.  :func:`check_internal` checks one
vector against this package, :func:`check_external` against another implementation through
the stdin/stdout protocol of :func:`run_external`.
"""

import json
import os
import subprocess
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np

from . import api, wire
from .errors import QSGDError, error_class

#: environment variable carrying the element limit to an external decoder (and read by
#: ``qsgd decode`` as its default --max-elements)
MAX_ELEMENTS_ENV = "QSGD_MAX_ELEMENTS"
#: environment variable naming the conformance vectors folder
VECTORS_ENV = "QSGD_VECTORS"
#: the little-endian raw-bits dtype of each format dtype (decoded_hex, the external protocol)
BITS_DTYPES = {"float16": "<u2", "bfloat16": "<u2", "float32": "<u4", "float64": "<u8"}


class VectorsError(Exception):
    """The vectors cannot be found or read, or an external decoder cannot be run."""


def raw_values(arr: np.ndarray) -> bytes:
    """Raw little-endian bytes of decoded values (decoded_hex, the external protocol's stdout)."""
    name = wire.dtype_name(arr.dtype)
    return (
        np.ascontiguousarray(arr)
        .view(wire.bits_dtype(name))
        .astype(BITS_DTYPES[name], copy=False)
        .tobytes()
    )


def find_vectors(explicit: Optional[str] = None) -> Path:
    """The folder holding ``index.json`` of the conformance vectors, version 1.

    Looked up in order: ``explicit`` (``--vectors``), ``$QSGD_VECTORS``, vectors shipped
    inside the installed package (``qsgd_codec/test-vectors/v1``), and the source
    checkout's ``spec/test-vectors/v1`` next to the package.  A folder holding ``v1/`` is
    accepted too.
    """
    candidates = []
    if explicit:
        candidates.append((Path(explicit), "--vectors"))
    elif os.environ.get(VECTORS_ENV):
        candidates.append((Path(os.environ[VECTORS_ENV]), f"${VECTORS_ENV}"))
    else:
        here = Path(__file__).resolve().parent
        candidates.append((here / "test-vectors" / "v1", "package data"))
        candidates.append((here.parent / "spec" / "test-vectors" / "v1", "source checkout"))
    for path, _ in candidates:
        for root in (path, path / "v1"):
            if (root / "index.json").is_file():
                return root
    if explicit or os.environ.get(VECTORS_ENV):
        path, origin = candidates[0]
        raise VectorsError(f"{path} (from {origin}) holds no index.json of conformance vectors")
    raise VectorsError(
        "conformance vectors not found: pass --vectors DIR (spec/test-vectors/v1 "
        "of the qsgd_codec source repository) or set QSGD_VECTORS"
    )


def load_vectors(
    root: Optional[str] = None, *, kind: Union[None, str, tuple] = None, arrays: bool = False
) -> list:
    """The vector records listed in ``root/index.json`` (default :func:`find_vectors`).

    Each record is the vector's JSON object plus ``file``, ``kind``, ``message`` (bytes) and
    ``decoded`` (bytes, or absent for vectors that must fail).  ``kind`` keeps one kind
    ("valid", "invalid", ...) or a tuple of kinds.  ``arrays=True`` adds ``decoded_bits``
    (raw bit patterns) and ``input`` (the encoder's input array; bfloat16 needs ml_dtypes).
    """
    root = find_vectors() if root is None else Path(root)
    try:
        index = json.loads((root / "index.json").read_text())
        entries = index["vectors"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise VectorsError(f"{root / 'index.json'}: not a vectors index: {exc}") from None
    major = str(index.get("format_version", "1.0")).split(".")[0]
    if major != str(wire.MAJOR):
        raise VectorsError(
            f"{root}: vectors of format {index.get('format_version')}, this "
            f"package implements {wire.MAJOR}.{wire.MINOR}"
        )
    records = []
    for entry in entries:
        path = root / str(entry.get("file") if isinstance(entry, dict) else entry)
        try:
            record = json.loads(path.read_text())
            record["message"] = bytes.fromhex(record["message_hex"])
            if record.get("decoded_hex") is not None:
                record["decoded"] = bytes.fromhex(record["decoded_hex"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise VectorsError(f"{path}: unreadable vector: {exc}") from None
        record["file"] = str(path.relative_to(root))
        record.setdefault("kind", entry.get("kind") if isinstance(entry, dict) else None)
        if kind is not None and record["kind"] not in ((kind,) if isinstance(kind, str) else kind):
            continue
        if arrays:
            record["decoded_bits"] = decoded_bits(record)
            if record.get("input_hex") is not None:
                record["input"] = input_array(record)
        records.append(record)
    return records


def _expects_error(record):
    return record.get("error") is not None


def input_array(record: dict) -> np.ndarray:
    """The vector's input as an array of its dtype (bfloat16 needs ml_dtypes: DTypeError)."""
    raw = bytes.fromhex(record["input_hex"])
    dtype = record["dtype"]
    if dtype == "bfloat16":
        arr = np.frombuffer(raw, "<u2").view(wire.bfloat16_dtype())
    else:
        arr = np.frombuffer(raw, np.dtype(dtype).newbyteorder("<")).astype(dtype)
    return arr.reshape(record["shape"])


def decoded_bits(record: dict) -> Optional[np.ndarray]:
    """The vector's decoded values as raw bit patterns (uint16/32/64), or None."""
    if record.get("decoded") is None:
        return None
    return np.frombuffer(record["decoded"], BITS_DTYPES[record["dtype"]])


def vector_id(record: dict) -> str:
    """A test id: the vector's name."""
    return record["name"]


def check_internal(record: dict) -> Tuple[str, str]:
    """Check one vector against this package.  Returns (status, detail): ok/FAIL/skip."""
    message = record["message"]
    limit = record.get("max_elements")
    if _expects_error(record):
        expected = error_class(record["error"])
        try:
            api.decode(message, max_elements=limit)
        except expected:
            return "ok", f"rejected: {record['error']}"
        except QSGDError as exc:
            return "FAIL", f"raised {type(exc).__name__} ({exc}), expected {record['error']}"
        except Exception as exc:  # a crash is a failure, not a rejection
            return "FAIL", f"crashed with {type(exc).__name__}: {exc}"
        return "FAIL", f"accepted a message that must raise {record['error']}"
    try:
        arr = api.decode(message, max_elements=limit)
    except ImportError as exc:
        return "skip", f"needs {exc.name}"
    except QSGDError as exc:
        if "ml_dtypes" in str(exc):
            return "skip", "bfloat16 needs ml_dtypes"
        return "FAIL", f"rejected a valid message: {type(exc).__name__}: {exc}"
    except Exception as exc:
        return "FAIL", f"crashed with {type(exc).__name__}: {exc}"
    name = wire.dtype_name(arr.dtype)
    if name != record.get("dtype", name) or list(arr.shape) != list(record.get("shape", arr.shape)):
        return (
            "FAIL",
            f"decoded {name}{list(arr.shape)}, expected {record.get('dtype')}{record.get('shape')}",
        )
    if raw_values(arr) != record["decoded"]:
        return "FAIL", "decoded values differ from decoded_hex"
    done = "decode"
    if record.get("roundtrip") and record.get("input_hex") is not None and record.get("params"):
        try:
            x = input_array(record)
        except QSGDError:
            return "skip", "bfloat16 input needs ml_dtypes (decode checked)"
        try:
            again = api.encode(x, **record["params"])
        except Exception as exc:
            return "FAIL", f"encoder raised {type(exc).__name__}: {exc}"
        if again != message:
            return "FAIL", "encoder output differs from message_hex"
        done += " + encode"
    return "ok", done


def run_external(
    command: list, message: bytes, max_elements: Optional[int], timeout: float
) -> Tuple[Optional[int], bytes, bytes]:
    """Run an external decoder on one message.  Returns (returncode, stdout, stderr).

    The protocol: the message bytes on stdin; environment variable QSGD_MAX_ELEMENTS holds
    the element limit (decimal); a decoder that accepts writes the decoded values as raw
    little-endian bytes in C order to stdout and exits 0; one that rejects exits with a
    status in 1..125 and may name the error class on the first stderr line
    (``CorruptDataError`` or ``CorruptDataError: details``).  A signal, a status above 125
    or running past the timeout is a crash, never a rejection.  returncode None = timeout.
    """
    env = dict(os.environ)
    env[MAX_ELEMENTS_ENV] = str(wire.element_limit(max_elements))
    try:
        proc = subprocess.run(
            command,
            input=message,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return None, b"", b""
    except FileNotFoundError:
        raise VectorsError(f"decoder command not found: {command[0]}") from None
    except PermissionError:
        raise VectorsError(f"decoder command is not executable: {command[0]}") from None
    return proc.returncode, proc.stdout, proc.stderr


def _named_class(stderr):
    line = stderr.decode("utf-8", "replace").strip().splitlines()
    if not line:
        return None
    token = line[0].split(":")[0].strip()
    return token if token.isidentifier() else None


def check_external(
    record: dict, command: list, timeout: float, require_class: bool = False
) -> Tuple[str, str]:
    """Check one vector against an external decoder (see :func:`run_external`)."""
    code, out, err = run_external(command, record["message"], record.get("max_elements"), timeout)
    if code is None:
        return "FAIL", f"timed out after {timeout} s"
    if code < 0 or code > 125:
        return "FAIL", f"crashed (exit status {code})" + _tail(err)
    if _expects_error(record):
        if code == 0:
            return "FAIL", f"accepted a message that must raise {record['error']}"
        expected = error_class(record["error"])
        named = _named_class(err)
        try:
            actual = error_class(named) if named else None
        except KeyError:
            actual = None
        if actual is None:
            if require_class:
                return "FAIL", f"rejected (exit {code}) without naming {record['error']}" + _tail(
                    err
                )
            return "ok", f"rejected (exit {code}), error class not named"
        if issubclass(actual, expected):
            return "ok", f"rejected: {named}"
        return "FAIL", f"rejected with {named}, expected {record['error']}"
    if code != 0:
        return "FAIL", f"rejected a valid message (exit {code})" + _tail(err)
    if out != record["decoded"]:
        return "FAIL", (
            f"stdout differs from decoded_hex ({len(out)} bytes, expected {len(record['decoded'])})"
        )
    return "ok", "decode"


def _tail(err):
    text = err.decode("utf-8", "replace").strip()
    return f": {text.splitlines()[0][:200]}" if text else ""
