"""Untrusted-bytes machinery shared by the robustness tests, the fuzz harness and the
detection-rate report (spec/wire-format.md section 13).

- :func:`small_messages`: small valid messages of each coding, with and without checksum;
- :func:`bit_flips`, :func:`truncations`, :func:`mutate`: ways to damage a message;
- decoder paths (:data:`PATHS`): each turns bytes into an :class:`Outcome` (an error class
  name, or the decoded dtype, shape and raw value bits) so paths can be compared, also
  across a process boundary;
- :func:`judge`: the acceptance oracle.  A decoder may return values for damaged bytes
  only when the bytes are themselves a well-formed message: the reference accepts them,
  they are the canonical encoding of what they decode to (:func:`canonical`), every value
  lies on its bucket's grid, and the path's values equal the reference's bit for bit;
- :func:`guarded_bytes`, :func:`guarded_empty`: buffers that end at an inaccessible page, so
  a kernel reading or writing one byte too far dies with SIGSEGV instead of going unseen;
- a child-process runner (``python tests/mutation.py child PATH``) that decodes messages in
  a separate process, so a crash is reported as a failure with the input that caused it.
"""

import ctypes
import json
import math
import mmap
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from qsgd_codec import reference as ref, wire  # noqa: E402
from qsgd_codec.errors import QSGDError  # noqa: E402

PAGE = mmap.PAGESIZE


# ----------------------------------------------------------------------------- corpus


def _values(rng, n, scale=1.0):
    return rng.standard_normal(n) * scale


def small_cases():
    """(name, array, encoder keywords) of the small valid messages, checksum not included."""
    import ml_dtypes

    rng = np.random.default_rng(7)
    f32 = np.float32
    cases = [
        ("dense_b2_f32", _values(rng, 9).astype(f32), dict(bits=2, bucket_size=4)),
        (
            "dense_b4_zero_bucket",
            np.concatenate([_values(rng, 4), np.zeros(4), _values(rng, 3)]).astype(f32),
            dict(bits=4, bucket_size=4),
        ),
        (
            "dense_s5_f16_l2",
            _values(rng, 7, 4.0).astype(np.float16),
            dict(levels=5, bucket_size=3, scale="l2"),
        ),
        ("dense_b3_f64_2d", _values(rng, 6).reshape(2, 3), dict(bits=3, bucket_size=4)),
        (
            "dense_b8_bf16",
            _values(rng, 5).astype(f32).astype(ml_dtypes.bfloat16),
            dict(bits=8, bucket_size=8),
        ),
        ("dense_n0", np.zeros(0, f32), dict(bits=4)),
        (
            "elias_s1_f32_l2",
            _values(rng, 12).astype(f32),
            dict(levels=1, bucket_size=5, scale="l2", coding="elias"),
        ),
        (
            "elias_b4_zero_bucket",
            np.concatenate([_values(rng, 5), np.zeros(5), _values(rng, 4)]).astype(f32),
            dict(bits=4, bucket_size=5, coding="elias"),
        ),
        (
            "elias_b8_bf16",
            _values(rng, 6).astype(f32).astype(ml_dtypes.bfloat16),
            dict(bits=8, bucket_size=6, coding="elias"),
        ),
        (
            "elias_s2_f64_l2",
            _values(rng, 8),
            dict(levels=2, bucket_size=8, scale="l2", coding="elias"),
        ),
        (
            "elias_s1000_f16",
            _values(rng, 6, 8.0).astype(np.float16),
            dict(levels=1000, bucket_size=3, coding="elias"),
        ),
    ]
    return cases


def small_messages(checksum=None):
    """[(name, message)] of the small valid messages; checksum None means both variants."""
    variants = (True, False) if checksum is None else (bool(checksum),)
    out = []
    for name, x, kwargs in small_cases():
        for crc in variants:
            params = wire.encode_params(**kwargs, seed=11, checksum=crc)
            out.append((f"{name}_{'crc' if crc else 'nocrc'}", ref.encode_array(x, params)))
    return out


# ----------------------------------------------------------------------------- damage


