"""The statistical contract of Q_s (paper Lemma 3.1, Theorem 3.2), with fixed seeds.

Each test draws many encodings of one vector with seeds 0..K-1 and compares Monte-Carlo
estimates to the paper's bounds and to the exact moments of the spec's quantizer.
"""

import math

import numpy as np
import pytest

import qsgd_codec
from qsgd_codec import reference as ref


def draws(x, k, **params):
    """Decoded values (k, n) and message bytes of k encodings with seeds 0..k-1."""
    messages = [qsgd_codec.encode(x, seed=seed, **params) for seed in range(k)]
    return np.stack([qsgd_codec.decode(m).astype(np.float64) for m in messages]), messages


def exact_moments(x, d, s, scale):
    """Per-element probability p of rounding up and the step r/s, from the spec's arithmetic."""
    x64 = x.astype(np.float64)
    step = np.empty_like(x64)
    p = np.empty_like(x64)
    for lo in range(0, x64.size, d):
        xb = x64[lo : lo + d]
        r = float(ref.bucket_scale(xb, scale))
        t = np.abs(xb) / r * s if r else np.zeros_like(xb)
        step[lo : lo + d] = r / s
        p[lo : lo + d] = t - np.floor(t)
    return step, p


@pytest.mark.parametrize("scale", ["l2", "max"])
@pytest.mark.parametrize("levels", [1, 4])
def test_unbiased(scale, levels):
    rng = np.random.default_rng(7)
    x = rng.standard_normal(256).astype(np.float32)
    k = 600
    y, _ = draws(x, k, levels=levels, bucket_size=64, scale=scale)
    step, p = exact_moments(x, 64, levels, scale)
    sd = step * np.sqrt(p * (1 - p) / k)  # exact std of the sample mean
    z = (y.mean(axis=0) - x) / np.maximum(sd, 1e-30)
    # each |z| is ~N(0,1); with 256 elements the max should stay well under 5
    assert np.max(np.abs(z)[sd > 0]) < 5.0
    assert np.all(y.mean(axis=0)[sd == 0] == x[sd == 0])  # p = 0: deterministic
    # the whole-vector bias is tiny compared with the spread of one draw
    assert abs(np.mean(y.mean(axis=0) - x)) < 4 * np.sqrt(np.sum(sd**2)) / x.size


@pytest.mark.parametrize("d, levels", [(64, 1), (64, 2), (64, 8), (256, 16)])
def test_variance_bound_and_exact_variance_l2(d, levels):
    rng = np.random.default_rng(11)
    x = rng.standard_normal(d).astype(np.float32)
    k = 400
    y, _ = draws(x, k, levels=levels, bucket_size=d, scale="l2")
    err = np.sum((y - x) ** 2, axis=1)
    norm2 = float(np.sum(x.astype(np.float64) ** 2))
    bound = min(d / levels**2, math.sqrt(d) / levels) * norm2  # Lemma 3.1
    assert err.mean() <= bound
    step, p = exact_moments(x, d, levels, "l2")
    exact = float(np.sum(step**2 * p * (1 - p)))
    # the estimate matches the quantizer's exact variance within 5 standard errors
    assert abs(err.mean() - exact) <= 5 * err.std() / math.sqrt(k)


@pytest.mark.parametrize("d, levels", [(128, 1), (512, 2), (512, 4), (1024, 32)])
@pytest.mark.parametrize("data", ["gaussian", "constant", "laplace"])
def test_sparsity_bound_l2(d, levels, data):
    rng = np.random.default_rng(3)
    x = {
        "gaussian": rng.standard_normal(d),
        "constant": np.ones(d),
        "laplace": rng.laplace(size=d),
    }[data].astype(np.float32)
    y, _ = draws(x, 50, levels=levels, bucket_size=d, scale="l2")
    nnz = np.count_nonzero(y, axis=1).mean()
    assert nnz <= levels * (levels + math.sqrt(d))  # corrected Theorem 3.4 form


def test_sparsity_printed_form_is_violated():
    """The camera-ready's s^2 + sqrt(n) is a typo: a correct quantizer exceeds it."""
    d, levels = 65536, 16
    x = np.ones(d, dtype=np.float32)
    y = qsgd_codec.decode(qsgd_codec.encode(x, levels=levels, bucket_size=d, scale="l2"))
    nnz = np.count_nonzero(y)
    assert nnz > levels**2 + math.sqrt(d)
    assert nnz <= levels * (levels + math.sqrt(d))


@pytest.mark.parametrize("d, levels", [(256, 1), (256, 2), (256, 16), (1024, 32)])
@pytest.mark.parametrize("data", ["gaussian", "constant"])
def test_elias_bits_within_theorem_3_2(d, levels, data):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(d) if data == "gaussian" else np.ones(d)).astype(np.float32)
    _, messages = draws(x, 30, levels=levels, bucket_size=d, scale="l2", coding="elias")
    bits = np.mean([qsgd_codec.inspect(m)["code_bits"] for m in messages]) + 32
    s = levels
    nnz_bound = s * (s + math.sqrt(d))
    bound = (3 + 1.5 * math.log2(2 * (s * s + d) / nnz_bound)) * nnz_bound + 32
    assert bits <= bound
