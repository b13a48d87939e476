"""MPI collectives (qsgd_codec.mpi) under ``mpiexec -n 2`` and ``-n 4``.

One ``mpiexec`` launch per communicator size runs every check of tests/mpi/worker.py; the
ranks write what they observed to JSON files and the tests below compare them.  The seed
derivation is tested here directly (no MPI needed).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

import qsgd_codec
from qsgd_codec import mpi as qm

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORKER = HERE / "mpi" / "worker.py"
LAUNCH_TIMEOUT = 180


def _mpiexec():
    local = Path(sys.executable).parent / "mpiexec"
    return str(local) if local.exists() else shutil.which("mpiexec")


def _launch_env(ranks, **extra):
    env = dict(os.environ)
    env.update(qm.recommended_env(ranks))
    env.update(extra)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _warm_codec():
    """Compile (or load from Numba's cache) the codec once here, not in every rank at once."""
    import ml_dtypes

    for dtype in (np.float16, ml_dtypes.bfloat16, np.float32, np.float64):
        x = np.linspace(-1, 1, 300).astype(dtype)
        for kw in (dict(bits=4), dict(levels=16, coding="elias")):
            qsgd_codec.decode(qsgd_codec.encode(x, bucket_size=64, **kw))


def mpirun(ranks, script, *args, timeout=LAUNCH_TIMEOUT, **env):
    mpiexec = _mpiexec()
    if mpiexec is None:
        pytest.skip("no mpiexec found (pip install 'qsgd_codec[mpi]')")
    cmd = [mpiexec, "-n", str(ranks), sys.executable, "-m", "mpi4py", str(script), *args]
    # a session of its own: on a timeout (a hang) the whole job, ranks included, is killed
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=_launch_env(ranks, **env),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(
            f"mpiexec -n {ranks} {script.name} did not finish in {timeout} s (a hang?)"
            f"\n{out}\n{err}"
        )
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.fixture(scope="module", params=[2, 4], ids=["np2", "np4"])
def run(request, tmp_path_factory):
    """Records of one worker launch, grouped: {check: [records of every rank]}."""
    pytest.importorskip("mpi4py")
    pytest.importorskip("ml_dtypes")
    ranks = request.param
    _warm_codec()
    out = tmp_path_factory.mktemp(f"mpi{ranks}")
    # NUMBA_ENABLE_CUDASIM: GPU inputs (fake __cuda_array_interface__ arrays) go through the
    # CUDA simulator and are staged through the host, as on a machine with a GPU
    proc = mpirun(
        ranks,
        WORKER,
        str(out),
        "identical,elias,seeds,corrupt,mismatch,device",
        NUMBA_ENABLE_CUDASIM="1",
    )
    assert proc.returncode == 0, f"worker failed:\n{proc.stdout}\n{proc.stderr}"
    by_check = defaultdict(list)
    for r in range(ranks):
        for rec in json.loads((out / f"rank{r}.json").read_text()):
            by_check[rec["check"]].append(rec)
    assert len(by_check["done"]) == ranks
    return ranks, by_check


def _by_call(records, *keys):
    """Group records of the same call on different ranks: {key tuple: [record per rank]}."""
    calls = defaultdict(list)
    for rec in records:
        calls[tuple(json.dumps(rec.get(k)) for k in keys)].append(rec)
    return calls


# ----------------------------------------------------------------------------- results


@pytest.mark.mpi
def test_every_rank_ends_bit_identical(run):
    ranks, by = run
    calls = _by_call(by["identical"], "op", "setting", "shape", "dtype", "average")
    assert len(calls) == 10 * 4 + 3  # 10 cases x (3 codecs + float32), 3 extra sum calls
    for key, recs in calls.items():
        assert len(recs) == ranks, key
        assert len({r["digest"] for r in recs}) == 1, (key, [r["digest"] for r in recs])
        assert {r["out_dtype"] for r in recs} == {json.loads(key[3])}, key
        assert all(r["out_shape"] == json.loads(key[2]) for r in recs), key


@pytest.mark.mpi
def test_error_within_the_codec_bound(run):
    """|result - exact mean| <= (1/K) sum_k r_kb / s (plus the re-encoding for the reducers)."""
    ranks, by = run
    ratios = [r["ratio"] for r in by["identical"] if "ratio" in r]
    ratios += [r["ratio"] for r in by["elias"]]
    assert max(ratios) <= 1.0
    # the bound is tight enough to catch a wrong mean (errors reach a good part of it)
    assert np.median(ratios) > 0.3


@pytest.mark.mpi
def test_float32_baseline_matches_the_mean(run):
    ranks, by = run
    recs = [r for r in by["identical"] if r["op"] == "allreduce_float32"]
    assert len(recs) == 10 * ranks
    # float32 sums, rounded to the input dtype (float64 inputs keep float32 precision)
    eps = {"float16": 2.0**-10, "bfloat16": 2.0**-7, "float32": 2.0**-23, "float64": 2.0**-23}
    for r in recs:
        assert r["rel_error"] <= 4 * eps[r["dtype"]], r


@pytest.mark.mpi
def test_byte_statistics_add_up(run):
    ranks, by = run
    calls = _by_call(by["identical"], "op", "setting", "shape", "dtype", "average")
    for key, recs in calls.items():
        stats = [r["stats"] for r in recs]
        sent = sum(s["bytes_sent"] for s in stats)
        received = sum(s["bytes_received"] for s in stats)
        assert all(s["total_bytes_sent"] == sent for s in stats), key
        assert received == sent, key  # every byte sent is received by someone
        for s in stats:
            assert s["ranks"] == ranks and s["total_s"] >= s["encode_s"] + s["decode_s"]
    # allgather: (K-1) copies of each message; 8-bit messages are ~1/4 of float32
    for s in (
        r["stats"]
        for r in by["identical"]
        if r["op"] == "allgather" and r["setting"] == "8bit-b512" and r["shape"] == [3000]
    ):
        assert s["bytes_sent"] == (ranks - 1) * s["message_bytes"]
        assert 3000 < s["message_bytes"] < 3000 * 1.02 + 100
    for s in (
        r["stats"]
        for r in by["identical"]
        if r["op"] == "allreduce_float32" and r["shape"] == [3000]
    ):
        assert s["bytes_sent"] == 2 * (ranks - 1) * 12000 // ranks


@pytest.mark.mpi
def test_elias_messages_of_different_lengths(run):
    ranks, by = run
    recs = by["elias"]
    for op, group in _by_call(recs, "op").items():
        assert len(group) == ranks and len({r["digest"] for r in group}) == 1, op
    # allgather: every rank's message has its own length, and each rank receives the others'
    sizes = {r["rank"]: r["stats"]["message_bytes"] for r in recs if r["op"] == "allgather"}
    assert len(set(sizes.values())) == ranks
    for r in recs:
        if r["op"] == "allgather":
            assert r["stats"]["bytes_received"] == sum(sizes.values()) - sizes[r["rank"]]
            assert r["stats"]["bytes_sent"] == (ranks - 1) * sizes[r["rank"]]


@pytest.mark.mpi
def test_seeds_differ_across_ranks_and_steps(run):
    ranks, by = run
    recs = by["seeds"]
    assert len({r["digest"] for r in recs}) == 1
    r = recs[0]
    # derive_seeds=False: every rank encodes the same input with the same seed -> encode()
    assert all(x["same_as_encode"] for x in recs)
    # derived seeds: independent rounding per rank -> error RMS / sqrt(K)
    ratio = r["rms_step"] / r["rms_single"]
    assert 0.85 / np.sqrt(ranks) < ratio < 1.15 / np.sqrt(ranks), ratio
    # ... and per step: averaging 32 steps cuts it by sqrt(32) (identical seeds would not)
    ratio = r["rms_avg"] / r["rms_step"]
    assert 0.8 / np.sqrt(r["steps"]) < ratio < 1.25 / np.sqrt(r["steps"]), ratio


# ----------------------------------------------------------------------------- errors

CORRUPT_CASES = 11 + 3


@pytest.mark.mpi
def test_corrupt_message_raises_on_every_rank(run):
    ranks, by = run
    calls = _by_call(by["corrupt"], "case")
    assert len(calls) == CORRUPT_CASES
    for key, recs in calls.items():
        assert len(recs) == ranks, key
        expected = recs[0]["expected"]
        assert [r["error"] for r in recs] == [expected] * ranks, (key, recs)
    # the collective after each failure works, with every rank in step
    for key, recs in _by_call(by["corrupt-after"], "case").items():
        assert len(recs) == ranks and len({r["digest"] for r in recs}) == 1, key


@pytest.mark.mpi
def test_only_the_owner_sees_it_but_all_raise(run):
    """allreduce's reduce-scatter: only rank 0 decodes the bad chunk, the rest learn it by
    agreement."""
    ranks, by = run
    recs = [r for r in by["corrupt"] if r["case"] == "allreduce-scatter-flip"]
    by_rank = {r["rank"]: r for r in recs}
    assert by_rank[0]["message"].startswith("CRC-32 mismatch")
    for r in range(1, ranks):
        assert f"message from rank {ranks - 1} failed to decode on rank 0" in by_rank[r]["message"]


@pytest.mark.mpi
def test_parameter_mismatch_detected_up_front(run):
    ranks, by = run
    calls = _by_call(by["mismatch"], "case")
    assert len(calls) == 11
    for key, recs in calls.items():
        assert len(recs) == ranks, key
        assert {r["error"] for r in recs} == {"ParameterError"}, (key, recs)
        for r in recs:
            assert r["key"] in r["message"], (key, r["message"])
    for key, recs in _by_call(by["mismatch-after"], "case").items():
        assert len(recs) == ranks and len({r["digest"] for r in recs}) == 1, key


@pytest.mark.mpi
def test_device_arrays_are_staged_through_the_host(run):
    ranks, by = run
    recs = by["device"]
    assert len(recs) == 3 * ranks
    assert all(r["equal"] and r["kind"] == "ndarray" for r in recs)


@pytest.mark.mpi
def test_uncaught_error_ends_the_job():
    """Left uncaught, the error ends the job under ``python -m mpi4py`` (no hang)."""
    pytest.importorskip("mpi4py")
    proc = mpirun(2, HERE / "mpi" / "abort.py", timeout=120)
    assert proc.returncode != 0
    assert "ChecksumError" in proc.stdout + proc.stderr
    assert "not reached" not in proc.stdout


# ----------------------------------------------------------------------------- seeds


def _mix(z):
    m = (1 << 64) - 1
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def test_derive_seed_follows_its_documented_formula():
    def documented(seed, *fields):
        h = _mix(seed)
        for v in fields:
            h = _mix((h + (v + 1) * 0x9E3779B97F4A7C15) & ((1 << 64) - 1))
        return h

    for args in [(0, 0, 0, 0, 0), (7, 3, 12345, 1, 2), ((1 << 64) - 1, 15, 10**9, 0, 3)]:
        assert qm.derive_seed(*args) == documented(*args)
    assert qm.derive_seed(5, 1, 2) == documented(5, 1, 2, 0, 0)


def test_derive_seed_gives_distinct_streams():
    seeds = {
        qm.derive_seed(0, rank, step, phase, chunk)
        for rank in range(16)
        for step in range(200)
        for phase in (0, 1)
        for chunk in range(4)
    }
    assert len(seeds) == 16 * 200 * 2 * 4
    # neighbouring inputs share no bit structure: about half the bits differ
    flips = [
        bin(qm.derive_seed(0, 0, t) ^ qm.derive_seed(0, 0, t + 1)).count("1") for t in range(200)
    ]
    assert 28 < np.mean(flips) < 36


@pytest.mark.parametrize("bad", [-1, 1 << 64, 1.5, True, "3"])
def test_derive_seed_rejects_bad_numbers(bad):
    with pytest.raises(qsgd_codec.ParameterError):
        qm.derive_seed(bad, 0, 0)
    with pytest.raises(qsgd_codec.ParameterError):
        qm.derive_seed(0, 0, bad)


def test_stats_accumulate():
    stats = qm.Stats(keep_calls=True)
    a = qm.CallStats(
        op="allgather", ranks=4, rank=0, n=10, dtype="float32", bytes_sent=30, encode_s=0.5
    )
    b = qm.CallStats(
        op="allgather", ranks=4, rank=0, n=10, dtype="float32", bytes_sent=12, encode_s=0.25
    )
    stats.add(a)
    stats.add(b)
    assert stats.calls_made == 2 and stats.bytes_sent == 42 and stats.encode_s == 0.75
    assert stats.last is b and stats.calls == [a, b] and a.original_bytes == 40
    stats.reset()
    assert stats.calls_made == 0 and stats.calls == [] and stats.keep_calls