def bit_flips(message):
    """(bit index, message with that bit flipped) for every bit."""
    for i in range(8 * len(message)):
        buf = bytearray(message)
        buf[i >> 3] ^= 1 << (i & 7)
        yield i, bytes(buf)


def truncations(message):
    """Every proper prefix of the message, shortest first."""
    for k in range(len(message)):
        yield message[:k]


HEADER_FIELDS = [  # (name, offset, struct code) of the fixed header
    ("magic", 0, "4s"),
    ("major", 4, "B"),
    ("minor", 5, "B"),
    ("header_length", 6, "H"),
    ("flags", 8, "H"),
    ("dtype", 10, "B"),
    ("scale_kind", 11, "B"),
    ("coding", 12, "B"),
    ("ndim", 13, "B"),
    ("reserved", 14, "H"),
    ("n", 16, "Q"),
    ("bucket_size", 24, "I"),
    ("levels", 28, "I"),
    ("seed", 32, "Q"),
    ("body_length", 40, "Q"),
]


def region(message, offset):
    """The field of a *valid* message holding byte ``offset`` ('seed', 'scales', 'codes', ...)."""
    for name, start, code in HEADER_FIELDS:
        if start <= offset < start + struct.calcsize("<" + code):
            return name
    header = wire.parse_header(message, max_elements=None)
    if offset < header.header_length:
        return "shape"
    if header.has_checksum and offset >= len(message) - wire.CRC_LENGTH:
        return "crc"
    if offset < header.scales_offset + 4 * header.num_buckets:
        return "scales"
    if offset < header.codes_offset:
        return "bit_lengths"
    return "codes"


def refresh_crc(message):
    """The message with its CRC-32 trailer recomputed when its flags ask for one."""
    if len(message) < wire.FIXED_HEADER_LENGTH + wire.CRC_LENGTH:
        return bytes(message)
    flags = struct.unpack_from("<H", message, 8)[0]
    if not flags & wire.FLAG_CHECKSUM:
        return bytes(message)
    body = bytes(message[: -wire.CRC_LENGTH])
    return body + wire.crc32(body).to_bytes(4, "little")


INTERESTING = [
    0,
    1,
    2,
    3,
    7,
    8,
    15,
    16,
    24,
    25,
    31,
    32,
    63,
    64,
    65,
    127,
    128,
    255,
    256,
    0x7FFF,
    0x8000,
    0xFFFF,
    0x10000,
    (1 << 24) - 1,
    1 << 24,
    (1 << 24) + 1,
    0x7FFFFFFF,
    0x80000000,
    0xFFFFFFFF,
    1 << 32,
    (1 << 31) + 1,
    1 << 40,
    (1 << 63) - 1,
    1 << 63,
    (1 << 64) - 1,
]
_INT_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}


def mutate(message, rnd, *, fix_crc=0.9):
    """One random, structure-aware mutation of ``message`` (``rnd``: random.Random).

    Mixes blind byte damage with edits that know the layout: header fields set to boundary
    values, bit-length table entries changed, code bytes rewritten, then (with probability
    ``fix_crc``) the CRC recomputed so the damage reaches the body checks.
    """
    buf = bytearray(message)
    for _ in range(rnd.choice((1, 1, 1, 2, 3, 8))):
        op = rnd.randrange(10)
        if not buf:
            buf += bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 64)))
        elif op == 0:
            i = rnd.randrange(8 * len(buf))
            buf[i >> 3] ^= 1 << (i & 7)
        elif op == 1:
            buf[rnd.randrange(len(buf))] = rnd.randrange(256)
        elif op == 2:
            del buf[rnd.randrange(len(buf)) :][: rnd.randrange(1, 9)]
        elif op == 3:
            i = rnd.randrange(len(buf) + 1)
            buf[i:i] = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 9)))
        elif op == 4:
            del buf[rnd.randrange(len(buf) + 1) :]
        elif op in (5, 6) and len(buf) >= wire.FIXED_HEADER_LENGTH:
            name, offset, code = rnd.choice(HEADER_FIELDS[1:])
            size = struct.calcsize("<" + code)
            value = rnd.choice(INTERESTING) & ((1 << (8 * size)) - 1)
            if rnd.random() < 0.3:
                old = int.from_bytes(buf[offset : offset + size], "little")
                value = (old + rnd.choice((-1, 1, -8, 8))) % (1 << (8 * size))
            struct.pack_into("<" + _INT_CODES[size], buf, offset, value)
        elif op == 7 and len(buf) > 64:
            # a 32-bit word in the body (a scale or bit length) set to a boundary value
            i = rnd.randrange(wire.FIXED_HEADER_LENGTH, len(buf) - 3)
            struct.pack_into("<I", buf, i, rnd.choice(INTERESTING) & 0xFFFFFFFF)
        elif op == 8:
            i = rnd.randrange(len(buf))
            buf[i : i + rnd.randrange(1, 5)] = bytes(
                [rnd.choice((0x00, 0xFF, 0x80, 0x7F))]
            ) * rnd.randrange(1, 5)
        else:
            i = rnd.randrange(len(buf))
            buf[i] = (buf[i] + rnd.choice((-1, 1))) & 0xFF
    out = bytes(buf)
    return refresh_crc(out) if rnd.random() < fix_crc else out


