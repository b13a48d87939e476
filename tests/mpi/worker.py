"""MPI side of tests/test_mpi.py.

Run as ``mpiexec -n K python -m mpi4py tests/mpi/worker.py OUTDIR``.  Every rank runs the
same checks and writes what it observed (digests of results, error classes, byte counts,
bound margins) to ``OUTDIR/rank<r>.json``; the pytest side compares the ranks' files.  The
checks catch the collectives' exceptions themselves, so a failing property shows up as a
wrong record, and a hang shows up as the pytest side's timeout.
"""

import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from mpi4py import MPI

import qsgd_codec
from qsgd_codec import mpi as qm
from qsgd_codec.adapters.mpi import agreement

comm = MPI.COMM_WORLD
rank, K = comm.Get_rank(), comm.Get_size()
BAD = K - 1  # the rank that misbehaves in the error checks
records = []

COLLECTIVES = {
    "allgather": qm.allgather,
    "allreduce": qm.allreduce,
    "parameter_server": qm.parameter_server,
}


def record(check, **fields):
    records.append({"check": check, "rank": rank, **fields})


def digest(a):
    a = np.asarray(a)
    h = hashlib.sha256(a.tobytes())
    h.update(f"{a.dtype.name}{a.shape}".encode())
    return h.hexdigest()[:16]


def dtype_of(name):
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def data(r, shape, dtype, kind=0, zeros=0.0):
    """Rank r's input: Gaussians with a per-rank scale, some zeroed; any rank can rebuild it."""
    rng = np.random.default_rng([kind, r])
    n = math.prod(shape)
    x = rng.standard_normal(n) * (1.0 + r) * np.exp(rng.uniform(-1, 1, n))
    if zeros:
        x[rng.random(n) < zeros] = 0.0
    return x.astype(dtype_of(dtype)).reshape(shape)


# ----------------------------------------------------------------------------- error bounds


