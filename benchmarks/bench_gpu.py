"""GPU codec on a real NVIDIA GPU: byte identity with the CPU, and throughput against a copy.

One command, from the repository root, on a machine with a CUDA GPU and numba-cuda:

    .venv/bin/python benchmarks/bench_gpu.py             # the issue's size: 2^26 float32
    .venv/bin/python benchmarks/bench_gpu.py --quick     # 2^22, fewer repetitions
    .venv/bin/python benchmarks/bench_gpu.py --audit-only   # just the PTX audit

Writes benchmarks/results/gpu-<device>.json (every number) and gpu-<device>.md (tables).

What it does, in order:

1. **PTX audit**: compiles every kernel for this GPU's compute capability and lists any fused
   multiply-add, approximate or flush-to-zero instruction (:func:`qsgd_codec.cuda.audit_ptx`;
   it must list none).
2. **Byte identity** on random inputs of ``--identity-n`` values for every dtype (float16,
   bfloat16, float32, float64), both codings and both scale kinds, several bucket sizes and
   levels: the GPU's message must equal ``qsgd_codec.encode`` on the host (the Numba CPU
   backend, itself tested against the reference), and the GPU decoder's values must equal
   the CPU decoder's bit for bit.
3. **Throughput** on ``2^--log2n`` float32 values (standard normal) for each setting of
   ``SETTINGS``: the wall time of ``qsgd_codec.cuda.encode(x, device_output=True)`` (device
   array in, device message out) and of ``qsgd_codec.cuda.decode(message, out=y)`` (device
   message in, device array out), each a full API call including its allocations and its
   final stream synchronisation, against a device-to-device copy of the same array
   (``y.copy_to_device(x)`` plus a synchronisation) timed in the same run, interleaved with
   the codec calls.  Medians over ``--repeats`` calls after warm-up (JIT compilation).  The
   byte identity of these large messages with the CPU's is checked too.

Targets (issue 4; H100, 2^26 float32): dense encode <= 2x the copy, dense decode <= 1.5x,
elias encode and decode <= 5x, every message identical to the CPU's.
"""

import argparse
import json
import math
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"

#: name -> (encode parameters, target ratio for encode, target ratio for decode)
SETTINGS = {
    "dense 8-bit, d=512, max (default)": (dict(bits=8, bucket_size=512, scale="max"), 2.0, 1.5),
    "dense 4-bit, d=512, max": (dict(bits=4, bucket_size=512, scale="max"), 2.0, 1.5),
    "dense 2-bit, d=128, max": (dict(bits=2, bucket_size=128, scale="max"), 2.0, 1.5),
    "dense 4-bit, d=512, l2": (dict(bits=4, bucket_size=512, scale="l2"), 2.0, 1.5),
    "elias 8-bit, d=512, max": (
        dict(bits=8, bucket_size=512, scale="max", coding="elias"),
        5.0,
        5.0,
    ),
    "elias s=sqrt(d)=22, d=512, l2": (
        dict(levels=22, bucket_size=512, scale="l2", coding="elias"),
        5.0,
        5.0,
    ),
    "elias 2-bit, d=8192, l2 (sparse)": (
        dict(bits=2, bucket_size=8192, scale="l2", coding="elias"),
        5.0,
        5.0,
    ),
}

IDENTITY_PARAMS = [
    dict(bits=8, bucket_size=512),
    dict(bits=4, bucket_size=100, scale="l2"),
    dict(bits=2, bucket_size=128),
    dict(levels=11, bucket_size=77, scale="l2"),  # width 5: fields cross bytes
    dict(levels=1000, bucket_size=4096),  # int16 level buffer
    dict(levels=(1 << 24) - 1, bucket_size=333),  # width 25, int32 level buffer
    dict(bits=3, bucket_size=1),
    dict(bits=4, bucket_size=65536, scale="l2"),  # long buckets: many tiles
]


def _median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), times