# ----------------------------------------------------------------------------- outcomes


class Outcome(NamedTuple):
    """What a decoder did: ``error`` (class name) or ``dtype``, ``shape``, ``bits``."""

    error: str = None
    dtype: str = None
    shape: tuple = None
    bits: bytes = None
    detail: str = ""

    @property
    def accepted(self):
        return self.error is None

    def to_json(self):
        return {
            "error": self.error,
            "dtype": self.dtype,
            "shape": None if self.shape is None else list(self.shape),
            "bits": None if self.bits is None else self.bits.hex(),
            "detail": self.detail,
        }

    @classmethod
    def from_json(cls, d):
        return cls(
            d["error"],
            d["dtype"],
            None if d["shape"] is None else tuple(d["shape"]),
            None if d["bits"] is None else bytes.fromhex(d["bits"]),
            d.get("detail", ""),
        )

    def same_as(self, other):
        return self[:4] == other[:4]


def _outcome_of_array(arr):
    dtype = wire.dtype_name(arr.dtype)
    bits = np.ascontiguousarray(arr).view(wire.bits_dtype(dtype))
    return Outcome(
        None, dtype, tuple(arr.shape), bits.astype(bits.dtype.newbyteorder("<")).tobytes()
    )


def run_decoder(fn, data, max_elements):
    """Call a decoder; a QSGDError becomes an error outcome, anything else propagates."""
    try:
        return fn(data, max_elements)
    except QSGDError as exc:
        return Outcome(type(exc).__name__, detail=str(exc)[:200])


def decode_reference(data, max_elements):
    header, bits = ref.decode_bits(data, max_elements=max_elements)
    return Outcome(
        None, header.dtype, tuple(header.shape), bits.astype(bits.dtype.newbyteorder("<")).tobytes()
    )


def decode_api(data, max_elements):
    import qsgd_codec

    return _outcome_of_array(qsgd_codec.decode(data, max_elements=max_elements))


def decode_api_out(data, max_elements, out=None):
    """The public API writing into a caller's array of the size and dtype the header declares
    (an unreadable header falls back to a 1-element float32 array, which must be refused)."""
    import qsgd_codec

    if out is None:
        out = empty_out_for(data, max_elements)
    result = qsgd_codec.decode(data, out=out, max_elements=max_elements)
    assert result is out or np.shares_memory(result, out)
    return _outcome_of_array(out)


def declared_shape(data, max_elements):
    """(shape, dtype) the header declares, read without validation; None when unusable
    (too short, unknown dtype, shape inconsistent with n, or more than ``max_elements``)."""
    data = bytes(data)
    if len(data) < wire.FIXED_HEADER_LENGTH:
        return None
    dtype_code, ndim, n = data[10], data[13], struct.unpack_from("<Q", data, 16)[0]
    if (
        dtype_code not in wire.DTYPE_NAMES
        or ndim > wire.MAX_NDIM
        or len(data) < wire.FIXED_HEADER_LENGTH + 8 * ndim
    ):
        return None
    shape = struct.unpack_from(f"<{ndim}Q", data, wire.FIXED_HEADER_LENGTH)
    if math.prod(shape) != n or n > max_elements:
        return None
    try:
        wire.check_representable(shape, wire.DTYPE_NAMES[dtype_code])
    except QSGDError:
        return None
    return shape, wire.numpy_dtype(wire.DTYPE_NAMES[dtype_code])


