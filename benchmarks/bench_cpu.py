"""Throughput, size and latency of the Numba CPU codec, next to the baselines it replaces.

    python benchmarks/bench_cpu.py                 # full run (a few minutes)
    python benchmarks/bench_cpu.py --quick         # 2^20 only, no cold-compile runs

Writes benchmarks/results/cpu.json (every number, plus the machine) and cpu.md (tables).
Speeds are MB/s of float32 input (4 bytes per value), medians of --repeat timed calls after
a warm-up call; every codec figure is also given as a ratio to baselines timed in the same
run, in the same process:

- ``copy``: ``x.copy()`` (allocates, like encode/decode without ``out=``);
- ``copyto``: ``numpy.copyto(y, x)`` into an existing array (like ``out=``);
- the NumPy quantizer of benchmarks/numpy_baseline.py (what a user would otherwise write);
- zstd level 1 on the int8 symbols (the signed levels) of the same quantization.

Sizes: bits per coordinate of each message against the empirical entropy of its symbols
(plus 32/d for the scale) and against the Theorem 3.2 bound of the paper.  Latency: the first
call (import + encode + decode) in a new process with an empty numba cache (cold: compiles)
and with the cache filled (cached), and ``qsgd_codec.warmup()`` both ways.  Memory: the
peak Python-visible allocation of encode and decode (tracemalloc) against the output size.
"""

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numba
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy_baseline  # noqa: E402

import qsgd_codec  # noqa: E402
from qsgd_codec import cpu  # noqa: E402

MB = 1e6

# (name, encode keywords); every config is timed at every size and thread count
CONFIGS = [
    ("dense 8-bit, d=512, max", dict(bits=8, bucket_size=512, scale="max")),
    ("dense 4-bit, d=512, max", dict(bits=4, bucket_size=512, scale="max")),
    ("dense 2-bit, d=128, max", dict(bits=2, bucket_size=128, scale="max")),
    ("dense 4-bit, d=512, l2", dict(bits=4, bucket_size=512, scale="l2")),
    ("dense 3-bit, d=512, max", dict(bits=3, bucket_size=512, scale="max")),
    (
        "elias s=sqrt(d)=91, d=8192, l2",
        dict(levels=91, bucket_size=8192, scale="l2", coding="elias"),
    ),
    ("elias s=1, d=8192, l2", dict(levels=1, bucket_size=8192, scale="l2", coding="elias")),
    ("elias 4-bit, d=512, max", dict(bits=4, bucket_size=512, scale="max", coding="elias")),
]
HEADLINE = ["dense 8-bit, d=512, max", "dense 4-bit, d=512, max"]
ELIAS_DENSE = "elias s=sqrt(d)=91, d=8192, l2"
ELIAS_SPARSE = "elias s=1, d=8192, l2"


def median_time(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2], times[0]