def _host_input(rng, n, dtype):
    x = rng.standard_normal(n)
    if dtype == "bfloat16":
        import ml_dtypes

        return x.astype(np.float32).astype(ml_dtypes.bfloat16)
    if dtype in ("float16",):
        x = x * 0.01  # keeps l2 scales of long buckets inside float16
    return x.astype(dtype)


def _bits(a):
    return a.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize]).reshape(-1)


def _to_device(x):
    """A device array of x; bfloat16 goes up as bits and is viewed back as bfloat16 (numba
    device arrays carry any NumPy dtype as metadata; the codec reads the bits)."""
    from numba import cuda

    if x.dtype.name == "bfloat16":
        return cuda.to_device(x.view(np.uint16)).view(x.dtype)
    return cuda.to_device(x)


def identity_checks(n, seed, with_reference):
    """GPU vs the CPU path (qsgd_codec.encode / decode on host arrays) and, when
    ``with_reference``, vs qsgd_codec.reference too (it tells which side is wrong)."""
    import qsgd_codec
    from qsgd_codec import cuda as qc, reference, wire

    rng = np.random.default_rng(seed)
    rows = []
    for dtype in ("float32", "float64", "float16", "bfloat16"):
        x = _host_input(rng, n, dtype)
        dx = _to_device(x)
        for params in IDENTITY_PARAMS:
            for coding in ("dense", "elias"):
                p = dict(params, coding=coding, seed=int(rng.integers(0, 2**63)))
                p.setdefault("scale", "max")
                row = dict(dtype=dtype, params=p)
                rows.append(row)
                try:
                    gpu = qc.encode(dx, **p)
                except qsgd_codec.NonFiniteError as exc:
                    gpu = exc
                try:
                    cpu = qsgd_codec.encode(x, **p)
                except qsgd_codec.NonFiniteError as exc:
                    cpu = exc
                except Exception as exc:  # a CPU backend bug must not stop the run
                    cpu = None
                    row["cpu_error"] = repr(exc)
                row["decode_identical"] = True
                if cpu is None:
                    row["identical"] = False
                elif isinstance(gpu, Exception) or isinstance(cpu, Exception):
                    row["refused"] = repr(gpu if isinstance(gpu, Exception) else cpu)
                    row["identical"] = type(gpu) is type(cpu)
                else:
                    row["identical"] = gpu == cpu
                if not isinstance(gpu, Exception):
                    row["bytes"] = len(gpu)
                    expected = qsgd_codec.decode(gpu)
                    got = qc.decode(gpu).copy_to_host()
                    row["decode_identical"] = bool(np.array_equal(_bits(got), _bits(expected)))
                if with_reference:
                    try:
                        ref = reference.encode_array(x, wire.encode_params(**p))
                    except qsgd_codec.NonFiniteError as exc:
                        ref = exc
                    row["gpu_equals_reference"] = (  # a refusal: same class and text
                        type(ref) is type(gpu) and str(ref) == str(gpu)
                        if isinstance(ref, Exception)
                        else ref == gpu
                    )
                    if isinstance(cpu, bytes):
                        row["cpu_equals_reference"] = (
                            False if isinstance(ref, Exception) else ref == cpu
                        )
                print(
                    f"  identity {dtype:8s} {p}: "
                    + ", ".join(f"{k}={v}" for k, v in row.items() if k not in ("dtype", "params")),
                    flush=True,
                )
    return rows


