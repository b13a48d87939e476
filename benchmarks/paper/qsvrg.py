"""Part 4 of the paper reproduction: QSVRG (paper section 3.3, Theorem 3.6).

Regenerate (from the repository root):

    .venv/bin/python benchmarks/paper/qsvrg.py

Writes benchmarks/paper/results/qsvrg.md and qsvrg.png.

Problem: L2-regularised multinomial logistic regression on scikit-learn's shipped digits
(1347 training images, 64 pixels scaled to [0, 1], each image normalised to unit L2 norm, a
bias feature; 10 classes, so n = 650 parameters), lambda = LAMBDA.  f* comes from L-BFGS run to
machine precision.  K = 4 simulated workers each hold a quarter of the data.

Methods (same step size eta for all, same minibatch of B samples per worker per step):

- SVRG (unquantized): per epoch p, the full gradient mu = grad f(y_p) is computed (each worker
  sends its shard's gradient as float32), then T inner steps
  x <- x - eta * mean_k (grad f_Bk(x) - grad f_Bk(y_p) + mu), each worker sending float32;
  y_{p+1} = the average of the epoch's iterates (the paper's choice in Theorem 3.6).
- QSVRG: the same, but every inner message is ``qsgd_codec.encode(v, levels=floor(sqrt n),
  bucket_size=n, scale="l2", coding="elias")`` of the worker's variance-reduced gradient,
  decoded by everyone; the full gradient stays unquantized (as in the paper).
- QSGD: x <- x - eta * mean_k Q(grad f_Bk(x)) with the same codec settings, constant step;
  one "epoch" = the same number T of steps.
- SGD: unquantized, for reference.
- QSVRG at s = 1 (the sparse regime, variance factor sqrt(n) = 25 instead of <= 2), to show
  what the choice s = sqrt(n) buys.

Bits sent count every byte of every message put on the wire by the K workers (the wire
format's header and CRC included), plus the unquantized full-gradient rounds of (Q)SVRG.
"""

import argparse
import math
import time

import common
import numpy as np
from common import markdown_table, results_path

import qsgd_codec

K = 4
LAMBDA = 3e-3
B = 4  # samples per worker per step
ETA = 2.0
EPOCHS = 20
SEEDS = 3
TARGET = 1e-4  # suboptimality at which bits-to-target are compared
COMMAND = ".venv/bin/python benchmarks/paper/qsvrg.py"


class Problem:
    def __init__(self):
        Xtr, ytr, _, _ = common.digits()
        X = Xtr.astype(np.float64)
        X /= np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
        self.X = np.hstack([X, np.ones((X.shape[0], 1))])
        self.y = ytr
        self.m, self.p = self.X.shape
        self.c = 10
        self.n = self.c * self.p
        self.Y = np.eye(self.c)[ytr]

    def loss(self, w):
        W = w.reshape(self.c, self.p)
        Z = self.X @ W.T
        Z -= Z.max(axis=1, keepdims=True)
        logp = Z - np.log(np.exp(Z).sum(axis=1, keepdims=True))
        return float(-(logp * self.Y).sum() / self.m + 0.5 * LAMBDA * w @ w)

    def grad(self, w, idx=None):
        """Gradient of the average loss over rows idx (all rows if None) plus the L2 term."""
        X = self.X if idx is None else self.X[idx]
        Y = self.Y if idx is None else self.Y[idx]
        W = w.reshape(self.c, self.p)
        Z = X @ W.T
        Z -= Z.max(axis=1, keepdims=True)
        P = np.exp(Z)
        P /= P.sum(axis=1, keepdims=True)
        return ((P - Y).T @ X / X.shape[0]).reshape(-1) + LAMBDA * w

    def optimum(self):
        from scipy.optimize import minimize

        res = minimize(
            lambda w: (self.loss(w), self.grad(w)),
            np.zeros(self.n),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": 10000, "gtol": 1e-13, "ftol": 1e-16, "maxcor": 30},
        )
        w = res.x
        for _ in range(20):  # polish with full-gradient Newton-free steps
            w = w - 0.5 * self.grad(w)
        return min(res.fun, self.loss(w))


