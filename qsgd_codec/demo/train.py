"""Data-parallel SGD with QSGD gradients (the paper's Algorithm 1) on scikit-learn's digits.

Every rank holds a shard of the training set and the same model (a 64-256-10 ReLU network,
softmax cross-entropy).  Each step, each rank computes the gradient of a minibatch of its
shard, and the ranks exchange gradients: the 32-bit run with a float32 ``MPI.Allreduce``,
the QSGD runs with :func:`qsgd_codec.mpi.allgather` (encode, allgather, decode all,
average) for every tensor of at least ``--min-size`` elements and float32 for the rest (the
paper sends small matrices unquantized).  All ranks apply the same averaged gradient, so
their parameters stay bit-identical; the demo checks that at the end.
"""

import hashlib
import json
import time
from pathlib import Path

import numpy as np

RUNS = {  # name: (label, codec keywords or None for float32)
    "32bit": ("32-bit (float32 Allreduce)", None),
    "2bit": ("QSGD 2-bit, bucket 128", dict(bits=2, bucket_size=128)),
    "4bit": ("QSGD 4-bit, bucket 512", dict(bits=4, bucket_size=512)),
    "8bit": ("QSGD 8-bit, bucket 512", dict(bits=8, bucket_size=512)),
}


def load_data(comm, seed):
    """Digits (1797 8x8 images, bundled with scikit-learn): 80% train, 20% test."""
    data = None
    if comm.Get_rank() == 0:
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        data = ((x / 16.0).astype(np.float32), y.astype(np.int64))
    x, y = comm.bcast(data, root=0)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = len(y) // 5
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def init_params(hidden, seed):
    rng = np.random.default_rng([seed, 1])
    return [
        (rng.standard_normal((64, hidden)) * np.sqrt(2 / 64)).astype(np.float32),
        np.zeros(hidden, np.float32),
        (rng.standard_normal((hidden, 10)) * np.sqrt(1 / hidden)).astype(np.float32),
        np.zeros(10, np.float32),
    ]


def gradients(params, x, y):
    """Loss and gradients of the mean softmax cross-entropy of a 64-h-10 ReLU network."""
    w1, b1, w2, b2 = params
    h = x @ w1 + b1
    a = np.maximum(h, 0)
    z = a @ w2 + b2
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    loss = float(-np.mean(np.log(p[np.arange(len(y)), y] + 1e-12)))
    p[np.arange(len(y)), y] -= 1
    p /= len(y)
    da = p @ w2.T
    da[h <= 0] = 0
    return loss, [x.T @ da, da.sum(axis=0), a.T @ p, p.sum(axis=0)]


def accuracy(params, x, y):
    w1, b1, w2, b2 = params
    return float(np.mean((np.maximum(x @ w1 + b1, 0) @ w2 + b2).argmax(axis=1) == y))


def learning_rate(args, epoch):
    """Constant, or cosine decay from lr to 0 over the run (per epoch)."""
    if args.schedule == "cosine":
        return args.lr * 0.5 * (1 + np.cos(np.pi * epoch / args.epochs))
    return args.lr


def exchange(grads, codec, min_size, collective, seed, stats):
    """Average the ranks' gradients: large tensors through QSGD, the rest as one float32 buffer.

    The tensors that travel uncompressed are packed into one buffer and sent with a single
    float32 Allreduce, as frameworks bucket small tensors (one call instead of one each).
    """
    from qsgd_codec import mpi as qm

    out = [None] * len(grads)
    small = []
    for i, g in enumerate(grads):
        if codec is not None and g.size >= min_size:
            out[i] = collective(g, seed=seed, stats=stats, **codec)
        else:
            small.append(i)
    if small:
        packed = qm.allreduce_float32(
            np.concatenate([grads[i].reshape(-1) for i in small]), stats=stats
        )
        offset = 0
        for i in small:
            out[i] = packed[offset : offset + grads[i].size].reshape(grads[i].shape)
            offset += grads[i].size
    return out


