"""The two baselines of the Table 1 reproduction, as small variations of the QSGD quantizer.

- **TernGrad** (Wen et al., NIPS 2017): one scale per tensor, ``r = max |g|`` after optional
  clipping at ``clip * std(g)``; each coordinate becomes ``r * sign(g_i) * b_i`` with
  ``b_i ~ Bernoulli(|g_i| / r)``.  Without clipping this is exactly QSGD with ``s = 1``,
  ``scale="max"`` and one bucket holding the whole tensor (``tests/test_paper_baselines.py``
  checks the equality value for value).  With clipping it is unbiased for the *clipped*
  gradient only.  Message: the float32 scale, then 2 bits per coordinate.
- **1BitSGD with error feedback** (Seide et al., Interspeech 2014): each worker adds its
  residual to the gradient, sends one sign bit per coordinate and, per column, two float32
  reconstruction values (the mean of the column's non-negative entries and the mean of its
  negative entries), and keeps what was lost as the next residual.  Biased; the feedback makes
  the error of the sum over steps bounded.  Message: 2 float32 per column, then 1 bit per
  coordinate.

Randomness comes from the project's counter-based generator (spec 8.3) keyed by (seed, index),
so the baselines are as deterministic as the codec.  Neither message carries a header: the
receivers know the tensor's shape.  (QSGD messages carry the wire format's 56-64 byte header
and CRC; at the tensor sizes used here that is under 0.07 bits per coordinate.)
"""

import numpy as np

from qsgd_codec.reference import uniform

# ----------------------------------------------------------------------------- TernGrad


def terngrad_levels(g, seed, clip=None):
    """TernGrad's quantization of one tensor: (scale r as float32, levels in {-1, 0, 1} int8).

    ``clip``: clip g to +-clip*std(g) first (the paper uses 2.5); None leaves g alone.
    The uniforms are the codec's u_i for (seed, i), so ``clip=None`` reproduces
    ``qsgd_codec.encode(g, levels=1, scale="max", bucket_size=g.size, seed=seed)``.
    """
    g = np.asarray(g)
    x = g.astype(np.float64).reshape(-1)
    if x.size == 0:
        return np.float32(0.0), np.zeros(0, dtype=np.int8)
    if not np.all(np.isfinite(x)):
        raise ValueError("TernGrad cannot quantize NaN or infinite gradients")
    if clip is not None:
        if clip <= 0:
            raise ValueError(f"clip must be positive, got {clip}")
        bound = float(clip) * float(np.std(x))
        x = np.clip(x, -bound, bound)
    r = _round_up_float32(float(np.max(np.abs(x))))
    if r == 0:
        return r, np.zeros(x.size, dtype=np.int8)
    p = np.abs(x) / float(r)
    b = uniform(seed, np.arange(x.size)) < p
    b |= p >= 1.0  # the coordinate at the max is kept surely
    levels = np.where(b, np.where(x < 0, -1, 1), 0).astype(np.int8)
    return r, levels


def terngrad_encode(g, seed, clip=None):
    """TernGrad message bytes: float32 scale (little-endian), then 2-bit fields LSB first
    (0 -> 0, 1 -> +1, 3 -> -1)."""
    r, levels = terngrad_levels(g, seed, clip)
    fields = (levels.astype(np.int16) & 3).astype(np.uint8)
    bits = ((fields[:, None] >> np.arange(2, dtype=np.uint8)) & 1).astype(np.uint8)
    return (
        np.float32(r).astype("<f4").tobytes()
        + np.packbits(bits.reshape(-1), bitorder="little").tobytes()
    )


def terngrad_decode(data, n, dtype=np.float32):
    """Inverse of :func:`terngrad_encode` for a tensor of ``n`` elements."""
    expected = 4 + -(-2 * n // 8)
    if len(data) != expected:
        raise ValueError(
            f"TernGrad message for {n} elements must be {expected} bytes, got {len(data)}"
        )
    r = float(np.frombuffer(data, dtype="<f4", count=1)[0])
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8, offset=4), bitorder="little")[
        : 2 * n
    ].reshape(n, 2)
    fields = bits[:, 0].astype(np.int8) + 2 * bits[:, 1].astype(np.int8)
    if np.any(fields == 2):
        raise ValueError("invalid TernGrad field 2")
    levels = np.where(fields == 3, -1, fields)
    return (r * levels).astype(dtype)