class Comm:
    """The K workers' messages: quantized (the codec) or float32, with a byte counter."""

    def __init__(self, levels, n):
        self.quantize = levels is not None
        self.levels = levels
        self.n = n
        self.bits = 0
        self.counter = 0

    def send_float32(self, vectors):
        self.bits += 32 * sum(v.size for v in vectors)
        return [v.astype(np.float32).astype(np.float64) for v in vectors]

    def send(self, vectors, run_seed):
        if not self.quantize:
            return self.send_float32(vectors)
        out = []
        for v in vectors:
            self.counter += 1
            msg = qsgd_codec.encode(
                v.astype(np.float32),
                levels=self.levels,
                bucket_size=self.n,
                scale="l2",
                coding="elias",
                seed=(run_seed << 32) + self.counter,
            )
            self.bits += 8 * len(msg)
            out.append(qsgd_codec.decode(msg).astype(np.float64))
        return out


def run(problem, method, seed, epochs, fstar):
    rng = np.random.default_rng([seed, 17])
    shards = np.array_split(rng.permutation(problem.m), K)
    T = int(math.ceil(problem.m / (K * B)))  # one pass over the data per epoch
    comm = Comm(LEVELS[method](problem.n), problem.n)
    w = np.zeros(problem.n)
    history = [(0, 0, problem.loss(w) - fstar)]
    for epoch in range(1, epochs + 1):
        if "svrg" in method:
            y = w
            parts = comm.send_float32([problem.grad(y, s) * len(s) for s in shards])
            mu = sum(parts) / problem.m
            x = y.copy()
            total = np.zeros_like(x)
            for _ in range(T):
                batches = [rng.choice(s, B, replace=False) for s in shards]
                msgs = comm.send(
                    [problem.grad(x, b) - problem.grad(y, b) + mu for b in batches], seed
                )
                x = x - ETA * sum(msgs) / K
                total += x
            w = total / T
        else:
            for _ in range(T):
                batches = [rng.choice(s, B, replace=False) for s in shards]
                msgs = comm.send([problem.grad(w, b) for b in batches], seed)
                w = w - ETA * sum(msgs) / K
        gap = problem.loss(w) - fstar
        history.append((epoch, comm.bits, gap))
        if not np.isfinite(gap):
            break
    return np.array(history, dtype=np.float64), T