def train_one(comm, name, args, data, collective):
    from qsgd_codec import mpi as qm

    rank, k = comm.Get_rank(), comm.Get_size()
    xtr, ytr, xte, yte = data
    shard = np.arange(rank, len(ytr), k)
    steps_per_epoch = (len(ytr) // k) // args.batch
    params = init_params(args.hidden, args.seed)
    codec = RUNS[name][1]
    stats = qm.Stats()
    history = []
    comm.Barrier()
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        lr = np.float32(learning_rate(args, epoch))
        order = np.random.default_rng([args.seed, rank, epoch]).permutation(shard)
        losses = []
        for i in range(steps_per_epoch):
            batch = order[i * args.batch : (i + 1) * args.batch]
            loss, grads = gradients(params, xtr[batch], ytr[batch])
            losses.append(loss)
            averaged = exchange(grads, codec, args.min_size, collective, args.seed, stats)
            for p, g in zip(params, averaged):
                p -= lr * g
        history.append(
            {
                "epoch": epoch + 1,
                "test_accuracy": accuracy(params, xte, yte),
                "train_loss": float(np.mean(losses)),
                "bytes_sent": int(stats.total_bytes_sent),
                "seconds": time.perf_counter() - t0,
            }
        )
    digest = hashlib.sha256(b"".join(p.tobytes() for p in params)).hexdigest()
    identical = len(set(comm.allgather(digest))) == 1
    return {
        "name": name,
        "label": RUNS[name][0],
        "history": history,
        "final_accuracy": history[-1]["test_accuracy"] if history else float("nan"),
        "bytes_sent": int(stats.total_bytes_sent),
        "control_bytes_sent": int(comm.allreduce(stats.control_bytes_sent)),
        "seconds": time.perf_counter() - t0,
        "encode_s": stats.encode_s,
        "comm_s": stats.comm_s,
        "decode_s": stats.decode_s,
        "identical_on_all_ranks": identical,
        "steps": steps_per_epoch * args.epochs,
    }


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for res in results:
        h = res["history"]
        acc = [100 * e["test_accuracy"] for e in h]
        left.plot([e["bytes_sent"] / 1e6 for e in h], acc, marker=".", label=res["label"])
        right.plot([e["epoch"] for e in h], acc, marker=".", label=res["label"])
    if any(e["bytes_sent"] > 0 for r in results for e in r["history"]):  # 0 with one rank
        left.set_xscale("log")
    left.set_xlabel("bytes sent by all ranks (MB, log scale)")
    right.set_xlabel("epoch")
    for ax in (left, right):
        ax.set_ylabel("test accuracy (%)")
        ax.grid(True, alpha=0.3)
        ax.set_ylim(
            bottom=max(
                0,
                min(
                    100 * e["test_accuracy"]
                    for r in results
                    for e in r["history"][1:] or r["history"]
                )
                - 2,
            )
        )
    right.legend(loc="lower right")
    fig.suptitle(
        f"Data-parallel SGD on digits (Algorithm 1), {results[0]['ranks']} ranks: 32-bit vs QSGD"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args):
    from mpi4py import MPI

    from qsgd_codec import mpi as qm

    from . import warm_codec

    comm = MPI.COMM_WORLD
    rank, k = comm.Get_rank(), comm.Get_size()
    names = [n.strip() for n in args.runs.split(",") if n.strip()]
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        if rank == 0:
            print(f"unknown run(s) {unknown}; choose from {list(RUNS)}")
        return 2
    data = load_data(comm, args.seed)
    sizes = [p.size for p in init_params(args.hidden, args.seed)]
    quantized = sum(s for s in sizes if s >= args.min_size)
    if rank == 0:
        print(
            f"Data-parallel SGD (QSGD Algorithm 1) on scikit-learn digits: {k} ranks, "
            f"{len(data[1])} training / {len(data[3])} test images"
        )
        share = 100 * quantized / sum(sizes)
        print(
            f"MLP 64-{args.hidden}-10, {sum(sizes):,} weights, {share:.1f}% "
            f"in tensors of >= {args.min_size} elements (quantized; the rest float32); "
            f"{args.epochs} epochs, batch {args.batch} per rank, lr {args.lr}",
            flush=True,
        )
    codecs = [RUNS[n][1] for n in names if RUNS[n][1] is not None]
    warm_codec(
        comm,
        [p.shape for p in init_params(args.hidden, args.seed) if p.size >= args.min_size],
        codecs,
    )
    results = []
    for name in names:
        res = train_one(comm, name, args, data, qm.allgather)
        res["ranks"] = k
        results.append(res)
        if rank == 0:
            print(
                f"  {res['label']:<28} test accuracy {100 * res['final_accuracy']:6.2f}%  "
                f"{res['bytes_sent'] / 1e6:8.2f} MB sent  {res['seconds']:5.1f} s",
                flush=True,
            )
    if rank != 0:
        return 0
    base = next((r["bytes_sent"] for r in results if r["name"] == "32bit"), None)
    print()
    print(
        "| run | test accuracy | bytes sent (all ranks) | vs 32-bit | time (s) | "
        "encode / comm / decode (s, rank 0) | ranks bit-identical |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        ratio = f"{base / r['bytes_sent']:.1f}x less" if base and r["name"] != "32bit" else "1x"
        print(
            f"| {r['label']} | {100 * r['final_accuracy']:.2f}% | {r['bytes_sent'] / 1e6:.2f} MB "
            f"| {ratio} | {r['seconds']:.1f} | {r['encode_s']:.1f} / {r['comm_s']:.1f} / "
            f"{r['decode_s']:.1f} | {'yes' if r['identical_on_all_ranks'] else 'NO'} |"
        )
    print(
        "\nBytes: payload all ranks sent.  32-bit is counted as a bandwidth-optimal ring "
        "Allreduce (2(K-1)/K x 4 bytes per value per rank); QSGD as Algorithm 1's allgather "
        "((K-1) copies of each rank's message)."
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot(results, out / "train.png")
    (out / "train.json").write_text(
        json.dumps({"ranks": k, "args": vars(args), "results": results}, indent=1)
    )
    print(f"wrote {out / 'train.png'} and {out / 'train.json'}")
    if not all(r["identical_on_all_ranks"] for r in results):
        return 1
    return 0
