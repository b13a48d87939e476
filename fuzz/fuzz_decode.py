"""Long fuzz campaigns against the QSGD decoders (see fuzz/README.md).

    python fuzz/fuzz_decode.py --path reference --seconds 600
    python fuzz/fuzz_decode.py --path api --seconds 600          # the public decode()
    python fuzz/fuzz_decode.py --path cuda --seconds 600         # CUDA kernels, simulator
    python fuzz/fuzz_decode.py --report                          # rewrite fuzz/RESULTS.md

The supervisor (this script without --worker) starts a worker process that runs the fuzz
engine and the decoder.  When the worker dies, from a signal (a segmentation fault in a
kernel), an uncaught exception, a hang, an out-of-memory or a judge failure, the
supervisor saves the input that killed it under fuzz/findings/, records why, and starts a
new worker until the time is up.  Nothing a decoder does can take the supervisor down.

Each input is judged by tests/mutation.py's oracle: the decoder must raise a QSGDError of
the class the reference raises, or return exactly the reference's values for bytes that
are a well-formed (canonical) message.  Engines: atheris (libFuzzer, coverage-guided on
the Python code) when importable, else a random structure-aware mutator.
"""

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

WORK = HERE / "work"
FINDINGS = HERE / "findings"
RESULTS = HERE / "results"
LIMIT = 1 << 20  # max_elements for every decode: keeps a bomb to ~250 MB in the oracle
MAX_LEN = 4096
PATHS = ("reference", "api", "cuda")
SELFTEST = "selftest_segfault"  # a decoder that crashes on purpose: checks the harness


# ----------------------------------------------------------------------------- worker


class Target:
    """The per-input check, shared by both engines."""

    def __init__(self, path, workdir):
        import mutation as M

        self.M = M
        self.path = path
        self.fn = M.PATHS[path]
        self.current = os.open(workdir / "current.bin", os.O_RDWR | os.O_CREAT, 0o644)
        self.stats_file = workdir / "stats.json"
        self.stats = {"execs": 0, "accepted": 0, "errors": {}, "modes": {}}
        self.last_flush = time.monotonic()

    def record_current(self, data):
        os.ftruncate(self.current, 0)
        os.pwrite(self.current, data, 0)

    def flush_stats(self, force=False):
        now = time.monotonic()
        if force or now - self.last_flush > 1.0:
            tmp = self.stats_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.stats))
            os.replace(tmp, self.stats_file)
            self.last_flush = now

    def __call__(self, data):
        M = self.M
        self.record_current(data)
        n = self.stats["execs"]
        self.stats["execs"] = n + 1
        mode = "plain"
        if self.path == "api":
            mode = ("plain", "guard_after", "guard_before", "out_guarded")[n % 4]
        elif self.path == "cuda":
            mode = ("plain", "device_bytes")[n % 2]
        self.stats["modes"][mode] = self.stats["modes"].get(mode, 0) + 1
        if mode == "plain":
            outcome = M.run_decoder(self.fn, data, LIMIT)
        elif mode == "device_bytes":  # the message already in device memory
            outcome = M.run_decoder(M.decode_cuda_device_bytes, data, LIMIT)
        elif mode in ("guard_after", "guard_before"):
            view, _keep = M.guarded_bytes(data, mode[6:])
            outcome = M.run_decoder(self.fn, view, LIMIT)
        else:
            view, _keep = M.guarded_bytes(data, "after")
            out, _keep_out = M.empty_out_for(
                data, LIMIT, allocate=lambda s, t: M.guarded_empty(s, t, "after")
            )
            outcome = M.run_decoder(lambda b, m: M.decode_api_out(b, m, out=out), view, LIMIT)
        reference = outcome if self.path in ("reference", SELFTEST) else None
        why = M.judge(data, outcome, LIMIT, reference)
        if why:
            raise AssertionError(f"judge ({self.path}, {mode}): {why}")
        if outcome.accepted:
            self.stats["accepted"] += 1
        else:
            self.stats["errors"][outcome.error] = self.stats["errors"].get(outcome.error, 0) + 1
        self.flush_stats()
        return outcome


