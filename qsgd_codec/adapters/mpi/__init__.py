"""Reference MPI collectives for QSGD messages (mpi4py), and the float32 baseline.

Four collectives, each called by every rank of a communicator with an array of the same
shape and dtype, each returning the mean (or sum) of the ranks' arrays as a NumPy array that
is **bit-identical on every rank**:

- :func:`allgather` -- the paper's Algorithm 1.  Each rank encodes its array; the
  variable-length messages are exchanged with ``Allgather`` of the byte counts and
  ``Allgatherv`` of the bytes; every rank decodes every message and averages them.
  Per-rank traffic: ``(K-1) * M`` bytes out and in, ``M`` the size of one message.
- :func:`allreduce` -- the scalable form.  The array is cut into ``K`` bucket-aligned
  chunks, chunk ``j`` owned by rank ``j``.  Reduce-scatter: every rank encodes each chunk it
  does not own and sends it to its owner (``Alltoallv``); the owner decodes the ``K-1``
  copies, adds its own exact chunk and re-encodes the mean.  Allgather: the compressed means
  are exchanged (``Allgatherv``) and every rank decodes all of them -- the owner too, so
  nobody keeps its exact sum.  Per-rank traffic: about ``2 (K-1)/K * M``.
- :func:`parameter_server` -- the paper's O(K)-message variant: workers' messages are
  gathered (``Gatherv``) at ``root``, which decodes, adds its own exact array, re-encodes the
  mean and broadcasts it (``Bcast``); every rank, root included, returns the decoded broadcast.
- :func:`allreduce_float32` -- the uncompressed baseline: ``MPI.Allreduce`` of float32.

Payloads travel with mpi4py's buffer (uppercase) calls; only error descriptions use pickled
(lowercase) calls, and only on the error path.

**Errors.**  Nothing a single rank does can make the others hang or diverge.  Every call
first allgathers a small int64 row per rank (status, a fingerprint of shape, dtype, codec
parameters, step and seed base, and the byte counts), so a rank that failed to encode, or
that was called with other parameters, is known to all before any payload moves:
mismatches raise :class:`~qsgd_codec.errors.ParameterError` on every rank, with the
differing fields named.  After decoding, the ranks agree on a status row again, so a
corrupt message raises the same :class:`~qsgd_codec.errors.QSGDError` subclass on every
rank, even when only one rank decoded it (the reduce-scatter phase of :func:`allreduce`).
The rank that saw the failure raises the original exception.

**Seeds.**  Rank ``r`` at step ``t`` encodes with :func:`derive_seed(seed, r, t, phase,
chunk) <derive_seed>`, a SplitMix64 hash of all five numbers (the library's one seed
convention, :func:`qsgd_codec.derive_seed`, docs/seeds.md), so ranks, steps, chunks and the
re-encoding phase draw independent random streams.  ``step=None`` (the default) counts the
collective calls made on the communicator (a counter cached on it as an MPI attribute; all
ranks call collectives in the same order, so they agree).  Pass ``derive_seeds=False`` to
use ``seed`` as given for every message instead (for example a per-rank seed of your own).

**Statistics.**  Pass ``stats=Stats()`` to accumulate, per call, the payload bytes this rank
sent and received, the bytes all ranks sent together, and the time spent encoding,
communicating and decoding (see :class:`CallStats`).

**Inputs.**  Anything :func:`qsgd_codec.encode` takes: arrays are read through
:func:`qsgd_codec.interop.as_host_array`.  GPU arrays are staged through host memory (one
device-to-host copy): messages are host bytes by construction, so a CUDA-aware MPI would
not change the compressed path; see docs/mpi.md.  Results are NumPy arrays.

Parameters are the keywords of :func:`qsgd_codec.encode` or one ``params=``
:class:`~qsgd_codec.EncodeParams`, validated once per call and passed to the encoder as they
are.

This package imports mpi4py only when a collective is called, so :func:`derive_seed` and
the statistics classes can be used without MPI.  Its modules: :mod:`.collectives` (the four
collectives), :mod:`.agreement` (the per-call agreement rows that keep ranks together),
:mod:`.stats`, :mod:`.launch` (environment advice for ``mpiexec``).
"""

from ...wire.rng import PHASE_AGGREGATE, PHASE_CONTRIBUTION, derive_seed
from .collectives import allgather, allreduce, allreduce_float32, parameter_server
from .launch import available_cores, local_ranks, recommended_env
from .stats import CallStats, Stats

__all__ = [
    "allgather",
    "allreduce",
    "parameter_server",
    "allreduce_float32",
    "derive_seed",
    "CallStats",
    "Stats",
    "PHASE_CONTRIBUTION",
    "PHASE_AGGREGATE",
    "recommended_env",
    "local_ranks",
    "available_cores",
]