def empty_out_for(data, max_elements, allocate=np.empty):
    """An output array of the shape and dtype ``data``'s header declares (read without
    validation, bounded by the limit), else a 1-element float32 array.  Sized this way,
    ``decode(out=)`` meets the same checks in the same order as a decode without ``out``."""
    declared = declared_shape(data, max_elements)
    shape, dtype = declared if declared else ((1,), np.dtype(np.float32))
    return allocate(shape, dtype)


def decode_cuda(data, max_elements):
    """The CUDA path (run under NUMBA_ENABLE_CUDASIM=1 on a machine without a GPU)."""
    from numba import cuda

    import qsgd_codec

    like = cuda.device_array(1, dtype=np.float32)
    result = qsgd_codec.decode(data, like=like, max_elements=max_elements)
    return _outcome_of_array(result.copy_to_host())


def decode_cuda_device_bytes(data, max_elements):
    """The CUDA path with the message itself already in device memory."""
    from numba import cuda

    from qsgd_codec import cuda as qcuda

    host = np.frombuffer(bytes(data), np.uint8)
    result = qcuda.decode_device(
        cuda.to_device(host) if host.size else bytes(data), max_elements=max_elements
    )
    header_dtype = result.dtype
    values = result.copy_to_host()
    if header_dtype == np.uint16 and bytes(data[10:11]) == bytes([wire.DTYPE_CODES["bfloat16"]]):
        import ml_dtypes

        values = values.view(ml_dtypes.bfloat16)
    return _outcome_of_array(values)


def decode_selftest_segfault(data, max_elements):
    """A deliberately broken decoder for testing the harnesses: it dereferences a null
    pointer (SIGSEGV) when the first byte is 0x42 ('B'), else it is the reference."""
    if len(data) and bytes(data[:1]) == b"B":
        ctypes.string_at(0)
    return decode_reference(data, max_elements)


PATHS = {
    "reference": decode_reference,
    "api": decode_api,
    "api_out": decode_api_out,
    "cuda": decode_cuda,
    "cuda_device_bytes": decode_cuda_device_bytes,
    "selftest_segfault": decode_selftest_segfault,
}


def cuda_available():
    return (ROOT / "qsgd_codec" / "cuda" / "__init__.py").exists()


# ----------------------------------------------------------------------------- the oracle


def canonical(data):
    """Re-serialise what the reference reads from ``data``: header fields, scales and levels.

    A well-formed message is the unique encoding of its contents, so for every message the
    reference accepts, ``canonical(data)`` equals ``data`` except for two fields a reader
    ignores by design: the minor version and header bytes a later minor version appended
    (spec section 10).  Those are normalised in :func:`normalise`.
    """
    mv = wire.byte_view(data)
    header = wire.parse_header(mv, max_elements=None)
    scales, q = ref.decode_levels(mv, header)
    d = header.bucket_size
    if header.coding == "dense":
        codes = ref.dense_pack(q, header.width) if header.n else b""
        body = scales.astype("<f4").tobytes() + codes
    else:
        bits = [ref.elias_bucket_bits(q[b * d : (b + 1) * d]) for b in range(header.num_buckets)]
        body = (
            scales.astype("<f4").tobytes()
            + np.array([len(b) for b in bits], "<u4").tobytes()
            + b"".join(ref.bits_to_bytes(b) for b in bits)
        )
    head = wire.pack_header(
        dtype=header.dtype,
        scale=header.scale,
        coding=header.coding,
        shape=header.shape,
        bucket_size=d,
        levels=header.levels,
        seed=header.seed,
        body_length=len(body),
        checksum=header.has_checksum,
    )
    message = head + body
    if header.has_checksum:
        message += wire.crc32(message).to_bytes(4, "little")
    return message