def terngrad_message_bytes(n):
    return 4 + -(-2 * n // 8)


# ----------------------------------------------------------------------------- 1BitSGD


def _columns(shape):
    """(rows, cols) of the column view: a matrix's columns; anything else is one column."""
    if len(shape) >= 2:
        cols = int(shape[-1])
        return int(np.prod(shape[:-1])), cols
    return int(np.prod(shape)) if shape else 1, 1


def onebit_quantize(v, shape):
    """1-bit quantization of ``v`` (already including the residual), column by column.

    Returns (signs bool[rows, cols] = v >= 0, pos float32[cols], neg float32[cols]) where
    pos / neg are the means of the column's non-negative / negative entries (0 if none).
    """
    rows, cols = _columns(shape)
    m = np.asarray(v, dtype=np.float64).reshape(rows, cols)
    signs = m >= 0
    n_pos = signs.sum(axis=0)
    n_neg = rows - n_pos
    sum_pos = np.where(signs, m, 0.0).sum(axis=0)
    sum_neg = np.where(signs, 0.0, m).sum(axis=0)
    pos = np.where(n_pos > 0, sum_pos / np.maximum(n_pos, 1), 0.0).astype(np.float32)
    neg = np.where(n_neg > 0, sum_neg / np.maximum(n_neg, 1), 0.0).astype(np.float32)
    return signs, pos, neg


def onebit_dequantize(signs, pos, neg):
    return np.where(signs, pos[None, :], neg[None, :])


def onebit_encode(signs, pos, neg):
    """Message bytes: cols float32 positive means, cols float32 negative means, then the sign
    bits of the (rows, cols) matrix in C order, LSB first (1 = non-negative)."""
    return (
        pos.astype("<f4").tobytes()
        + neg.astype("<f4").tobytes()
        + np.packbits(signs.reshape(-1), bitorder="little").tobytes()
    )


def onebit_decode(data, shape, dtype=np.float32):
    rows, cols = _columns(shape)
    expected = onebit_message_bytes(shape)
    if len(data) != expected:
        raise ValueError(
            f"1-bit message for shape {shape} must be {expected} bytes, got {len(data)}"
        )
    pos = np.frombuffer(data, dtype="<f4", count=cols)
    neg = np.frombuffer(data, dtype="<f4", count=cols, offset=4 * cols)
    signs = (
        np.unpackbits(np.frombuffer(data, dtype=np.uint8, offset=8 * cols), bitorder="little")[
            : rows * cols
        ]
        .reshape(rows, cols)
        .astype(bool)
    )
    return onebit_dequantize(signs, pos, neg).astype(dtype).reshape(shape)


def onebit_message_bytes(shape):
    rows, cols = _columns(shape)
    return 8 * cols + -(-rows * cols // 8)


class OneBitEF:
    """One worker's 1BitSGD state for one tensor: the error-feedback residual.

    ``compress(g)`` adds the residual, quantizes, stores the new residual
    (``g + residual - dequantized``, kept in float64) and returns the message bytes.
    """

    def __init__(self, shape):
        self.shape = tuple(shape)
        self.residual = np.zeros(int(np.prod(self.shape)) if self.shape else 1, dtype=np.float64)

    def compress(self, g):
        g = np.asarray(g, dtype=np.float64).reshape(-1)
        if g.size != self.residual.size:
            raise ValueError(f"gradient has {g.size} elements, the state {self.residual.size}")
        v = g + self.residual
        signs, pos, neg = onebit_quantize(v, self.shape)
        sent = onebit_dequantize(signs, pos, neg).reshape(-1)  # what every receiver decodes
        self.residual = v - sent.astype(np.float64)
        return onebit_encode(signs, pos, neg)


# ----------------------------------------------------------------------------- helpers


def _round_up_float32(y):
    """The smallest float32 >= y (y >= 0), so |g_i| / r <= 1 as in the codec (spec 8.2)."""
    f = np.float32(y)
    if float(f) < y:
        f = np.nextafter(f, np.float32(np.inf))
    return np.float32(f)
