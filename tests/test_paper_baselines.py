"""The baselines of benchmarks/paper/ (TernGrad, 1BitSGD with error feedback) and the bound
formulas the paper-reproduction scripts compare against.  Small and fast (< 20 s)."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest

PAPER = Path(__file__).resolve().parent.parent / "benchmarks" / "paper"
sys.path.insert(0, str(PAPER))

import baselines as bl  # noqa: E402
import common  # noqa: E402

import qsgd_codec  # noqa: E402
from qsgd_codec.reference import omega_bits  # noqa: E402

# ----------------------------------------------------------------------------- TernGrad


def test_terngrad_without_clipping_is_qsgd_s1_max_one_bucket():
    rng = np.random.default_rng(1)
    g = (rng.standard_normal(3000) * rng.exponential(size=3000)).astype(np.float32)
    for seed in (0, 5, 2**63 + 11):
        r, levels = bl.terngrad_levels(g, seed)
        mine = bl.terngrad_decode(bl.terngrad_encode(g, seed), g.size)
        codec = qsgd_codec.decode(
            qsgd_codec.encode(g, levels=1, scale="max", bucket_size=g.size, seed=seed)
        )
        assert np.array_equal(mine.view(np.uint32), codec.view(np.uint32))
        assert np.array_equal(mine, r * levels.astype(np.float32))


@pytest.mark.parametrize("clip", [None, 2.5])
def test_terngrad_unbiased_for_the_clipped_gradient(clip):
    rng = np.random.default_rng(2)
    g = rng.standard_t(3, size=200).astype(np.float32)
    k = 2000
    draws = np.stack(
        [r * lv for r, lv in (bl.terngrad_levels(g, seed, clip) for seed in range(k))]
    ).astype(np.float64)
    target = g.astype(np.float64)
    if clip is not None:
        bound = clip * np.std(target)
        target = np.clip(target, -bound, bound)
        assert np.any(np.abs(g) > bound)  # the test data does get clipped
    r = float(np.max(np.abs(target)))
    p = np.abs(target) / r
    sd = r * np.sqrt(p * (1 - p) / k)  # exact std of the sample mean
    z = (draws.mean(axis=0) - target) / np.maximum(sd, 1e-30)
    assert np.max(np.abs(z[sd > 0])) < 5.0
    # exact variance of one draw: sum r^2 p (1 - p)
    var = np.sum((draws - target) ** 2, axis=1).mean()
    exact = float(np.sum(r * r * p * (1 - p)))
    assert abs(var - exact) < 0.05 * exact
    if clip is not None:  # biased for the raw gradient
        assert np.abs(draws.mean(axis=0) - g).max() > 10 * sd.max()


def test_terngrad_message_layout_and_errors():
    g = np.array([0.5, -1.0, 0.0, 0.25, -0.75], dtype=np.float32)
    data = bl.terngrad_encode(g, seed=3)
    assert len(data) == bl.terngrad_message_bytes(5) == 4 + 2
    assert np.frombuffer(data, "<f4", count=1)[0] == 1.0
    levels = np.round(bl.terngrad_decode(data, 5)).astype(int)
    assert levels[1] == -1 and levels[2] == 0  # the max is kept, zero stays zero
    with pytest.raises(ValueError):
        bl.terngrad_decode(data[:-1], 5)
    with pytest.raises(ValueError):
        bl.terngrad_decode(data[:4] + b"\x02\x00", 5)  # field value 2 is invalid
    with pytest.raises(ValueError):
        bl.terngrad_levels(np.array([1.0, np.nan]), 0)
    assert bl.terngrad_levels(np.zeros(4), 0)[1].tolist() == [0, 0, 0, 0]


# ----------------------------------------------------------------------------- 1BitSGD


def test_onebit_reconstruction_keeps_column_sums():
    rng = np.random.default_rng(4)
    v = rng.standard_normal((37, 6))
    v[:, 2] = np.abs(v[:, 2])  # a column with no negative entry
    signs, pos, neg = bl.onebit_quantize(v, v.shape)
    rec = bl.onebit_dequantize(signs, pos, neg)
    assert np.array_equal(signs, v >= 0)
    assert neg[2] == 0.0
    np.testing.assert_allclose(rec.sum(axis=0), v.sum(axis=0), rtol=1e-6, atol=1e-6)


def test_onebit_message_roundtrip():
    rng = np.random.default_rng(5)
    for shape in [(13, 7), (64,), (3, 4, 5)]:
        g = rng.standard_normal(shape).astype(np.float32)
        signs, pos, neg = bl.onebit_quantize(g, shape)
        data = bl.onebit_encode(signs, pos, neg)
        assert len(data) == bl.onebit_message_bytes(shape)
        out = bl.onebit_decode(data, shape)
        assert out.shape == shape
        assert np.array_equal(
            out.reshape(signs.shape), bl.onebit_dequantize(signs, pos, neg).astype(np.float32)
        )
        with pytest.raises(ValueError):
            bl.onebit_decode(data + b"\x00", shape)


def test_error_feedback_residual_bookkeeping():
    """What was sent plus what is kept equals everything that came in: after T steps,
    sum(decoded) + residual_T == sum(g_t), and the residual stays bounded."""
    rng = np.random.default_rng(6)
    shape = (50, 8)
    state = bl.OneBitEF(shape)
    total_in = np.zeros(400)
    total_sent = np.zeros(400)
    norms = []
    for _ in range(60):
        g = (rng.standard_normal(shape) + 0.3).astype(np.float32)
        before = state.residual.copy()
        data = state.compress(g)
        sent = bl.onebit_decode(data, shape).astype(np.float64).reshape(-1)
        # one step: g + old residual == sent + new residual (to float64 rounding)
        np.testing.assert_allclose(
            sent + state.residual, g.reshape(-1) + before, rtol=0, atol=1e-12
        )
        total_in += g.reshape(-1)
        total_sent += sent
        norms.append(np.linalg.norm(state.residual))
    np.testing.assert_allclose(total_sent + state.residual, total_in, rtol=0, atol=1e-9)
    # error feedback keeps the accumulated error bounded (no drift with t)
    assert max(norms[30:]) < 3 * max(norms[:30])
    with pytest.raises(ValueError):
        state.compress(np.zeros(7))


def test_error_feedback_corrects_the_bias_of_sign_compression():
    """A constant gradient whose entries differ in size: plain 1-bit sends the column mean to
    every row (biased per coordinate); with error feedback the running average converges."""
    g = np.linspace(0.1, 2.0, 40).reshape(40, 1)
    state = bl.OneBitEF(g.shape)
    steps = 400
    avg = np.zeros(40)
    for _ in range(steps):
        avg += bl.onebit_decode(state.compress(g), g.shape).reshape(-1).astype(np.float64)
    avg /= steps
    plain = bl.onebit_dequantize(*bl.onebit_quantize(g, g.shape)).reshape(-1)
    assert np.abs(plain - g.reshape(-1)).max() > 0.9  # biased without feedback
    assert np.abs(avg - g.reshape(-1)).max() < 0.1  # the average converges with it


# ----------------------------------------------------------------------------- bound formulas


def test_omega_length_matches_the_reference_coder():
    n = np.arange(1, 3000)
    assert np.array_equal(common.omega_length(n), [len(omega_bits(int(v))) for v in n])
    big = [65536, 2**24, 2**32 - 1]
    assert common.omega_length(big).tolist() == [28, 36, 43]


def test_bound_formulas():
    assert common.variance_bound(512, 16) == pytest.approx(math.sqrt(512) / 16)
    assert common.variance_bound(512, 32) == pytest.approx(512 / 32**2)
    assert common.nnz_bound(65536, 16) == 16 * (16 + 256)
    assert common.nnz_printed(65536, 16) == 16**2 + 256
    # s = sqrt(d): s(s + sqrt d) = 2d and the log term is log2(2), so 4.5 * 2d + 32
    assert common.elias_bound_bits(4096, 64) == pytest.approx(9 * 4096 + 32)