def normalise(data):
    """``data`` with minor = 0 and later-minor header bytes dropped (CRC recomputed)."""
    data = bytes(data)
    header = wire.parse_header(data, max_elements=None)
    known = wire.FIXED_HEADER_LENGTH + 8 * len(header.shape)
    buf = bytearray(data[:known] + data[header.header_length :])
    buf[5] = 0
    struct.pack_into("<H", buf, 6, known)
    return refresh_crc(buf)


def _magnitudes(values_bits, dtype):
    """|value| as float64 (exact) from raw bit patterns of ``dtype``."""
    width = np.dtype(wire.bits_dtype(dtype)).itemsize * 8
    mag = values_bits & ~(np.array(1, dtype=values_bits.dtype) << (width - 1))
    return ref.to_float64(mag.view(np.uint16) if dtype == "bfloat16" else mag.view(dtype), dtype)


def _grid_value(r, q, s, dtype):
    """RN_dtype(RN64(RN64(r * q) / s)) as float64, the decoded magnitude of level q."""
    return ref.to_float64(np.asarray(ref.round_to_dtype((r * q) / s, dtype)), dtype)


def grid_violation(data, outcome):
    """Why ``outcome``'s values are not on their buckets' grids, or None.

    Checked without the reference decoder's levels: every value must be finite, +0.0 in a
    bucket whose scale is 0, and elsewhere equal in magnitude to RN_dtype(r*q/s) for some
    integer 0 <= q <= s (found by bisection: that value grows with q).
    """
    header = wire.parse_header(data, max_elements=None)
    n, d, s, dtype = header.n, header.bucket_size, header.levels, header.dtype
    if outcome.dtype != dtype or tuple(outcome.shape) != tuple(header.shape):
        return f"dtype/shape {outcome.dtype}{outcome.shape} but header says {dtype}{header.shape}"
    bits = np.frombuffer(outcome.bits, np.dtype(wire.bits_dtype(dtype)).newbyteorder("<")).astype(
        wire.bits_dtype(dtype)
    )
    if bits.size != n:
        return f"{bits.size} values for n={n}"
    if n == 0:
        return None
    mag = _magnitudes(bits, dtype)
    if not np.all(np.isfinite(mag)):
        return "a non-finite value"
    scales = np.frombuffer(
        wire.byte_view(data), "<f4", header.num_buckets, header.scales_offset
    ).astype(np.float64)
    r = np.repeat(scales, d)[:n]
    if np.any(bits[r == 0] != 0):
        return "a value other than +0.0 in a bucket whose scale is 0"
    check = np.flatnonzero(mag != 0)  # 0 is level 0 of every grid
    if check.size == 0:
        return None
    rc, vc = r[check], mag[check]
    lo = np.zeros(check.size, np.int64)
    hi = np.full(check.size, s, np.int64)
    while np.any(lo < hi):
        active = lo < hi
        mid = (lo + hi) // 2
        below = _grid_value(rc, mid, s, dtype) < vc
        lo, hi = np.where(active & below, mid + 1, lo), np.where(active & ~below, mid, hi)
    ok = _grid_value(rc, lo, s, dtype) == vc
    if not ok.all():
        i = int(check[np.argmin(ok)])
        return f"value {mag[i]!r} (element {i}) is off its bucket's grid r={r[i]!r}, s={s}"
    return None


def judge(data, outcome, max_elements=wire.DEFAULT_MAX_ELEMENTS, reference=None):
    """None if ``outcome`` is what the spec allows a decoder to do with ``data``, else why not.

    - the reference rejects: the path must reject with the same error class;
    - the reference accepts: the bytes must be canonical (the reference is not fooled), the
      values on their grid, and the path must return the reference's dtype, shape and bits.
    """
    if reference is None:
        reference = run_decoder(decode_reference, data, max_elements)
    if not reference.accepted:
        if outcome.accepted:
            return f"wrong acceptance: the reference raises {reference.error}"
        if outcome.error != reference.error:
            return (
                f"error class {outcome.error}, the reference raises {reference.error} "
                f"({outcome.detail} / {reference.detail})"
            )
        return None
    if not outcome.accepted:
        return f"wrong rejection: {outcome.error} ({outcome.detail}); the reference decodes it"
    if canonical(data) != normalise(data):
        return "the reference accepted a non-canonical message"
    why = grid_violation(data, reference)
    if why:
        return f"reference output: {why}"
    if not outcome.same_as(reference):
        return "values differ from the reference's"
    return None


