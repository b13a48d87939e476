"""Helpers shared by the paper-reproduction scripts in benchmarks/paper/.

Everything here is small and boring on purpose: where results go, how a markdown table is
written, the one plotting setup (matplotlib, Agg backend), the shipped datasets, and the
formulas of the paper's bounds (docs/paper-claims.md discusses each one).
"""

import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
REPO = HERE.parent.parent

if str(REPO) not in sys.path:  # run from anywhere without installing the package
    sys.path.insert(0, str(REPO))


# ----------------------------------------------------------------------------- the paper's bounds


def variance_bound(d, s):
    """Lemma 3.1: E||Q_s(v) - v||^2 <= min(d/s^2, sqrt(d)/s) ||v||^2 (L2 scaling)."""
    return min(d / s**2, math.sqrt(d) / s)


def nnz_bound(d, s):
    """Lemma 3.1 (and the corrected Theorem 3.4): E[#nonzeros] <= s(s + sqrt d)."""
    return s * (s + math.sqrt(d))


def nnz_printed(d, s):
    """Theorem 3.4 as printed in the camera-ready: s^2 + sqrt(d) (a typo; see the docs)."""
    return s**2 + math.sqrt(d)


def elias_bound_bits(d, s):
    """Theorem 3.2 with o(1) = 0: expected bits of Code_s for one bucket, 32-bit scale included."""
    k = s * (s + math.sqrt(d))
    return (3 + 1.5 * math.log2(2 * (s**2 + d) / k)) * k + 32


def bit_length(n):
    """bit_length of each non-negative integer (< 2**53), exactly, via frexp's exponent."""
    return np.frexp(np.asarray(n, dtype=np.float64))[1].astype(np.int64)


def omega_length(n):
    """Bits of the Elias omega code of each integer n >= 1 (vectorised, exact):
    L(1) = 1, L(N) = B(N) + L(B(N) - 1) with B = bit_length."""
    value = np.asarray(n, dtype=np.int64)
    total = np.ones(value.shape, dtype=np.int64)
    while True:
        more = value > 1
        if not more.any():
            return total
        b = bit_length(value)
        total += np.where(more, b, 0)
        value = np.where(more, b - 1, 1)


# ----------------------------------------------------------------------------- output


def results_path(name):
    RESULTS.mkdir(parents=True, exist_ok=True)
    return RESULTS / name


def markdown_table(header, rows, align=None):
    """A GitHub markdown table from a header list and rows of already formatted cells."""
    align = align or ["---"] + ["--:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def provenance(command, seconds):
    """The lines every results file starts with: how to regenerate it and what it took."""
    import qsgd_codec

    try:
        from qsgd_codec import api

        backend = api._backend().__name__
    except Exception:  # provenance only: never fail a run over it
        backend = "unknown"
    return (
        f"Regenerate: `{command}` (from the repository root).\n\n"
        f"Last run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {seconds:.0f} s wall "
        f"clock, on {platform.machine()} with {os.cpu_count()} cores shared with other jobs; "
        f"qsgd_codec {qsgd_codec.__version__}, codec backend `{backend}`, "
        f"numpy {np.__version__}.\n"
    )


def setup_matplotlib():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "figure.dpi": 110,
            "savefig.dpi": 110,
            "font.size": 9,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "legend.fontsize": 8,
        }
    )
    return plt


# ----------------------------------------------------------------------------- datasets


def digits(test_fraction=0.25, split_seed=0):
    """scikit-learn's shipped 8x8 digits (1797 images, 10 classes), pixels scaled to [0, 1].

    A fixed stratified split; returns (X_train, y_train, X_test, y_test) as float32 / int64.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    Xtr, Xte, ytr, yte = train_test_split(
        X, y, test_size=test_fraction, random_state=split_seed, stratify=y
    )
    return Xtr, ytr.astype(np.int64), Xte, yte.astype(np.int64)


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
