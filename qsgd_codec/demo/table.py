"""Bytes, error and time of the compressed collectives against a float32 Allreduce.

Each rank holds a gradient-like float32 array (a signal common to all ranks plus per-rank
noise).  For several codec settings and each collective, rank 0 prints the payload bytes a
rank sends (mean over ranks), the saving against a float32 Allreduce, the relative error of
the result against the exact mean, and the split of the time (median over repetitions of
the slowest rank; one warm-up call first).
"""

import json
from pathlib import Path

import numpy as np

SETTINGS = [
    ("dense 2-bit, bucket 128", dict(bits=2, bucket_size=128)),
    ("dense 4-bit, bucket 512", dict(bits=4, bucket_size=512)),
    ("dense 8-bit, bucket 512", dict(bits=8, bucket_size=512)),
    ("elias 4-bit, bucket 512", dict(bits=4, bucket_size=512, coding="elias")),
    ("elias s=sqrt(d)=22, bucket 512", dict(levels=22, bucket_size=512, coding="elias")),
]


def run(args):
    from mpi4py import MPI

    from qsgd_codec import mpi as qm

    from . import warm_codec

    comm = MPI.COMM_WORLD
    rank, k = comm.Get_rank(), comm.Get_size()
    n = args.n
    common = np.random.default_rng(0).standard_normal(n)
    x = (common + 0.5 * np.random.default_rng([1, rank]).standard_normal(n)).astype(np.float32)
    exact = np.empty(n)
    comm.Allreduce(x.astype(np.float64), exact, op=MPI.SUM)
    exact /= k
    norm = float(np.linalg.norm(exact))

    def measure(fn, **kw):
        calls, errors = [], []
        fn(x, **kw)  # warm-up: JIT loading, first-touch allocations
        for _ in range(args.reps):
            stats = qm.Stats()
            comm.Barrier()
            y = fn(x, stats=stats, **kw)
            errors.append(float(np.linalg.norm(y.astype(np.float64) - exact)) / norm)
            calls.append(stats.last)
        table = comm.gather([c.as_dict() for c in calls], root=0)
        if rank != 0:
            return None

        def slowest(key):
            return float(np.median([max(t[i][key] for t in table) for i in range(args.reps)]))

        return {
            "bytes_sent": float(np.mean([t[0]["bytes_sent"] for t in table])),
            "message_bytes": float(np.mean([t[0]["message_bytes"] for t in table])),
            "error": float(np.median(errors)),
            "encode_ms": 1e3 * slowest("encode_s"),
            "comm_ms": 1e3 * slowest("comm_s"),
            "decode_ms": 1e3 * slowest("decode_s"),
            "total_ms": 1e3 * slowest("total_s"),
        }

    warm_codec(comm, [(n,), (n // k,)], [kw for _, kw in SETTINGS])
    rows = []
    base = measure(qm.allreduce_float32)
    if rank == 0:
        rows.append({"setting": "float32", "collective": "MPI Allreduce", **base})
    for label, kw in SETTINGS:
        for name in ("allgather", "allreduce", "parameter_server"):
            res = measure(getattr(qm, name), **kw)
            if rank == 0:
                rows.append({"setting": label, "collective": name, **res})
    if rank != 0:
        return 0
    print(
        f"{k} ranks, {n:,} float32 values per rank ({4 * n / 1e6:.2f} MB), median of "
        f"{args.reps} calls; bytes: payload one rank sends (mean over ranks); times: the "
        f"slowest rank\n"
    )

    def saving(r):
        return "1x" if r is rows[0] else f"{base['bytes_sent'] / r['bytes_sent']:.2f}x less"

    print(
        "| setting | collective | bytes sent per rank | vs float32 Allreduce | rel. error "
        "| encode ms | comm ms | decode ms | total ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['setting']} | {r['collective']} | {r['bytes_sent'] / 1e3:,.1f} kB | "
            f"{saving(r)} | {r['error']:.2e} | "
            f"{r['encode_ms']:.1f} | {r['comm_ms']:.1f} | {r['decode_ms']:.1f} | "
            f"{r['total_ms']:.1f} |"
        )
    print(
        "\nfloat32 Allreduce bytes are the bandwidth-optimal ring figure, 2(K-1)/K x 4n.  "
        "On one machine the 'network' is shared memory: times show codec cost, not a "
        "network's; see benchmarks/bench_mpi.py for a link model."
    )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"ranks": k, "n": n, "rows": rows}, indent=1))
    return 0
