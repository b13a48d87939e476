"""Codec speed of this checkout against another git revision, timed in the same run.

    .venv/bin/python benchmarks/compare_revisions.py --against HEAD~1
    .venv/bin/python benchmarks/compare_revisions.py --against main --rounds 7 --size 16777216

The other revision is checked out into a temporary git worktree.  Each round runs one fresh
process per tree, in alternating order (old, new, new, old, ...), each with its own numba
cache (warmed up before the first timed round).  A process imports ``qsgd_codec`` from its
tree, times ``x.copy()`` and, for each setting, ``encode`` and ``decode(out=...)`` through the
public API only (so any revision works), and reports the medians of its repetitions.  Every
figure is a ratio to the same process's copy time, so a machine that speeds up or slows down
between processes moves both trees alike.  The report gives, per setting and operation, the
median over rounds of each tree's ratio and their quotient (this tree / other): 1.00 means
no change, above 1 a slowdown.  Beside it, the median (and range) of the per-round
quotients, each from two processes that ran back to back.

Results: ``benchmarks/results/compare_revisions.md`` and ``.json`` (``--out`` to change).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

SETTINGS = {
    "dense 8-bit, d=512, max": dict(levels=127, bucket_size=512, scale="max", coding="dense"),
    "dense 4-bit, d=512, max": dict(levels=7, bucket_size=512, scale="max", coding="dense"),
    "elias s=91, d=8192, l2": dict(levels=91, bucket_size=8192, scale="l2", coding="elias"),
    "elias s=1, d=8192, l2": dict(levels=1, bucket_size=8192, scale="l2", coding="elias"),
}

# Runs in a child process with PYTHONPATH set to one tree: public API only.
CHILD = r"""
import json, sys, time
import numpy as np
import qsgd_codec
settings, n, reps = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
out = np.empty_like(x)

def median_time(fn):
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))

result = {"module": qsgd_codec.__file__, "copy": median_time(lambda: x.copy()), "ops": {}}
for name, kw in settings.items():
    data = qsgd_codec.encode(x, seed=1, **kw)
    result["ops"][name] = {
        "encode": median_time(lambda: qsgd_codec.encode(x, seed=1, **kw)),
        "decode_out": median_time(lambda: qsgd_codec.decode(data, out=out)),
        "bytes": len(data),
    }
print(json.dumps(result))
"""


def _worktree(rev, where):
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(where), rev],
        check=True,
        capture_output=True,
        text=True,
    )
    return where


def _run(tree, cache, size, reps):
    env = dict(os.environ, PYTHONPATH=str(tree), NUMBA_CACHE_DIR=str(cache))
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(SETTINGS), str(size), str(reps)],
        env=env,
        capture_output=True,
        text=True,
        cwd=tree,
    )
    if proc.returncode != 0:
        raise SystemExit(f"benchmark process for {tree} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if not result["module"].startswith(str(tree)):
        raise SystemExit(f"{tree}: imported qsgd_codec from {result['module']}")
    return result


def _ratios(results):
    """{setting: {op: [op time / copy time, one per round]}}"""
    table = {}
    for r in results:
        for name, ops in r["ops"].items():
            for op in ("encode", "decode_out"):
                table.setdefault(name, {}).setdefault(op, []).append(ops[op] / r["copy"])
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", default="HEAD", help="the other revision (default HEAD)")
    parser.add_argument("--rounds", type=int, default=5, help="processes per tree (default 5)")
    parser.add_argument("--size", type=int, default=1 << 24, help="float32 values (2^24)")
    parser.add_argument("--reps", type=int, default=7, help="timed calls per process")
    parser.add_argument(
        "--out", default=str(RESULTS / "compare_revisions"), help="output path without suffix"
    )
    args = parser.parse_args(argv)
    rev = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", args.against],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="qsgd-compare-") as tmp:
        tmp = Path(tmp)
        other = _worktree(args.against, tmp / "other")
        trees = {"this": ROOT, "other": other}
        caches = {name: tmp / f"cache-{name}" for name in trees}
        try:
            for name, tree in trees.items():  # compile (or load) kernels once, untimed
                _run(tree, caches[name], 1 << 16, 1)
            results = {name: [] for name in trees}
            start = time.time()
            for k in range(args.rounds):
                order = ["other", "this"] if k % 2 == 0 else ["this", "other"]
                for name in order:
                    results[name].append(_run(trees[name], caches[name], args.size, args.reps))
                print(
                    f"round {k + 1}/{args.rounds} done ({time.time() - start:.0f} s)",
                    file=sys.stderr,
                )
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(other)],
                capture_output=True,
            )
    this, that = _ratios(results["this"]), _ratios(results["other"])
    rows = []
    for name in SETTINGS:
        for op in ("encode", "decode_out"):
            a, b = float(np.median(this[name][op])), float(np.median(that[name][op]))
            # round k ran both trees back to back: its quotient pairs them in time
            paired = np.array(this[name][op]) / np.array(that[name][op])
            rows.append(
                {
                    "setting": name,
                    "op": op,
                    "this_vs_copy": a,
                    "other_vs_copy": b,
                    "this_over_other": a / b,
                    "paired_median": float(np.median(paired)),
                    "paired_min": float(paired.min()),
                    "paired_max": float(paired.max()),
                    "bytes_equal": results["this"][0]["ops"][name]["bytes"]
                    == results["other"][0]["ops"][name]["bytes"],
                }
            )
    copy_mbs = {
        name: float(np.median([4 * args.size / r["copy"] / 1e6 for r in res]))
        for name, res in results.items()
    }
    meta = {
        "against": f"{args.against} ({rev})",
        "rounds": args.rounds,
        "size": args.size,
        "reps": args.reps,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "loadavg_start": os.getloadavg()[0],
        "copy_mb_per_s": copy_mbs,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [
        f"# This checkout against {meta['against']}",
        "",
        f"{meta['date']}; {meta['cpu']}, {meta['cores']} cores; {args.size} float32, "
        f"{args.rounds} alternating processes per tree, median of {args.reps} calls each; "
        f"`x.copy()` {copy_mbs['this']:,.0f} MB/s (this) and {copy_mbs['other']:,.0f} MB/s "
        f"(other).  Command: `.venv/bin/python benchmarks/compare_revisions.py --against "
        f"{args.against} --rounds {args.rounds}`.",
        "",
        "| setting | operation | this / copy | other / copy | this / other | paired rounds: "
        "median (min-max) | same size |",
        "|---|---|--:|--:|--:|--:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['setting']} | {r['op'].replace('_out', '(out=)')} | "
            f"{r['this_vs_copy']:.3f} | {r['other_vs_copy']:.3f} | "
            f"{r['this_over_other']:.3f} | {r['paired_median']:.3f} "
            f"({r['paired_min']:.2f}-{r['paired_max']:.2f}) | "
            f"{'yes' if r['bytes_equal'] else 'NO'} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