def seed_corpus(corpus_dir):
    """Small valid messages (both checksum variants) and every conformance vector."""
    import mutation as M

    from qsgd_codec.conformance import load_vectors

    corpus_dir.mkdir(parents=True, exist_ok=True)
    seeds = [m for _, m in M.small_messages()]
    seeds += [v["message"] for v in load_vectors() if len(v["message"]) <= MAX_LEN]
    for data in seeds:
        (corpus_dir / hashlib.sha1(data).hexdigest()).write_bytes(data)
    return seeds


def run_atheris(target, workdir, seconds, seed):
    import atheris
    import mutation as M

    def mutator(data, max_size, mseed):
        rnd = random.Random(mseed)
        if rnd.random() < 0.5:
            out = atheris.Mutate(data, max_size)
            return M.refresh_crc(out) if rnd.random() < 0.8 else out
        return M.mutate(data, rnd)[:max_size]

    args = [
        sys.argv[0],
        str(workdir / "corpus"),
        f"-max_total_time={seconds}",
        f"-max_len={MAX_LEN}",
        f"-seed={seed}",
        "-timeout=20",
        "-rss_limit_mb=4096",
        f"-artifact_prefix={workdir}/artifacts/",
        "-print_final_stats=1",
        "-print_pcs=0",
        "-reload=0",
    ]
    (workdir / "artifacts").mkdir(exist_ok=True)
    atheris.Setup(args, lambda data: target(data), custom_mutator=mutator)
    atheris.Fuzz()


def run_random(target, workdir, seconds, seed):
    """Fallback engine: structure-aware random mutation of a growing corpus."""
    import mutation as M

    rnd = random.Random(seed)
    corpus = [p.read_bytes() for p in sorted((workdir / "corpus").iterdir())]
    seen = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        data = M.mutate(rnd.choice(corpus), rnd)[:MAX_LEN]
        outcome = target(data)
        key = (outcome.error, outcome.detail[:40]) if not outcome.accepted else ("ok", len(data))
        if key not in seen and len(corpus) < 5000:
            seen.add(key)
            corpus.append(data)


def worker_main(args):
    workdir = Path(args.workdir)
    # a soft address-space cap: a decoder that allocates past the limit fails loudly
    gib = 1 << 30
    resource.setrlimit(resource.RLIMIT_AS, (12 * gib, 12 * gib))
    if args.engine == "atheris":
        import atheris

        with atheris.instrument_imports(include=["qsgd_codec"]):
            import qsgd_codec  # noqa: F401
            import qsgd_codec.reference  # noqa: F401
            import qsgd_codec.wire  # noqa: F401
    target = Target(args.path, workdir)
    if args.path == "api":  # compile the kernels before the clock matters
        import mutation as M

        for _, m in M.small_messages():
            M.run_decoder(M.decode_api, m, LIMIT)
    try:
        if args.engine == "atheris":
            run_atheris(target, workdir, args.seconds, args.seed)
        else:
            run_random(target, workdir, args.seconds, args.seed)
    finally:
        target.flush_stats(force=True)


# ----------------------------------------------------------------------------- supervisor


def engine_available():
    try:
        import atheris  # noqa: F401

        return "atheris"
    except ImportError:
        return "random"


def save_finding(path, data, reason):
    folder = WORK / "selftest-findings" if path == SELFTEST else FINDINGS
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha1(data).hexdigest()[:16]
    base = folder / f"{path}-{digest}"
    base.with_suffix(".bin").write_bytes(data)
    base.with_suffix(".txt").write_text(reason)
    return base.name