METHODS = {
    "svrg": "SVRG (float32)",
    "qsvrg": "QSVRG (s=√n=25, l2, elias)",
    "qsvrg-s1": "QSVRG (s=1, l2, elias)",
    "qsgd": "QSGD (s=√n=25, l2, elias)",
    "sgd": "SGD (float32)",
}
LEVELS = {
    "svrg": lambda n: None,
    "qsvrg": math.isqrt,
    "qsvrg-s1": lambda n: 1,
    "qsgd": math.isqrt,
    "sgd": lambda n: None,
}
STYLE = {
    "svrg": ("C0", "-"),
    "qsvrg": ("C3", "-"),
    "qsvrg-s1": ("C2", "-."),
    "qsgd": ("C1", "--"),
    "sgd": ("C7", ":"),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--seeds", type=int, default=SEEDS)
    args = parser.parse_args()
    start = time.perf_counter()
    problem = Problem()
    fstar = problem.optimum()
    histories = {}
    T = None
    for method in METHODS:
        histories[method] = []
        for seed in range(args.seeds):
            h, T = run(problem, method, seed, args.epochs, fstar)
            histories[method].append(h)
        print(
            f"{method}: final gap {np.median([h[-1, 2] for h in histories[method]]):.3e} "
            f"at {time.perf_counter() - start:.0f} s",
            flush=True,
        )
    seconds = time.perf_counter() - start
    report(problem, fstar, histories, T, seconds, args)
    plot(histories, problem)
    print(f"wrote {results_path('qsvrg.md')} in {seconds:.0f} s")


def rate(h, lo=3):
    """Per-epoch contraction factor: geometric mean of gap ratios from epoch lo to the end
    (or to where the gap reaches 1e-12, float64 noise)."""
    gaps = h[:, 2]
    end = len(gaps) - 1
    below = np.flatnonzero(gaps[lo:] < 1e-12)
    if below.size:
        end = lo + below[0]
    if end <= lo:
        return float("nan")
    return float((gaps[end] / gaps[lo]) ** (1 / (end - lo)))


def report(problem, fstar, histories, T, seconds, args):
    n = problem.n
    msg_bytes = len(
        qsgd_codec.encode(
            np.random.default_rng(0).standard_normal(n).astype(np.float32),
            levels=math.isqrt(n),
            bucket_size=n,
            scale="l2",
            coding="elias",
        )
    )
    lines = [
        "# Paper claims, part 4: QSVRG converges linearly with quantized messages\n",
        common.provenance(COMMAND, seconds),
        f"L2-regularised multinomial logistic regression on the shipped digits "
        f"({problem.m} training images, unit-norm rows + bias, n = {n} parameters, "
        f"lambda = {LAMBDA}); f* = {fstar:.12f} (L-BFGS). K = {K} workers, B = {B} samples "
        f"per worker per step, T = {T} inner steps per epoch (one pass), eta = {ETA}, "
        f"{args.seeds} seeds (median shown; the band in the plot is min..max). Quantized "
        f"messages: levels s = floor(sqrt(n)) = {math.isqrt(n)}, one bucket of n, L2 scale, "
        f"elias coding: about {8 * msg_bytes / n:.2f} bits per coordinate on the wire "
        f"(a Gaussian vector: {msg_bytes} bytes vs {4 * n} bytes float32). Setup and "
        f"discussion: [docs/paper-claims.md](../../../docs/paper-claims.md).\n",
        "Contraction = per-epoch factor of f(y_p) - f*, geometric mean from epoch 3 to the "
        "end (or to where the gap reaches 1e-12); Theorem 3.6 promises 0.9 with T = O(L/l).\n",
    ]
    rows = []
    for method, hs in histories.items():
        final = np.median([h[-1, 2] for h in hs])
        bits = np.median([h[-1, 1] for h in hs])
        reach = [
            h[np.argmax(h[:, 2] < TARGET), 1] if np.any(h[:, 2] < TARGET) else np.inf for h in hs
        ]
        reach = np.median(reach)
        rows.append(
            [
                METHODS[method],
                f"{final:.2e}",
                f"{np.median([rate(h) for h in hs]):.3f}",
                f"{bits / 8 / 1e6:.2f}",
                f"{bits / (len(hs[0]) - 1) / 1e6:.2f}",
                f"{reach / 1e6:.2f}" if np.isfinite(reach) else "not reached",
            ]
        )
    lines.append(
        markdown_table(
            [
                "method",
                f"f - f* after {args.epochs} epochs",
                "contraction / epoch",
                "MB sent in all",
                "Mbit per epoch",
                f"Mbit to reach f - f* < {TARGET:g}",
            ],
            rows,
            ["---"] + ["--:"] * 5,
        )
    )
    lines.append("\n![QSVRG](qsvrg.png)\n")
    lines.append("\nPer epoch (median over seeds):\n")
    epochs = np.arange(len(histories["svrg"][0]))
    rows = []
    for e in epochs[:: max(1, len(epochs) // 12)]:
        rows.append(
            [int(e)]
            + [f"{np.median([h[e, 2] for h in hs if e < len(h)]):.2e}" for hs in histories.values()]
        )
    lines.append(markdown_table(["epoch"] + list(METHODS.values()), rows))
    results_path("qsvrg.md").write_text("\n".join(lines))


def plot(histories, problem):
    plt = common.setup_matplotlib()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for method, hs in histories.items():
        color, ls = STYLE[method]
        L = min(len(h) for h in hs)
        gaps = np.stack([h[:L, 2] for h in hs])
        bits = np.median(np.stack([h[:L, 1] for h in hs]), axis=0)
        med = np.median(gaps, axis=0)
        lw, alpha = (3.5, 0.45) if method == "svrg" else (1.5, 1.0)
        for ax, x, first in ((axes[0], np.arange(L), 0), (axes[1], bits / 1e6, 1)):
            ax.plot(
                x[first:],
                med[first:],
                color=color,
                ls=ls,
                lw=lw,
                alpha=alpha,
                label=METHODS[method],
            )
            ax.fill_between(
                x[first:],
                gaps.min(axis=0)[first:],
                gaps.max(axis=0)[first:],
                color=color,
                alpha=0.15,
            )
    for ax in axes:
        ax.set_yscale("log")
    axes[0].set_xlabel("epoch (outer iteration; SVRG variants also take one full gradient)")
    axes[1].set_xscale("log")
    axes[1].set_xlabel("Mbit sent by all workers (log; from epoch 1)")
    axes[0].set_ylabel("f(y) - f*")
    axes[0].set_title(f"digits logistic regression, n={problem.n}, K={K}")
    axes[1].set_title("per bit sent")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(results_path("qsvrg.png"))
    plt.close(fig)


if __name__ == "__main__":
    main()