def machine():
    info = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "qsgd_codec": qsgd_codec.__version__,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "numba_threads": numba.config.NUMBA_NUM_THREADS,
        "crc32": cpu.CRC_IMPLEMENTATION,
        "date": datetime.datetime.now().isoformat(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        info["load_average_start"] = os.getloadavg()
    except OSError:
        pass
    return info


def theorem_32_bits_per_coord(s, d):
    """The paper's Theorem 3.2 bound on expected bits of one bucket, per coordinate."""
    k = s * (s + math.sqrt(d))
    return ((3 + 1.5 * math.log2(2 * (s * s + d) / k)) * k + 32) / d


def entropy_bits(symbols):
    _, counts = np.unique(symbols, return_counts=True)
    p = counts / symbols.size
    return float(-(p * np.log2(p)).sum())


def symbols_of(x, kw):
    """The signed levels of an encoding, as int8 (through the dense 8-bit body when s <= 127:
    the same quantization, since levels depend only on (seed, index, value, scale, s))."""
    levels = kw.get("levels") or (1 << (kw["bits"] - 1)) - 1
    if levels > 127:
        return None
    dense = dict(kw, coding="dense", levels=levels)
    dense.pop("bits", None)
    message = qsgd_codec.encode(x, **dense)
    header_length = 48 + 8 * x.ndim
    nb = -(-x.size // dense["bucket_size"])
    if (levels).bit_length() + 1 != 8:  # widths other than 8: decode the levels instead
        y = qsgd_codec.decode(message).astype(np.float64)
        scales = np.frombuffer(message, "<f4", nb, header_length).astype(np.float64)
        r = np.repeat(scales, dense["bucket_size"])[: x.size]
        return np.rint(np.divide(y * levels, r, out=np.zeros_like(y), where=r > 0)).astype(np.int8)
    return np.frombuffer(message, np.int8, x.size, header_length + 4 * nb).copy()


def bench_size(n, args, results):
    rng = np.random.default_rng(20171204)
    x = rng.standard_normal(n).astype(np.float32)
    nbytes = x.nbytes
    row = {"n": n, "input_bytes": nbytes}
    y = np.empty_like(x)
    t, _ = median_time(lambda: x.copy(), args.repeat)
    row["copy_mbs"] = nbytes / t / MB
    t, _ = median_time(lambda: np.copyto(y, x), args.repeat)
    row["copyto_mbs"] = nbytes / t / MB

    # the NumPy quantizer a user would write
    base = {}
    for bits in (8, 4):
        enc_t, _ = median_time(
            lambda: numpy_baseline.encode_dense(x, bits=bits), max(1, args.repeat // 3)
        )
        scales, packed = numpy_baseline.encode_dense(x, bits=bits)
        dec_t, _ = median_time(
            lambda: numpy_baseline.decode_dense(scales, packed, n, bits=bits),
            max(1, args.repeat // 3),
        )
        base[f"{bits}-bit"] = {"encode_mbs": nbytes / enc_t / MB, "decode_mbs": nbytes / dec_t / MB}
    row["numpy_baseline"] = base

    threads_all = numba.config.NUMBA_NUM_THREADS
    row["codec"] = {}
    for name, kw in CONFIGS:
        entry = {}
        message = qsgd_codec.encode(x, **kw)
        buf = np.empty(qsgd_codec.max_encoded_size(x.shape, **kw), dtype=np.uint8)
        entry["message_bytes"] = len(message)
        entry["bits_per_coord"] = 8 * len(message) / n
        for threads in sorted({1, threads_all}):
            numba.set_num_threads(threads)
            r = {}
            t, _ = median_time(lambda: qsgd_codec.encode(x, **kw), args.repeat)
            r["encode_mbs"] = nbytes / t / MB
            t, _ = median_time(lambda: qsgd_codec.encode(x, out=buf, **kw), args.repeat)
            r["encode_out_mbs"] = nbytes / t / MB
            t, _ = median_time(lambda: qsgd_codec.decode(message), args.repeat)
            r["decode_mbs"] = nbytes / t / MB
            t, _ = median_time(lambda: qsgd_codec.decode(message, out=y), args.repeat)
            r["decode_out_mbs"] = nbytes / t / MB
            r["encode_time_vs_copy"] = row["copy_mbs"] / r["encode_mbs"]
            r["encode_out_time_vs_copyto"] = row["copyto_mbs"] / r["encode_out_mbs"]
            r["decode_time_vs_copy"] = row["copy_mbs"] / r["decode_mbs"]
            r["decode_out_time_vs_copyto"] = row["copyto_mbs"] / r["decode_out_mbs"]
            bits = kw.get("bits")
            if kw.get("coding", "dense") == "dense" and bits in (4, 8):
                r["encode_vs_numpy_baseline"] = r["encode_mbs"] / base[f"{bits}-bit"]["encode_mbs"]
                r["decode_vs_numpy_baseline"] = r["decode_mbs"] / base[f"{bits}-bit"]["decode_mbs"]
            entry[f"threads_{threads}"] = r
        numba.set_num_threads(threads_all)

        # sizes: entropy of the symbols, Theorem 3.2, zstd level 1 on the int8 symbols
        sym = symbols_of(x, kw)
        if sym is not None:
            d = kw["bucket_size"]
            s = kw.get("levels") or (1 << (kw["bits"] - 1)) - 1
            entry["entropy_bits_per_coord"] = entropy_bits(sym) + 32 / d
            entry["size_vs_entropy"] = entry["bits_per_coord"] / entry["entropy_bits_per_coord"]
            if kw["scale"] == "l2":
                entry["theorem_32_bits_per_coord"] = theorem_32_bits_per_coord(s, d)
            if kw.get("coding") == "elias":
                entry["zstd1"] = zstd_row(sym, d, nbytes, args.repeat)
        row["codec"][name] = entry
    results["sizes"].append(row)


def zstd_row(sym, d, input_bytes, repeat):
    try:
        import zstandard
    except ImportError:
        return None
    raw = sym.tobytes()
    cctx = zstandard.ZstdCompressor(level=1)
    dctx = zstandard.ZstdDecompressor()
    packed = cctx.compress(raw)
    tc, _ = median_time(lambda: cctx.compress(raw), repeat)
    td, _ = median_time(lambda: dctx.decompress(packed), repeat)
    return {
        "bits_per_coord": 8 * len(packed) / sym.size + 32 / d,
        "compress_mbs_of_float32_input": input_bytes / tc / MB,
        "decompress_mbs_of_float32_input": input_bytes / td / MB,
        "compress_mbs_of_symbols": len(raw) / tc / MB,
    }


FIRST_CALL = r"""
import time
t0 = time.perf_counter()
import numpy as np
import qsgd_codec
t1 = time.perf_counter()
x = np.random.default_rng(0).standard_normal(1 << 20).astype(np.float32)
t2 = time.perf_counter()
m = qsgd_codec.encode(x)
t3 = time.perf_counter()
qsgd_codec.decode(m)
t4 = time.perf_counter()
print((t1 - t0) + (t4 - t2), t1 - t0, t3 - t2, t4 - t3)
"""

WARMUP = r"""
import time
t0 = time.perf_counter()
import qsgd_codec
timings = qsgd_codec.warmup()
print(time.perf_counter() - t0, timings["total"])
"""


def run_fresh(code, cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    )
    return [float(v) for v in out.stdout.split()]


def latency(args):
    """First call in a new process (import + encode + decode of 2^20 float32, default
    parameters), cold (empty numba cache) and cached; warmup() cold and cached."""
    res = {}
    with tempfile.TemporaryDirectory() as cache:
        cold = run_fresh(FIRST_CALL, cache)
        cached = sorted(run_fresh(FIRST_CALL, cache) for _ in range(5))[2]
        res["first_call_cold_s"] = cold[0]
        res["first_call_cached_s"] = cached[0]
        res["first_call_cached_parts_s"] = {
            "import": cached[1],
            "encode": cached[2],
            "decode": cached[3],
        }
    if not args.quick:
        with tempfile.TemporaryDirectory() as cache:
            res["warmup_cold_s"] = run_fresh(WARMUP, cache)[0]
            res["warmup_cached_s"] = sorted(run_fresh(WARMUP, cache)[0] for _ in range(3))[1]
    # what numba itself costs before any kernel runs (import, then its first dispatch)
    res["numba_import_s"] = run_fresh(
        "import time; t=time.perf_counter(); import numba; print(time.perf_counter()-t)",
        tempfile.gettempdir(),
    )[0]
    return res


def memory(n):
    x = np.random.default_rng(1).standard_normal(n).astype(np.float32)
    res = {}
    for name, kw in (
        ("dense 4-bit", dict(bits=4)),
        ("elias s=91, d=8192", dict(levels=91, bucket_size=8192, scale="l2", coding="elias")),
    ):
        message = qsgd_codec.encode(x, **kw)
        out = np.empty_like(x)
        qsgd_codec.decode(message, out=out)
        tracemalloc.start()
        qsgd_codec.encode(x, **kw)
        enc_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        qsgd_codec.decode(message)
        dec_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        qsgd_codec.decode(message, out=out)
        dec_out_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        res[name] = {
            "n": n,
            "message_bytes": len(message),
            "output_bytes": x.nbytes,
            "encode_peak_bytes": enc_peak,
            "decode_peak_bytes": dec_peak,
            "decode_out_peak_bytes": dec_out_peak,
        }
    return res


def fmt_rate(v):
    return f"{v:,.0f}"


def markdown(results):
    m = results["machine"]
    lines = [
        f"# CPU codec benchmark ({m.get('cpu', 'cpu')}, {m['cpu_count']} cores)",
        "",
        f"{m['date'][:19]}, Python {m['python']}, NumPy {m['numpy']}, Numba "
        f"{m['numba']}, CRC-32: {m['crc32']}.  Load average at start "
        f"{m.get('load_average_start')}, at end {m.get('load_average_end')} "
        f"(other work on the machine makes every figure noisier).",
        "",
        "MB/s of float32 input (median); `copy` = `x.copy()`, `copyto` = "
        "`np.copyto(y, x)`; ratios < 1 mean faster than the baseline.",
        "",
    ]
    for row in results["sizes"]:
        n = row["n"]
        lines += [
            f"## n = 2^{int(math.log2(n))} float32 ({row['input_bytes'] / 2**20:.0f} MiB)",
            "",
            f"NumPy copy {fmt_rate(row['copy_mbs'])} MB/s, copyto "
            f"{fmt_rate(row['copyto_mbs'])} MB/s.  NumPy baseline quantizer: "
            + ", ".join(
                f"{k} encode {fmt_rate(v['encode_mbs'])} / decode {fmt_rate(v['decode_mbs'])} MB/s"
                for k, v in row["numpy_baseline"].items()
            )
            + ".",
            "",
            "| config | threads | encode | encode(out=) | decode | decode(out=) | "
            "enc time / copy | dec time / copy | dec(out=) time / copyto | "
            "enc vs NumPy | bits/coord |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, entry in row["codec"].items():
            for key in sorted(k for k in entry if k.startswith("threads_")):
                r = entry[key]
                vs = r.get("encode_vs_numpy_baseline")
                lines.append(
                    f"| {name} | {key.split('_')[1]} | {fmt_rate(r['encode_mbs'])} | "
                    f"{fmt_rate(r['encode_out_mbs'])} | {fmt_rate(r['decode_mbs'])} | "
                    f"{fmt_rate(r['decode_out_mbs'])} | {r['encode_time_vs_copy']:.2f} | "
                    f"{r['decode_time_vs_copy']:.2f} | {r['decode_out_time_vs_copyto']:.2f} | "
                    f"{'' if vs is None else f'{vs:.0f}x'} | {entry['bits_per_coord']:.3f} |"
                )
        lines += [
            "",
            "| config | bits/coord | entropy + 32/d | ratio | Theorem 3.2 | "
            "zstd-1 bits/coord | zstd-1 MB/s (compress / decompress) |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, entry in row["codec"].items():
            if "entropy_bits_per_coord" not in entry:
                continue
            z = entry.get("zstd1")
            th = entry.get("theorem_32_bits_per_coord")
            lines.append(
                f"| {name} | {entry['bits_per_coord']:.3f} | "
                f"{entry['entropy_bits_per_coord']:.3f} | {entry['size_vs_entropy']:.2f} | "
                f"{'' if th is None else f'{th:.3f}'} | "
                f"{'' if not z else format(z['bits_per_coord'], '.3f')} | "
                + (
                    ""
                    if not z
                    else f"{fmt_rate(z['compress_mbs_of_float32_input'])} / "
                    f"{fmt_rate(z['decompress_mbs_of_float32_input'])}"
                )
                + " |"
            )
        lines.append("")
    lat = results.get("latency")
    if lat:
        lines += [
            "## First call in a new process",
            "",
            f"- import + encode + decode of 2^20 float32, cached numba kernels: "
            f"{lat['first_call_cached_s']:.2f} s (import "
            f"{lat['first_call_cached_parts_s']['import']:.2f}, first encode "
            f"{lat['first_call_cached_parts_s']['encode']:.2f}, first decode "
            f"{lat['first_call_cached_parts_s']['decode']:.2f}); importing numba alone: "
            f"{lat['numba_import_s']:.2f} s",
            f"- the same with an empty cache (compiles what it uses): "
            f"{lat['first_call_cold_s']:.1f} s",
        ]
        if "warmup_cold_s" in lat:
            lines.append(
                f"- `qsgd_codec.warmup()` (every kernel): cold "
                f"{lat['warmup_cold_s']:.1f} s, cached {lat['warmup_cached_s']:.2f} s"
            )
        lines.append("")
    mem = results.get("memory")
    if mem:
        lines += [
            "## Memory (tracemalloc peak of one call)",
            "",
            "| config | n | message | encode peak | decode peak | decode(out=) peak |",
            "|---|---|---|---|---|---|",
        ]
        for name, r in mem.items():
            lines.append(
                f"| {name} | {r['n']} | {r['message_bytes']:,} | "
                f"{r['encode_peak_bytes']:,} | {r['decode_peak_bytes']:,} | "
                f"{r['decode_out_peak_bytes']:,} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2^20 only, no cold warm-up run")
    parser.add_argument(
        "--sizes", type=int, nargs="*", default=None, help="log2 of the sizes (default 20 24)"
    )
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--name", default="cpu", help="output file stem")
    args = parser.parse_args(argv)
    sizes = args.sizes or ([20] if args.quick else [20, 24])
    qsgd_codec.warmup()
    results = {"machine": machine(), "sizes": []}
    for k in sizes:
        bench_size(1 << k, args, results)
    results["memory"] = memory(1 << max(sizes))
    results["latency"] = latency(args)
    try:
        results["machine"]["load_average_end"] = os.getloadavg()
    except OSError:
        pass
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / f"{args.name}.md").write_text(markdown(results) + "\n")
    print(markdown(results))


if __name__ == "__main__":
    main()