def throughput(n, repeats, seed):
    from numba import cuda

    import qsgd_codec
    from qsgd_codec import cuda as qc

    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n).astype(np.float32)
    dx = cuda.to_device(x)
    dy = cuda.device_array_like(dx)

    def copy():
        dy.copy_to_device(dx)
        cuda.synchronize()

    copy()
    rows = []
    for name, (params, enc_target, dec_target) in SETTINGS.items():
        p = dict(params, seed=12345)
        message = qc.encode(dx, device_output=True, **p)  # warm-up: compiles
        gpu = message.copy_to_host().tobytes()
        cpu_error = None
        try:
            identical = qsgd_codec.encode(x, **p) == gpu
        except Exception as exc:  # a CPU backend bug must not stop the run
            identical, cpu_error = False, repr(exc)
        qc.decode(message, out=dy)
        decoded_identical = bool(
            np.array_equal(
                dy.copy_to_host().view(np.uint32), qsgd_codec.decode(gpu).view(np.uint32)
            )
        )
        copy_s, _ = _median_time(copy, repeats)
        enc_s, enc_all = _median_time(lambda: qc.encode(dx, device_output=True, **p), repeats)
        copy2_s, _ = _median_time(copy, repeats)
        dec_s, dec_all = _median_time(lambda: qc.decode(message, out=dy), repeats)
        copy3_s, _ = _median_time(copy, repeats)
        copy_med = float(np.median([copy_s, copy2_s, copy3_s]))
        row = dict(
            setting=name,
            params=p,
            n=n,
            message_bytes=len(gpu),
            bits_per_coordinate=8 * len(gpu) / n,
            identical=bool(identical),
            cpu_error=cpu_error,
            decode_identical=decoded_identical,
            copy_ms=1e3 * copy_med,
            encode_ms=1e3 * enc_s,
            decode_ms=1e3 * dec_s,
            encode_ratio=enc_s / copy_med,
            decode_ratio=dec_s / copy_med,
            encode_target=enc_target,
            decode_target=dec_target,
            encode_GBps=4 * n / enc_s / 1e9,
            decode_GBps=4 * n / dec_s / 1e9,
            copy_GBps=4 * n / copy_med / 1e9,
            encode_times_ms=[1e3 * t for t in enc_all],
            decode_times_ms=[1e3 * t for t in dec_all],
        )
        row["meets_targets"] = bool(
            row["encode_ratio"] <= enc_target
            and row["decode_ratio"] <= dec_target
            and identical
            and decoded_identical
        )
        rows.append(row)
        print(
            f"  {name}: {row['bits_per_coordinate']:.2f} bits/coord, encode "
            f"{row['encode_ms']:.3f} ms ({row['encode_ratio']:.2f}x copy), decode "
            f"{row['decode_ms']:.3f} ms ({row['decode_ratio']:.2f}x), copy "
            f"{row['copy_ms']:.3f} ms, identical={identical and decoded_identical}",
            flush=True,
        )
    return rows


