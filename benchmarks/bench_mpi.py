"""Collective time against message size and rank count, next to a plain float32 MPI Allreduce.

Run from the repository root (it launches ``mpiexec`` itself, once per rank count):

    .venv/bin/python benchmarks/bench_mpi.py            # short: 2^10..2^22 (x4), 2 settings
    .venv/bin/python benchmarks/bench_mpi.py --full     # 2^10..2^24 (every power of 2), 4 settings

Writes benchmarks/results/mpi.json (every number), mpi.md (tables) and mpi.png.

**Measured.**  For each rank count K (2, 4), size n (float32 values per rank), codec setting
and collective (:func:`qsgd_codec.mpi.allgather`, ``allreduce``, ``parameter_server``) and
for a plain ``comm.Allreduce`` of float32: one warm-up call, then the median over repetitions
of the slowest rank's wall time (a barrier before each call).  On one machine MPI moves bytes
through shared memory, so these times are codec cost plus memory copies, not a network's;
with more ranks than cores they also include the ranks' competition for the cores.

**Modeled** time of one call on a network of link bandwidth B (1, 10, 100 Gbit/s)::

    T = T_codec + max over ranks of max(bytes sent, bytes received) / B + alpha * c * ceil(log2 K)

- ``T_codec``: the encode and decode work on the critical path, from the codec speed measured
  in this process (one thread, no MPI; median of at least 5 calls and 0.2 s) at that size:
  allgather ``enc(n) + K dec(n)``; allreduce ``(K-1) enc(n/K) + (K-1) dec(n/K) + enc(n/K) +
  K dec(n/K)``; parameter server (the root) ``enc(n) + (K-1) dec(n) + enc(n) + dec(n)``;
  float32 Allreduce 0 (the additions are ignored);
- bytes: the payload counted by :class:`qsgd_codec.mpi.CallStats` (per rank, logical; full-duplex
  links, each rank on its own link, no contention); for the float32 Allreduce the
  bandwidth-optimal ring ``2 (K-1)/K * 4n`` each way;
- latency: ``alpha`` = 10 us per step of a log-depth collective, ``c`` collectives per call
  (float32: 1; allgather: 3; allreduce and parameter server: 5, counting the small status
  exchanges).

The model leaves out overlap of codec work with communication (the paper double-buffers),
the cost of summing, and congestion; codec speeds are those of the backend this run used.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SETTINGS = {
    "8bit-b512": dict(bits=8, bucket_size=512),
    "4bit-b512": dict(bits=4, bucket_size=512),
    "2bit-b128": dict(bits=2, bucket_size=128),
    "elias-4bit-b512": dict(bits=4, bucket_size=512, coding="elias"),
}
OPS = ("allgather", "allreduce", "parameter_server")
COLLECTIVE_CALLS = {"float32": 1, "allgather": 3, "allreduce": 5, "parameter_server": 5}
ALPHA = 10e-6
LINKS_GBIT = (1, 10, 100)


def reps_for(n, reps):
    return max(1, min(reps, (1 << 22) // max(n, 1)))


def data(n, rank):
    rng = np.random.default_rng([n, rank])
    return (rng.standard_normal(n) * np.exp(rng.uniform(-1, 1, n))).astype(np.float32)


# ----------------------------------------------------------------------------- MPI worker


def worker(args):
    from mpi4py import MPI

    from qsgd_codec import mpi as qm

    comm = MPI.COMM_WORLD
    rank, k = comm.Get_rank(), comm.Get_size()
    rows = []

    def timed(call, reps):
        times, stats = [], None
        for i in range(reps + 1):  # the first call warms up
            comm.Barrier()
            t = time.perf_counter()
            stats = call()
            t = comm.allreduce(time.perf_counter() - t, op=MPI.MAX)
            if i:
                times.append(t)
        return float(np.median(times)), stats

    for n in args.sizes:
        x = data(n, rank)
        reps = reps_for(n, args.reps)
        y = np.empty_like(x)
        t, _ = timed(lambda: comm.Allreduce(x, y, op=MPI.SUM), reps)
        per_rank = 2 * (k - 1) * 4 * n // k
        rows.append(
            {
                "ranks": k,
                "n": n,
                "setting": "float32",
                "op": "float32",
                "seconds": t,
                "bytes_sent": per_rank,
                "bytes_received": per_rank,
                "reps": reps,
            }
        )
        for setting in args.settings:
            kw = SETTINGS[setting]
            for op in OPS:
                fn = getattr(qm, op)

                def call(fn=fn, kw=kw):
                    stats = qm.Stats()
                    fn(x, stats=stats, **kw)
                    return stats.last

                t, last = timed(call, reps)
                per = comm.gather(last.as_dict(), root=0)
                if rank == 0:
                    rows.append(
                        {
                            "ranks": k,
                            "n": n,
                            "setting": setting,
                            "op": op,
                            "seconds": t,
                            "bytes_sent": max(p["bytes_sent"] for p in per),
                            "bytes_received": max(p["bytes_received"] for p in per),
                            "total_bytes_sent": per[0]["total_bytes_sent"],
                            "encode_s": max(p["encode_s"] for p in per),
                            "comm_s": max(p["comm_s"] for p in per),
                            "decode_s": max(p["decode_s"] for p in per),
                            "reps": reps,
                        }
                    )
        if rank == 0:
            print(f"  K={k} n=2^{int(math.log2(n))} done", flush=True)
    if rank == 0:
        Path(args.worker_out).write_text(json.dumps(rows))


# ----------------------------------------------------------------------------- codec speed


def codec_speed(sizes, settings, reps):
    """Median single-process encode and decode seconds of n float32 values, per setting."""
    import qsgd_codec

    try:  # one thread: one rank per core, and robust to other jobs on a shared machine
        import numba

        numba.set_num_threads(1)
    except (ImportError, ValueError):
        pass
    speeds = {}
    for setting in settings:
        kw = SETTINGS[setting]
        for n in sorted(
            set(sizes) | {max(1, s // 2) for s in sizes} | {max(1, s // 4) for s in sizes}
        ):
            x = data(n, 99)
            enc, dec = [], []
            msg = qsgd_codec.encode(x, seed=1, **kw)  # warm-up (JIT, caches)
            qsgd_codec.decode(msg)
            start = time.perf_counter()
            # at least `reps` repetitions and 0.2 s, at most 200: medians on a shared machine
            while len(enc) < reps or (time.perf_counter() - start < 0.2 and len(enc) < 200):
                t = time.perf_counter()
                msg = qsgd_codec.encode(x, seed=len(enc), **kw)
                enc.append(time.perf_counter() - t)
                t = time.perf_counter()
                qsgd_codec.decode(msg)
                dec.append(time.perf_counter() - t)
            speeds[(setting, n)] = (float(np.median(enc)), float(np.median(dec)), len(msg))
    return speeds


def codec_time(op, k, n, enc, dec):
    e = lambda m: enc(max(1, m))  # noqa: E731
    d = lambda m: dec(max(1, m))  # noqa: E731
    if op == "allgather":
        return e(n) + k * d(n)
    if op == "allreduce":
        c = n // k
        return (k - 1) * e(c) + (k - 1) * d(c) + e(c) + k * d(c)
    if op == "parameter_server":
        return 2 * e(n) + k * d(n)
    return 0.0


def model(rows, speeds):
    def lookup(setting, which):
        def f(m):
            # the measured size closest to m (sizes are powers of two, chunks n/2 and n/4)
            sizes = sorted(n for (s, n) in speeds if s == setting)
            near = min(sizes, key=lambda s: abs(math.log2(s) - math.log2(m)))
            return speeds[(setting, near)][which] * m / near

        return f

    for row in rows:
        k, n, op = row["ranks"], row["n"], row["op"]
        tc = (
            0.0
            if op == "float32"
            else codec_time(op, k, n, lookup(row["setting"], 0), lookup(row["setting"], 1))
        )
        row["model_codec_s"] = tc
        wire = max(row["bytes_sent"], row["bytes_received"])
        latency = ALPHA * COLLECTIVE_CALLS[op] * math.ceil(math.log2(k))
        for g in LINKS_GBIT:
            row[f"model_{g}gbit_s"] = tc + wire * 8 / (g * 1e9) + latency
    return rows


# ----------------------------------------------------------------------------- report


def fmt_s(t):
    return f"{t * 1e3:.2f}" if t < 10 else f"{t * 1e3:.0f}"


def write_report(rows, speeds, args, env_note):
    out = args.results
    out.mkdir(parents=True, exist_ok=True)
    base = {(r["ranks"], r["n"]): r for r in rows if r["op"] == "float32"}
    lines = [
        "# MPI collectives: measured and modeled time",
        "",
        f"Command: `{' '.join(args.command)}`.  {env_note}",
        "",
        "Times in milliseconds: the slowest rank, median of repetitions (fewer "
        "repetitions for large sizes).  `x f32` = the plain float32 MPI Allreduce's time "
        "divided by this row's (above 1: faster than float32).  The model (see the "
        "script's docstring): T = codec time measured in one process on one thread + "
        "bytes / link bandwidth + 10 us x collectives x ceil(log2 K).",
        "",
    ]
    import qsgd_codec

    lines += [
        "## Codec speed (this process, one rank, median)",
        "",
        f"Threads: Numba {_numba_threads()}.",
        "",
        "| setting | n | encode MB/s | decode MB/s | message bytes | bits/value |",
        "|---|---|---|---|---|---|",
    ]
    for (setting, n), (enc, dec, size) in sorted(speeds.items()):
        if n in args.sizes:
            lines.append(
                f"| {setting} | 2^{int(math.log2(n))} | {4 * n / enc / 1e6:.0f} | "
                f"{4 * n / dec / 1e6:.0f} | {size:,} | {8 * size / n:.2f} |"
            )
    for k in sorted({r["ranks"] for r in rows}):
        lines += [
            "",
            f"## {k} ranks",
            "",
            "| n | setting | collective | bytes/rank | measured ms | x f32 | model 1 Gb/s "
            "| x f32 | model 10 Gb/s | x f32 | model 100 Gb/s | x f32 |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            if r["ranks"] != k:
                continue
            b = base[(k, r["n"])]
            cells = [
                f"2^{int(math.log2(r['n']))}",
                r["setting"],
                "MPI Allreduce" if r["op"] == "float32" else r["op"],
                f"{max(r['bytes_sent'], r['bytes_received']):,}",
                fmt_s(r["seconds"]),
                f"{b['seconds'] / r['seconds']:.2f}",
            ]
            for g in LINKS_GBIT:
                key = f"model_{g}gbit_s"
                cells += [fmt_s(r[key]), f"{b[key] / r[key]:.2f}"]
            lines.append("| " + " | ".join(cells) + " |")
    (out / "mpi.md").write_text("\n".join(lines) + "\n")
    (out / "mpi.json").write_text(
        json.dumps(
            {
                "command": args.command,
                "note": env_note,
                "backend": _backend_name(),
                "qsgd_codec": qsgd_codec.__version__,
                "alpha_s": ALPHA,
                "links_gbit": LINKS_GBIT,
                "codec_speed": [
                    {"setting": s, "n": n, "encode_s": e, "decode_s": d, "message_bytes": m}
                    for (s, n), (e, d, m) in sorted(speeds.items())
                ],
                "rows": rows,
            },
            indent=1,
        )
    )
    plot(rows, out / "mpi.png")


def _numba_threads():
    try:
        import numba

        return numba.get_num_threads()
    except Exception:  # informational only
        return "?"


def _backend_name():
    try:
        from qsgd_codec import api

        backend = api._backend()
        return getattr(backend, "__name__", str(backend))
    except Exception:  # informational only
        return "unknown"


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted({r["ranks"] for r in rows})
    fig, axes = plt.subplots(2, len(ks), figsize=(5.5 * len(ks), 8), squeeze=False)
    for col, k in enumerate(ks):
        for row_i, (key, title) in enumerate(
            [("seconds", "measured (shared memory)"), ("model_1gbit_s", "modeled, 1 Gbit/s links")]
        ):
            ax = axes[row_i][col]
            series = {}
            for r in rows:
                if r["ranks"] == k:
                    name = (
                        "float32 MPI Allreduce"
                        if r["op"] == "float32"
                        else f"{r['op']} {r['setting']}"
                    )
                    series.setdefault(name, []).append((r["n"], r[key]))
            for name, pts in series.items():
                pts.sort()
                ax.plot(
                    [p[0] for p in pts],
                    [p[1] * 1e3 for p in pts],
                    marker=".",
                    label=name,
                    linewidth=2.5 if "float32" in name else 1.2,
                    color="black" if "float32" in name else None,
                )
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("float32 values per rank")
            ax.set_ylabel("ms per call")
            ax.set_title(f"{k} ranks, {title}")
            ax.grid(True, alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--full",
        action="store_true",
        help="2^10..2^24, every power of 2, "
        "all settings (long: tens of minutes with the reference codec)",
    )
    parser.add_argument("--ranks", default="2,4")
    parser.add_argument("--sizes", default=None, help="comma-separated log2 sizes")
    parser.add_argument("--settings", default=None, help=f"comma-separated of {list(SETTINGS)}")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--timeout", type=int, default=1800, help="per mpiexec launch (s)")
    parser.add_argument("--results", default=str(RESULTS), help="output folder")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sizes:
        args.sizes = [1 << int(v) for v in args.sizes.split(",")]
    else:
        args.sizes = [1 << e for e in (range(10, 25) if args.full else range(10, 23, 2))]
    if args.settings:
        args.settings = args.settings.split(",")
    else:
        args.settings = list(SETTINGS) if args.full else ["8bit-b512", "4bit-b512"]
    if args.worker:
        return worker(args)
    args.results = Path(args.results)

    from qsgd_codec import mpi as qm

    args.command = ["python", "benchmarks/bench_mpi.py", *sys.argv[1:]]
    mpiexec = Path(sys.executable).parent / "mpiexec"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in [int(v) for v in args.ranks.split(",")]:
            out = Path(tmp) / f"k{k}.json"
            cmd = [
                str(mpiexec),
                "-n",
                str(k),
                sys.executable,
                "-m",
                "mpi4py",
                __file__,
                "--worker",
                "--worker-out",
                str(out),
                "--reps",
                str(args.reps),
                "--sizes",
                ",".join(str(int(math.log2(n))) for n in args.sizes),
                "--settings",
                ",".join(args.settings),
            ]
            env = dict(os.environ, **qm.recommended_env(k))
            env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
            print(f"mpiexec -n {k} ...", flush=True)
            subprocess.run(cmd, check=True, cwd=ROOT, env=env, timeout=args.timeout)
            rows += json.loads(out.read_text())
    print("codec speed ...", flush=True)
    speeds = codec_speed(args.sizes, args.settings, args.reps)
    rows = model(rows, speeds)
    cores = qm.available_cores()
    note = (
        f"Machine: {cores} cores, shared with other jobs while this ran (noisy); MPI "
        f"{_mpi_version()}; codec backend: {_backend_name()}; ranks > cores ran with "
        f"MPIR_CVAR_ENABLE_HEAVY_YIELD=1 and one thread per rank."
    )
    write_report(rows, speeds, args, note)
    print(f"wrote {args.results / 'mpi.md'}, mpi.json, mpi.png")
    return 0


def _mpi_version():
    out = subprocess.run(
        [str(Path(sys.executable).parent / "mpichversion")], capture_output=True, text=True
    )
    for line in out.stdout.splitlines():
        if "Version" in line:
            return "MPICH " + line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    sys.exit(main())