def bucket_radius(x64, d, s, scale):
    """|Q(x)_i - x_i| <= r_b / s for element i of bucket b (|x_i| <= r_b, zeta in {l, l+1})."""
    n = x64.size
    nb = -(-n // d)
    padded = np.zeros(nb * d)
    padded[:n] = np.abs(x64)
    buckets = padded.reshape(nb, d)
    r = buckets.max(axis=1) if scale == "max" else np.sqrt((buckets**2).sum(axis=1))
    r = r * (1 + 2.0**-22)  # the scale is rounded up to float32
    return np.repeat(r / s, d)[:n]


def owners(n, d):
    """Owner rank of each element under allreduce's bucket-aligned split (written anew here)."""
    nb = -(-n // d)
    bucket_owner = np.empty(nb, dtype=np.int64)
    for j in range(K):
        bucket_owner[nb * j // K : nb * (j + 1) // K] = j
    return np.repeat(bucket_owner, d)[:n]


def error_ratio(op, result, inputs, *, levels, d, scale, average, root=0):
    """max over elements of |result - exact| / bound: at most 1 when the bound holds."""
    xs = [np.asarray(x, dtype=np.float64).reshape(-1) for x in inputs]
    exact = np.sum(xs, axis=0)
    radii = [bucket_radius(x, d, levels, scale) for x in xs]
    eps = float(np.finfo(result.dtype).eps) if result.dtype.name != "bfloat16" else 2.0**-7
    if op == "allgather":
        bound = np.sum(radii, axis=0)
    else:
        owner = owners(exact.size, d) if op == "allreduce" else np.full(exact.size, root)
        bound = np.zeros(exact.size)
        for k, rad in enumerate(radii):
            bound += np.where(owner == k, 0.0, rad)
        # the owner re-encodes the mean: its scale is at most max |exact mean| + first bound
        second = bucket_radius(
            (np.abs(exact) + bound) / (K if average else 1), d, levels, scale
        ) * (K if average else 1)
        bound = bound + second
    if average:
        exact, bound = exact / K, bound / K
    slack = 2 * eps * (np.abs(exact) + bound) + 1e-300
    err = np.abs(np.asarray(result, dtype=np.float64).reshape(-1) - exact)
    return float(np.max(err / (bound + slack))) if err.size else 0.0


# ----------------------------------------------------------------------------- checks

SETTINGS = [
    ("2bit-b128", dict(bits=2, bucket_size=128)),
    ("8bit-b512", dict(bits=8, bucket_size=512)),
    ("elias-s16-b256", dict(levels=16, bucket_size=256, coding="elias")),
    ("4bit-l2-b64", dict(bits=4, bucket_size=64, scale="l2")),
]


def check_identical_and_bounded():
    """Every collective, several settings, dtypes and shapes: same bytes everywhere, bounded."""
    cases = [((3000,), "float32", s) for s in SETTINGS]
    cases += [
        ((7, 13, 11), "float64", SETTINGS[1]),
        ((1200,), "float16", SETTINGS[0]),
        ((999,), "bfloat16", SETTINGS[2]),
        ((5,), "float32", SETTINGS[1]),
        ((), "float32", SETTINGS[0]),
        ((0,), "float32", SETTINGS[1]),
    ]
    for shape, dtype, (name, kw) in cases:
        inputs = [data(r, shape, dtype, kind=1) for r in range(K)]
        levels = kw.get("levels") or (1 << (kw["bits"] - 1)) - 1
        for op, fn in COLLECTIVES.items():
            for average in (True, False) if shape == (3000,) and name == "8bit-b512" else (True,):
                stats = qm.Stats()
                y = fn(inputs[rank], average=average, stats=stats, **kw)
                ratio = error_ratio(
                    op,
                    y,
                    inputs,
                    levels=levels,
                    d=kw["bucket_size"],
                    scale=kw.get("scale", "max"),
                    average=average,
                )
                record(
                    "identical",
                    op=op,
                    setting=name,
                    shape=list(shape),
                    dtype=dtype,
                    average=average,
                    digest=digest(y),
                    out_dtype=y.dtype.name,
                    out_shape=list(y.shape),
                    ratio=ratio,
                    stats=stats.last.as_dict(),
                )
        y = qm.allreduce_float32(inputs[rank], stats=(stats := qm.Stats()))
        exact = np.mean([np.asarray(x, np.float64) for x in inputs], axis=0)
        record(
            "identical",
            op="allreduce_float32",
            setting=name,
            shape=list(shape),
            dtype=dtype,
            average=True,
            digest=digest(y),
            out_dtype=y.dtype.name,
            out_shape=list(y.shape),
            rel_error=float(np.max(np.abs(y.astype(np.float64) - exact)) / np.max(np.abs(exact)))
            if y.size
            else 0.0,
            stats=stats.last.as_dict(),
        )


def check_elias_lengths():
    """Elias messages of different lengths per rank (different sparsity): identical, bounded."""
    kw = dict(levels=8, bucket_size=512, coding="elias")
    inputs = [data(r, (6000,), "float32", kind=2, zeros=0.2 * r) for r in range(K)]
    for op, fn in COLLECTIVES.items():
        stats = qm.Stats()
        y = fn(inputs[rank], stats=stats, **kw)
        ratio = error_ratio(op, y, inputs, levels=8, d=512, scale="max", average=True)
        record("elias", op=op, digest=digest(y), ratio=ratio, stats=stats.last.as_dict())


def check_seeds():
    """Derived seeds decorrelate ranks and steps; derive_seeds=False reproduces encode()."""
    kw = dict(bits=2, bucket_size=128)
    x = data(0, (20000,), "float32", kind=3)  # the same input on every rank
    x64 = x.astype(np.float64)
    single = qsgd_codec.decode(qsgd_codec.encode(x, seed=7, **kw)).astype(np.float64)
    rms_single = float(np.sqrt(np.mean((single - x64) ** 2)))
    same = qm.allgather(x, seed=7, derive_seeds=False, **kw)
    steps = 32
    acc = np.zeros_like(x64)
    rms_step = []
    for _ in range(steps):  # step=None: the counter on comm
        y = qm.allgather(x, seed=7, **kw).astype(np.float64)
        rms_step.append(float(np.sqrt(np.mean((y - x64) ** 2))))
        acc += y
    rms_avg = float(np.sqrt(np.mean((acc / steps - x64) ** 2)))
    record(
        "seeds",
        same_as_encode=bool(np.array_equal(same, single.astype(np.float32))),
        rms_single=rms_single,
        rms_step=float(np.mean(rms_step)),
        rms_avg=rms_avg,
        steps=steps,
        digest=digest(acc),
    )


def mangle(msg, how):
    b = bytearray(msg)
    if how == "flip":
        b[len(b) // 2] ^= 0x10
    elif how == "magic":
        b[0] ^= 0x01
    elif how == "truncate":
        del b[-3:]
    elif how == "oversize":
        b += bytes(1 << 20)
    return bytes(b)


def expect_error(check, fn, **fields):
    try:
        fn()
    except qsgd_codec.QSGDError as exc:
        record(check, error=type(exc).__name__, message=str(exc), **fields)
    except Exception as exc:  # a wrong error type is recorded, not hidden
        record(check, error=f"not a QSGDError: {type(exc).__name__}", message=str(exc), **fields)
    else:
        record(check, error=None, message="", **fields)
    # the communicator must still work afterwards, with every rank in step
    y = qm.allgather(data(rank, (300,), "float32", kind=4), bits=4)
    record(check + "-after", digest=digest(y), **fields)


def check_corrupt():
    """One bad message -> the same QSGDError subclass on every rank, then business as usual."""
    original = agreement._encode_message
    step = 1000
    x = data(rank, (2500,), "float32", kind=5)
    # (case, op, whose encode goes wrong, phase, how, expected class)
    cases = [
        ("allgather-flip", "allgather", BAD, qm.PHASE_CONTRIBUTION, "flip", "ChecksumError"),
        ("allgather-magic", "allgather", BAD, qm.PHASE_CONTRIBUTION, "magic", "BadMagicError"),
        (
            "allgather-truncate",
            "allgather",
            BAD,
            qm.PHASE_CONTRIBUTION,
            "truncate",
            "TruncatedError",
        ),
        ("allgather-shape", "allgather", BAD, qm.PHASE_CONTRIBUTION, "shape", "CorruptDataError"),
        # only rank 0 receives chunk 0 from BAD: the other ranks learn of it by agreement
        (
            "allreduce-scatter-flip",
            "allreduce",
            BAD,
            qm.PHASE_CONTRIBUTION,
            "flip",
            "ChecksumError",
        ),
        ("allreduce-gather-flip", "allreduce", BAD, qm.PHASE_AGGREGATE, "flip", "ChecksumError"),
        ("ps-worker-flip", "parameter_server", BAD, qm.PHASE_CONTRIBUTION, "flip", "ChecksumError"),
        (
            "ps-root-truncate",
            "parameter_server",
            0,
            qm.PHASE_AGGREGATE,
            "truncate",
            "TruncatedError",
        ),
        ("allgather-raise", "allgather", BAD, qm.PHASE_CONTRIBUTION, "raise", "QSGDError"),
        # a byte count no encoder could produce is refused before anything is allocated
        ("allgather-oversize", "allgather", BAD, qm.PHASE_CONTRIBUTION, "oversize", "LengthError"),
        ("allreduce-oversize", "allreduce", BAD, qm.PHASE_AGGREGATE, "oversize", "LengthError"),
    ]
    for case, op, who, phase, how, expected in cases:
        step += 1
        target = qm.derive_seed(0, who, step, phase, 0)

        def encode(arr, params, seed, how=how, target=target):
            if seed != target:
                return original(arr, params, seed)
            if how == "raise":
                raise RuntimeError("simulated failure inside the encoder")
            if how == "shape":
                return original(arr.reshape(-1)[1:], params, seed)
            return mangle(original(arr, params, seed), how)

        if rank == who:
            agreement._encode_message = encode
        try:
            expect_error(
                "corrupt",
                lambda: COLLECTIVES[op](x, bits=4, step=step),
                case=case,
                expected=expected,
            )
        finally:
            agreement._encode_message = original
    # NaN input on one rank: the encoder refuses it there, every rank raises NonFiniteError
    bad_x = x.copy()
    if rank == BAD:
        bad_x[17] = np.nan
    for op, fn in COLLECTIVES.items():
        expect_error(
            "corrupt", lambda fn=fn: fn(bad_x, bits=4), case=f"{op}-nan", expected="NonFiniteError"
        )


def check_mismatch():
    """Arguments that differ across ranks -> ParameterError everywhere, naming the field."""
    x = data(rank, (1000,), "float32", kind=6)
    bad = rank == BAD
    cases = [
        ("bits", "allgather", dict(bits=4 if bad else 8), x, "levels"),
        ("shape", "allreduce", dict(bits=4), x[:999] if bad else x, "shape"),
        ("dtype", "parameter_server", dict(bits=4), x.astype(np.float64) if bad else x, "dtype"),
        ("coding", "allreduce", dict(bits=4, coding="elias" if bad else "dense"), x, "coding"),
        ("step", "allgather", dict(bits=4, step=5 if bad else 6), x, "step"),
        ("root", "parameter_server", dict(bits=4, root=1 if bad else 0), x, "root"),
        ("seed", "allgather", dict(bits=4, seed=1 if bad else 2), x, "seed"),
        ("invalid-on-one-rank", "allgather", dict(bucket_size=0 if bad else 512), x, "bucket_size"),
        ("float32-shape", "allreduce_float32", {}, x[:10] if bad else x, "shape"),
        # ranks inside different collectives: the first exchange has one length for all
        ("different-collectives", "allreduce" if bad else "allgather", dict(bits=4), x, "op"),
        (
            "different-collectives-float32",
            "parameter_server" if bad else "allreduce_float32",
            {},
            x,
            "op",
        ),
    ]
    fns = dict(COLLECTIVES, allreduce_float32=qm.allreduce_float32)
    for case, op, kw, arr, key in cases:
        expect_error(
            "mismatch", lambda op=op, kw=kw, arr=arr: fns[op](arr, **kw), case=case, key=key
        )


class FakeDeviceArray:
    """Host memory exposed only through __cuda_array_interface__ (as mpi4py's own tests do)."""

    def __init__(self, a):
        self._a = a
        self.__cuda_array_interface__ = {
            "shape": a.shape,
            "typestr": a.dtype.str,
            "data": (a.ctypes.data, False),
            "strides": None,
            "version": 3,
        }


def check_device():
    """GPU inputs are staged through the host: same result as the host array (CUDA simulator)."""
    x = data(rank, (700, 3), "float32", kind=7)
    for op, fn in COLLECTIVES.items():
        host = fn(x, bits=4, step=77)
        dev = fn(FakeDeviceArray(x), bits=4, step=77)
        record(
            "device",
            op=op,
            equal=bool(np.array_equal(host, dev)),
            digest=digest(dev),
            kind=type(dev).__name__,
        )


def main():
    out = Path(sys.argv[1])
    groups = (
        sys.argv[2].split(",")
        if len(sys.argv) > 2
        else ["identical", "elias", "seeds", "corrupt", "mismatch"]
    )
    checks = {
        "identical": check_identical_and_bounded,
        "elias": check_elias_lengths,
        "seeds": check_seeds,
        "corrupt": check_corrupt,
        "mismatch": check_mismatch,
        "device": check_device,
    }
    timings = {}
    for group in groups:
        t = time.perf_counter()
        checks[group]()
        timings[group] = time.perf_counter() - t
    record("done", ranks=K, timings=timings)
    (out / f"rank{rank}.json").write_text(json.dumps(records))


if __name__ == "__main__":
    main()
