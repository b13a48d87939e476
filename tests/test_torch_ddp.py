"""The PyTorch DDP communication hook (qsgd_codec.torch_ddp).

Unit tests run the hook in this process on a one-rank gloo group with hand-made buckets; the
end-to-end test trains a small MLP with 2 gloo processes (this file run as a script) and
checks that QSGD-compressed DDP reaches the uncompressed model's accuracy.
"""

import json
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")

import qsgd_codec  # noqa: E402
from qsgd_codec.errors import ParameterError  # noqa: E402
from qsgd_codec.torch_ddp import QSGDState, message_seed, qsgd_hook  # noqa: E402

#: accuracy tolerance of the end-to-end test, in absolute test accuracy
ACCURACY_TOLERANCE = 0.02


class FakeBucket:
    """The parts of torch.distributed.GradBucket the hook uses."""

    def __init__(self, grads, index=0, last=True):
        self._grads = [g.reshape(-1) for g in grads]
        self._buffer = torch.cat(self._grads) if grads else torch.zeros(0)
        self._index, self._last = index, last

    def buffer(self):
        return self._buffer

    def gradients(self):
        return self._grads

    def parameters(self):
        return self._grads

    def index(self):
        return self._index

    def is_last(self):
        return self._last


@pytest.fixture(scope="module")
def one_rank_group():
    if dist.is_initialized():
        yield
        return
    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=0, world_size=1)
        try:
            yield
        finally:
            dist.destroy_process_group()


def run_hook(state, bucket):
    return qsgd_hook(state, bucket).wait()


@pytest.mark.parametrize("coding", ["dense", "elias"])
def test_hook_one_rank_decodes_own_messages(one_rank_group, coding):
    g = torch.Generator().manual_seed(0)
    big = torch.randn(3000, generator=g)
    small = torch.randn(40, generator=g)
    state = QSGDState(bits=4, bucket_size=256, seed=11, coding=coding, min_compress_numel=1000)
    bucket = FakeBucket([big.clone(), small.clone()], index=2, last=False)
    out = run_hook(state, bucket)
    # the small gradient travels raw: exact; the large one is the QSGD message with the
    # derived seed (world size 1, so the average is the decoded message itself)
    assert torch.equal(out[3000:], small)
    expected = qsgd_codec.decode(
        qsgd_codec.encode(
            big.numpy(), bits=4, bucket_size=256, seed=message_seed(11, 0, 0, 2, 0), coding=coding
        )
    )
    assert np.array_equal(out[:3000].numpy(), expected)
    assert not torch.equal(out[:3000], big)  # it really was quantized
    assert state.messages_compressed == 1 and state.tensors_uncompressed == 1
    assert state.step == 0  # not the iteration's last bucket
    assert state.bytes_uncompressed == 3040 * 4 and state.bytes_sent < 3040 * 4 / 3


def test_hook_threshold_and_step(one_rank_group):
    state = QSGDState(bits=8, min_compress_numel=10_000)
    grads = [torch.randn(9_999), torch.randn(10_000)]
    bucket = FakeBucket([g.clone() for g in grads], last=True)
    out = run_hook(state, bucket)
    assert torch.equal(out[:9_999], grads[0])  # under the threshold: uncompressed
    assert not torch.equal(out[9_999:], grads[1])  # at the threshold: quantized
    assert torch.allclose(out[9_999:], grads[1], atol=float(grads[1].abs().max()) / 127)
    assert state.step == 1
    # the next step uses other seeds: the quantization noise differs
    out2 = run_hook(state, FakeBucket([g.clone() for g in grads], last=True))
    assert not torch.equal(out2[9_999:], out[9_999:])
    assert state.step == 2


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_hook_low_and_high_precision(one_rank_group, dtype):
    grad = torch.randn(2000, generator=torch.Generator().manual_seed(1)).to(dtype)
    small = torch.randn(10).to(dtype)
    state = QSGDState(bits=8, min_compress_numel=100)
    out = run_hook(state, FakeBucket([grad.clone(), small.clone()]))
    assert out.dtype == dtype
    assert torch.equal(out[2000:], small)
    err = (out[:2000].double() - grad.double()).abs().max()
    assert 0 < err <= float(grad.double().abs().max()) / 127 * 1.01 + 1e-2