# ----------------------------------------------------------------------------- guard pages

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
PROT_NONE = 0


class Guarded:
    """``size`` usable bytes flush against an inaccessible page (after them, or before)."""

    def __init__(self, size, where="after"):
        self.size = size
        pages = -(-max(size, 1) // PAGE)
        self.map = mmap.mmap(-1, (pages + 2) * PAGE)
        base = ctypes.addressof(ctypes.c_char.from_buffer(self.map))
        for guard in (0, (pages + 1) * PAGE):
            if _libc.mprotect(base + guard, PAGE, PROT_NONE) != 0:
                raise OSError(ctypes.get_errno(), "mprotect failed")
        start = (pages + 1) * PAGE - size if where == "after" else PAGE
        self.view = memoryview(self.map)[start : start + size]


def guarded_bytes(data, where="after"):
    """A read-only memoryview of ``data`` whose end (or start) touches a PROT_NONE page."""
    g = Guarded(len(data), where)
    g.view[:] = data
    return g.view.toreadonly(), g


def guarded_empty(shape, dtype, where="after"):
    """An uninitialised array whose last (or first) byte touches a PROT_NONE page."""
    dtype = np.dtype(dtype)
    size = math.prod(shape) * dtype.itemsize
    g = Guarded(size, where)
    arr = np.frombuffer(g.view, dtype=np.uint8)[:size].view(dtype).reshape(shape)
    return arr, g


# ----------------------------------------------------------------------------- child runner


def run_child(path, messages, *, max_elements=1 << 20, guard=None, env=None, timeout=600):
    """Decode ``messages`` with decoder ``path`` in a child process.

    Returns (outcomes, crash): outcomes[i] is an :class:`Outcome` for each message decoded
    before the child stopped; crash is None, or (index, description) of the message during
    which the child died (a signal, a non-QSGDError exception, a timeout).
    """
    payload = json.dumps(
        {
            "path": path,
            "max_elements": max_elements,
            "guard": guard,
            "messages": [m.hex() for m in messages],
        }
    )
    full_env = dict(os.environ)
    full_env.update(env or {})
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "child"],
            input=payload,
            capture_output=True,
            text=True,
            env=full_env,
            timeout=timeout,
            cwd=ROOT,
        )
        stdout, stderr, rc = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        stderr, rc = "timeout", "timeout"
    outcomes = []
    for line in stdout.splitlines():
        if line.startswith("{"):
            outcomes.append(Outcome.from_json(json.loads(line)))
    if rc == 0 and len(outcomes) == len(messages):
        return outcomes, None
    if isinstance(rc, int) and rc < 0:
        why = f"killed by signal {-rc}"
    else:
        why = f"exit status {rc}"
    return outcomes, (len(outcomes), f"{why}: {stderr[-2000:]}")


def _child_main():
    request = json.loads(sys.stdin.read())
    fn = PATHS[request["path"]]
    guard, limit = request["guard"], request["max_elements"]
    keep = []
    for hexdata in request["messages"]:
        data = bytes.fromhex(hexdata)
        if guard in ("after", "before"):
            data, mapping = guarded_bytes(data, guard)
            keep = [mapping]
        if request["path"] == "api_out" and guard:
            out, g = empty_out_for(data, limit, allocate=lambda s, t: guarded_empty(s, t, guard))
            keep.append(g)
            outcome = run_decoder(lambda b, m: decode_api_out(b, m, out=out), data, limit)
        else:
            outcome = run_decoder(fn, data, limit)
        sys.stdout.write(json.dumps(outcome.to_json()) + "\n")
        sys.stdout.flush()
    del keep


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        _child_main()
    else:
        print(__doc__)