def supervise(args):
    engine = args.engine or engine_available()
    workdir = WORK / args.path
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    seeds = seed_corpus(workdir / "corpus")
    env = dict(os.environ)
    if args.path == "cuda":
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    start = time.monotonic()
    deadline = start + args.seconds
    totals = {"execs": 0, "accepted": 0, "errors": {}}
    findings, restarts, libfuzzer_execs = [], 0, 0
    while True:
        left = int(deadline - time.monotonic())
        if left < 5 or restarts > args.max_restarts:
            break
        stats_file = workdir / "stats.json"
        stats_file.unlink(missing_ok=True)
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            "--path",
            args.path,
            "--engine",
            engine,
            "--seconds",
            str(left),
            "--seed",
            str(args.seed + restarts),
            "--workdir",
            str(workdir),
        ]
        with open(workdir / "worker.log", "w") as log:
            try:
                rc = subprocess.run(
                    cmd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=left + 120, cwd=ROOT
                ).returncode
            except subprocess.TimeoutExpired:
                rc = "hang"
        text = (workdir / "worker.log").read_text(errors="replace")
        for line in text.splitlines():
            if "stat::number_of_executed_units" in line:
                libfuzzer_execs += int(line.split(":")[-1])
        if stats_file.exists():
            stats = json.loads(stats_file.read_text())
            totals["execs"] += stats["execs"]
            totals["accepted"] += stats["accepted"]
            for k, v in stats["errors"].items():
                totals["errors"][k] = totals["errors"].get(k, 0) + v
        if rc == 0:
            break
        restarts += 1
        artifacts = (
            sorted((workdir / "artifacts").glob("*")) if (workdir / "artifacts").exists() else []
        )
        data = artifacts[-1].read_bytes() if artifacts else (workdir / "current.bin").read_bytes()
        for a in artifacts:
            a.unlink()
        reason = f"worker exit {rc}\n\n" + text[-6000:]
        name = save_finding(args.path, data, reason)
        saved = (WORK / "selftest-findings" if args.path == SELFTEST else FINDINGS) / name
        saved = saved.relative_to(ROOT)
        findings.append({"file": f"{saved}.bin", "exit": str(rc), "summary": _summary(text, rc)})
        print(f"[fuzz] worker died ({rc}); saved {saved}.bin", flush=True)
    elapsed = time.monotonic() - start
    result = {
        "path": args.path,
        "engine": engine,
        "seconds": round(elapsed, 1),
        "executions": totals["execs"],
        "libfuzzer_executions": libfuzzer_execs,
        "execs_per_second": round(totals["execs"] / max(elapsed, 1e-9), 1),
        "accepted": totals["accepted"],
        "errors": totals["errors"],
        "seed_inputs": len(seeds),
        "restarts": restarts,
        "findings": findings,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "max_elements": LIMIT,
    }
    if args.path != SELFTEST:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{args.path}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 1 if findings else 0


def _summary(text, rc):
    for marker in ("AssertionError", "Error:", "deadly signal", "out-of-memory", "timeout"):
        for line in reversed(text.splitlines()):
            if marker in line:
                return line.strip()[:300]
    return f"exit {rc}"


def write_report():
    rows = [
        "| decoder path | engine | seconds | executions | exec/s | accepted | findings | date |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for path in PATHS:
        f = RESULTS / f"{path}.json"
        if not f.exists():
            rows.append(f"| {path} | not run | | | | | | |")
            continue
        r = json.loads(f.read_text())
        rows.append(
            f"| {path} | {r['engine']} | {r['seconds']:.0f} | {r['executions']:,} | "
            f"{r['execs_per_second']:,.0f} | {r['accepted']:,} | "
            f"{len(r['findings'])} | {r['date']} |"
        )
    return "\n".join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", choices=PATHS + (SELFTEST,), default="reference")
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--engine", choices=("atheris", "random"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-restarts", type=int, default=25)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument(
        "--report", action="store_true", help="print the results table of fuzz/results/*.json"
    )
    args, _ = parser.parse_known_args()
    if args.report:
        print(write_report())
        return 0
    if args.worker:
        return worker_main(args)
    return supervise(args)


if __name__ == "__main__":
    sys.exit(main())