def test_message_seeds_are_distinct_and_follow_the_one_convention():
    seeds = {
        message_seed(5, r, t, b, j)
        for t in range(4)
        for r in range(4)
        for b in range(3)
        for j in range(3)
    }
    assert len(seeds) == 4 * 4 * 3 * 3
    assert all(0 <= s < 2**64 for s in seeds)
    assert message_seed(5, 0, 1, 0, 0) != message_seed(6, 0, 1, 0, 0)
    # the library's one derive_seed (docs/seeds.md), shared with the MPI collectives
    assert message_seed(5, 3, 7, 2, 1) == qsgd_codec.derive_seed(
        5, 3, 7, qsgd_codec.PHASE_CONTRIBUTION, (2 << 32) | 1
    )
    with pytest.raises(qsgd_codec.ParameterError):
        message_seed(5, 0, 0, 0, 1 << 32)


def test_version_1_checkpoint_is_migrated_with_a_warning():
    old = {
        "version": 1,
        "levels": 7,
        "bucket_size": 128,
        "scale": "max",
        "coding": "dense",
        "seed": 3,
        "checksum": True,
        "min_compress_numel": 7,
        "step": 41,
        "bytes_sent": 1234,
        "bytes_uncompressed": 5000,
        "messages_compressed": 2,
        "tensors_uncompressed": 1,
    }
    state = QSGDState()
    with pytest.warns(UserWarning, match="version-1 checkpoint"):
        state.load_state_dict(old)
    assert state.step == 41 and state.levels == 7 and state.seed == 3
    assert state.params == qsgd_codec.EncodeParams(7, 128, "max", "dense", 3, True)
    assert state.state_dict()["version"] == 2


def test_state_checkpoint_roundtrip(tmp_path):
    state = QSGDState(bits=4, bucket_size=128, coding="elias", seed=3, min_compress_numel=7)
    state.step, state.bytes_sent = 41, 1234
    saved = state.state_dict()
    assert json.loads(json.dumps(saved)) == saved
    fresh = QSGDState()
    fresh.load_state_dict(saved)
    assert fresh.state_dict() == saved
    clone = pickle.loads(pickle.dumps(state))
    assert clone.state_dict() == saved and clone.process_group is None
    torch.save(state, tmp_path / "state.pt")
    loaded = torch.load(tmp_path / "state.pt", weights_only=False)
    assert loaded.step == 41 and loaded.coding == "elias" and loaded.levels == 7


def test_state_rejects_bad_config():
    with pytest.raises(ParameterError):
        QSGDState(bits=1)
    with pytest.raises(ParameterError):
        QSGDState(min_compress_numel=-1)
    with pytest.raises(ParameterError):
        QSGDState().load_state_dict({"version": 99})
    with pytest.raises(ParameterError):
        QSGDState().load_state_dict({"bogus": 1})
    with pytest.raises(ParameterError):
        QSGDState().load_state_dict({"scale": "median"})


# ----------------------------------------------------------------------------- 2 processes


def _dataset(rng, n, centers):
    labels = rng.integers(0, centers.shape[0], size=n)
    x = centers[labels] + rng.normal(size=(n, centers.shape[1])) * 2.2
    return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(labels)


def _train(rank, world, hook_state, x, y, x_test, y_test, epochs, batch):
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(64, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 10),
    )
    model = DDP(net)
    if hook_state is not None:
        model.register_comm_hook(hook_state, qsgd_hook)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    shard_x, shard_y = x[rank::world], y[rank::world]
    order = torch.Generator().manual_seed(rank)
    for _ in range(epochs):
        perm = torch.randperm(shard_x.shape[0], generator=order)
        for i in range(0, shard_x.shape[0], batch):
            idx = perm[i : i + batch]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(shard_x[idx]), shard_y[idx])
            loss.backward()
            opt.step()
    with torch.no_grad():
        acc = (net(x_test).argmax(1) == y_test).float().mean().item()
    digest = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    return acc, digest.numpy().tobytes().hex()[:64] + str(float(digest.double().sum()))