def markdown(report):
    lines = [
        f"# GPU codec on {report['device']}",
        "",
        f"numba-cuda {report['numba_cuda']}, compute capability {report['cc']}, "
        f"{report['when']}.  Command: `{report['command']}`.",
        "",
    ]
    audit = report.get("ptx_audit")
    if audit is not None:
        lines += [
            f"PTX audit: {'clean' if not audit else f'{len(audit)} problems'} "
            f"(no fused multiply-add, approximate or flush-to-zero instruction).",
            "",
        ]
    if report.get("throughput"):
        n = report["throughput"][0]["n"]
        lines += [
            f"## Throughput, 2^{int(math.log2(n))} float32 values "
            f"(median of {report['repeats']} calls; ratio = time / device-to-device "
            f"copy time in the same run)",
            "",
            "| setting | bits/coord | encode ms | x copy (target) | decode ms | "
            "x copy (target) | copy ms | identical | meets |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in report["throughput"]:
            lines.append(
                f"| {r['setting']} | {r['bits_per_coordinate']:.2f} | {r['encode_ms']:.3f} | "
                f"{r['encode_ratio']:.2f} ({r['encode_target']:g}) | {r['decode_ms']:.3f} | "
                f"{r['decode_ratio']:.2f} ({r['decode_target']:g}) | {r['copy_ms']:.3f} | "
                f"{'yes' if r['identical'] and r['decode_identical'] else 'NO'} | "
                f"{'yes' if r['meets_targets'] else 'no'} |"
            )
        lines.append("")
    if report.get("identity"):
        rows = report["identity"]
        bad = [r for r in rows if not (r["identical"] and r["decode_identical"])]
        refused = [r for r in rows if "refused" in r]
        lines += [
            f"## Byte identity with the CPU ({report['identity_n']} values per input)",
            "",
            f"{len(rows)} (dtype, parameters) combinations checked, {len(bad)} "
            f"different; {len(refused)} refused with NonFiniteError (an l2 scale outside "
            f"the dtype's range).",
            "",
        ]
        for r in bad:
            extra = {
                k: r[k]
                for k in ("gpu_equals_reference", "cpu_equals_reference", "cpu_error")
                if k in r
            }
            lines.append(f"- DIFFERENT: {r['dtype']} {r['params']} {extra}")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--log2n", type=int, default=26, help="throughput size (default 26)")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--identity-n", type=int, default=1 << 20)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--quick", action="store_true", help="2^22 values, 10 repeats, 2^16 identity")
    ap.add_argument("--audit-only", action="store_true")
    ap.add_argument("--skip-audit", action="store_true")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output stem (default benchmarks/results/gpu-<device>)",
    )
    ap.add_argument(
        "--simulator-dry-run",
        action="store_true",
        help="exercise this script under NUMBA_ENABLE_CUDASIM=1 with tiny sizes "
        "(checks the plumbing; its timings mean nothing)",
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.log2n, args.repeats, args.identity_n = 22, 10, 1 << 16
    if args.simulator_dry_run:
        args.log2n, args.repeats, args.identity_n, args.skip_audit = 10, 2, 200, True

    import numba_cuda
    from numba import cuda

    if not cuda.is_available():
        sys.exit(
            "no CUDA GPU is available: this benchmark needs one (the simulator tests "
            "are in tests/test_cuda.py)"
        )
    from qsgd_codec import cuda as qc

    if qc.SIMULATOR != args.simulator_dry_run:
        sys.exit(
            "unset NUMBA_ENABLE_CUDASIM: this benchmark times the real GPU"
            if qc.SIMULATOR
            else "--simulator-dry-run needs NUMBA_ENABLE_CUDASIM=1"
        )
    device = cuda.get_current_device()
    name = getattr(device, "name", "simulator-dry-run")
    name = name.decode() if isinstance(name, bytes) else str(name)
    report = dict(
        device=name,
        cc=".".join(map(str, getattr(device, "compute_capability", ("sim",)))),
        numba_cuda=getattr(numba_cuda, "__version__", "?"),
        python=platform.python_version(),
        host=platform.node(),
        when=time.strftime("%Y-%m-%d %H:%M:%S"),
        command="python benchmarks/bench_gpu.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        repeats=args.repeats,
        identity_n=args.identity_n,
    )
    print(f"device: {name} (cc {report['cc']})", flush=True)

    if not args.skip_audit:
        print("PTX audit ...", flush=True)
        problems = qc.audit_ptx(few=False)
        report["ptx_audit"] = [list(p) for p in problems]
        print(f"  {len(problems)} problems" + "".join(f"\n  {p}" for p in problems[:20]))
    if not args.audit_only:
        print("byte identity ...", flush=True)
        report["identity"] = identity_checks(
            args.identity_n, args.seed, args.identity_n <= (1 << 20)
        )
        print("throughput ...", flush=True)
        report["throughput"] = throughput(1 << args.log2n, args.repeats, args.seed)

    stem = args.out or RESULTS / ("gpu-" + re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower())
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1))
    stem.with_suffix(".md").write_text(markdown(report))
    print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.md')}")
    failed = (
        report.get("ptx_audit")
        or any(
            not (r.get("identical", True) and r.get("decode_identical", True))
            for r in report.get("identity", [])
        )
        or any(not (r["identical"] and r["decode_identical"]) for r in report.get("throughput", []))
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
