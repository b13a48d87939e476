"""The random source of the format (spec 8.3) and the seed convention of the collectives.

SplitMix64's output function :func:`mix64` is written once, here.  It is plain uint64
arithmetic, so the same function runs on NumPy arrays and scalars (the reference), is
compiled by ``numba.njit`` into the CPU kernels and by ``numba.cuda.jit`` into the GPU
kernels.  Python callers with plain ints use :func:`mix64_int`.

:func:`derive_seed` is the one convention for per-rank, per-step seeds (docs/seeds.md): the
MPI collectives and the PyTorch DDP hook both use it.
"""

import numpy as np

from ..errors import ParameterError

U64 = np.uint64
GAMMA = U64(0x9E3779B97F4A7C15)
MIX_1 = U64(0xBF58476D1CE4E5B9)
MIX_2 = U64(0x94D049BB133111EB)
ONE = U64(1)
# shift counts typed uint64: a uint64 shifted by an int64 becomes int64 (numba) or float64
SH11, SH27, SH30, SH31 = U64(11), U64(27), U64(30), U64(31)
TWO_M53 = 2.0**-53
MASK64 = (1 << 64) - 1

#: phase of a rank's own contribution (allgather, reduce-scatter chunks, DDP gradients)
PHASE_CONTRIBUTION = 0
#: phase of a re-encoded sum (allreduce owners, the parameter-server root)
PHASE_AGGREGATE = 1


def mix64(z):
    """SplitMix64's output function on uint64 values (wrapping arithmetic, spec 8.3)."""
    z = (z ^ (z >> SH30)) * MIX_1
    z = (z ^ (z >> SH27)) * MIX_2
    return z ^ (z >> SH31)


def random_word(key, i):
    """The generator's 64-bit output for element ``i``: mix(key + (i + 1) * gamma)."""
    return mix64(key + (U64(i) + ONE) * GAMMA)


def mix64_int(z: int) -> int:
    """:func:`mix64` of a Python int in 0 .. 2^64 - 1, as a Python int."""
    with np.errstate(over="ignore"):
        return int(mix64(U64(z)))


def seed_key(seed: int) -> int:
    """key = mix(seed): the generator state of element -1 (spec 8.3)."""
    return mix64_int(seed)


def derive_seed(
    seed: int, rank: int, step: int, phase: int = PHASE_CONTRIBUTION, chunk: int = 0
) -> int:
    """The encoder seed of one message: a SplitMix64 hash of (seed, rank, step, phase, chunk).

    With all arithmetic on unsigned 64-bit integers modulo 2**64 and ``mix`` the SplitMix64
    output function of the wire format (spec section 8.3)::

        h = mix(seed)
        for v in (rank, step, phase, chunk):
            h = mix(h + (v + 1) * 0x9E3779B97F4A7C15)
        return h

    Each field goes through a full avalanche round, so seeds of neighbouring ranks or steps
    share no structure, and the encoder's own ``mix(seed)`` keys independent streams.
    ``phase`` is :data:`PHASE_CONTRIBUTION` (0) for a rank's own data and
    :data:`PHASE_AGGREGATE` (1) for a re-encoded sum; ``chunk`` numbers the messages one rank
    encodes in one step (the owner index in :func:`qsgd_codec.mpi.allreduce`; in the DDP hook
    ``bucket << 32 | tensor``).  Every value must be an integer in 0 .. 2**64 - 1.
    """
    values = (seed, rank, step, phase, chunk)
    for name, v in zip(("seed", "rank", "step", "phase", "chunk"), values):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= int(v) <= MASK64:
            raise ParameterError(f"derive_seed: {name} must be an integer in 0..2**64-1, got {v!r}")
    h = mix64_int(int(seed))
    for v in values[1:]:
        h = mix64_int((h + (int(v) + 1) * int(GAMMA)) & MASK64)
    return h