def _check_average(rank, world):
    """Run the hook once on known per-rank gradients; compare with the average computed here.

    Elias coding, so the ranks' messages differ in length (the length exchange runs).
    """

    def grads(r):
        g = torch.Generator().manual_seed(100 + r)
        return [torch.randn(5000, generator=g) * (r + 1), torch.randn(30, generator=g)]

    state = QSGDState(levels=3, bucket_size=128, coding="elias", seed=9, min_compress_numel=1000)
    out = qsgd_hook(state, FakeBucket(grads(rank), index=4, last=True)).wait()
    big = np.zeros(5000, np.float32)
    small = np.zeros(30, np.float32)
    for r in range(world):
        g_big, g_small = grads(r)
        big += qsgd_codec.decode(
            qsgd_codec.encode(
                g_big.numpy(),
                levels=3,
                bucket_size=128,
                coding="elias",
                seed=message_seed(9, r, 0, 4, 0),
            )
        )
        small += g_small.numpy()
    big /= world
    small /= world
    return bool(
        np.array_equal(out[:5000].numpy(), big) and np.array_equal(out[5000:].numpy(), small)
    )


def _worker(rank, world, store, out_path):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    average_ok = _check_average(rank, world)
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(10, 64))
    x, y = _dataset(rng, 8192, centers)
    x_test, y_test = _dataset(rng, 4000, centers)
    epochs, batch = 3, 32
    plain_acc, plain_digest = _train(rank, world, None, x, y, x_test, y_test, epochs, batch)
    state = QSGDState(bits=4, bucket_size=512, seed=1)
    qsgd_acc, qsgd_digest = _train(rank, world, state, x, y, x_test, y_test, epochs, batch)
    result = {
        "plain_acc": plain_acc,
        "qsgd_acc": qsgd_acc,
        "plain_digest": plain_digest,
        "qsgd_digest": qsgd_digest,
        "ratio": state.compression_ratio,
        "step": state.step,
        "compressed": state.messages_compressed,
        "uncompressed": state.tensors_uncompressed,
        "average_ok": average_ok,
        "steps_expected": epochs * -(-(8192 // world) // batch),
    }
    Path(out_path).write_text(json.dumps(result))
    dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_processes_matches_uncompressed_accuracy(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    store = tmp_path / "store"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--worker",
                str(rank),
                "2",
                str(store),
                str(tmp_path / f"rank{rank}.json"),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for rank in range(2)
    ]
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=120)[0].decode(errors="replace"))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, text in zip(procs, outputs):
        assert p.returncode == 0, text[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    # every rank decodes the same bytes in the same order: the replicas stay identical
    assert r0["qsgd_digest"] == r1["qsgd_digest"]
    assert r0["plain_digest"] == r1["plain_digest"]
    assert r0["qsgd_digest"] != r0["plain_digest"]
    # the hook averages the decoded messages of both ranks (elias: lengths differ per rank)
    assert r0["average_ok"] and r1["average_ok"]
    assert r0["step"] == r0["steps_expected"]
    # the two 64x256 / 256x256 weight matrices are compressed; biases and the 256x10 layer
    # (under 10,000 elements) are not
    assert r0["compressed"] == 2 * r0["step"] and r0["uncompressed"] == 4 * r0["step"]
    assert r0["ratio"] > 4.0
    assert r0["plain_acc"] > 0.6
    assert abs(r0["qsgd_acc"] - r0["plain_acc"]) <= ACCURACY_TOLERANCE, (r0, r1)


if __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] == "--worker":
    _worker(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
