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
chunk) <derive_seed>`, a SplitMix64 hash of all five numbers, so ranks, steps, chunks and the
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

This module imports mpi4py only when a collective is called, so :func:`derive_seed` and
the statistics classes can be used without MPI.
"""

import hashlib
import time
from dataclasses import dataclass, field, fields

import numpy as np

import qsgd_codec

from . import errors as _errors
from . import format as fmt
from . import interop
from .errors import ParameterError, QSGDError

__all__ = [
    "allgather", "allreduce", "parameter_server", "allreduce_float32",
    "derive_seed", "CallStats", "Stats", "PHASE_CONTRIBUTION", "PHASE_AGGREGATE",
    "recommended_env", "local_ranks", "available_cores",
]

# ----------------------------------------------------------------------------- seeds

_MASK64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15
_MIX_1 = 0xBF58476D1CE4E5B9
_MIX_2 = 0x94D049BB133111EB

#: phase of a rank's own contribution (allgather, reduce-scatter chunks, parameter-server workers)
PHASE_CONTRIBUTION = 0
#: phase of a re-encoded sum (allreduce owners, the parameter-server root)
PHASE_AGGREGATE = 1


def _mix64(z):
    z = ((z ^ (z >> 30)) * _MIX_1) & _MASK64
    z = ((z ^ (z >> 27)) * _MIX_2) & _MASK64
    return z ^ (z >> 31)


def derive_seed(seed, rank, step, phase=PHASE_CONTRIBUTION, chunk=0):
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
    :data:`PHASE_AGGREGATE` (1) for a re-encoded sum; ``chunk`` numbers the pieces one rank
    encodes in one call (the owner index in :func:`allreduce`, else 0).
    """
    values = [seed, rank, step, phase, chunk]
    for name, v in zip(("seed", "rank", "step", "phase", "chunk"), values):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) \
                or not 0 <= int(v) <= _MASK64:
            raise ParameterError(f"derive_seed: {name} must be an integer in 0..2**64-1, got {v!r}")
    h = _mix64(int(seed))
    for v in values[1:]:
        h = _mix64((h + (int(v) + 1) * _GAMMA) & _MASK64)
    return h


# ----------------------------------------------------------------------------- statistics

@dataclass
class CallStats:
    """What one collective call cost on this rank.

    Byte counts are *payload* bytes (encoded messages, or float32 values for the baseline),
    counted logically: the bytes a rank must hand to or take from its peers whatever
    algorithm MPI uses underneath (a ring or tree may forward more).  For
    :func:`allreduce_float32` they are the bandwidth-optimal ring figures,
    ``2 (K-1)/K * 4n`` each way.  ``control_bytes_sent`` counts the small int64 status rows
    (8 bytes per field per peer).  Times are wall-clock seconds on this rank; ``comm_s``
    includes waiting for slower ranks.
    """

    op: str
    ranks: int
    rank: int
    n: int
    dtype: str
    step: int = -1
    message_bytes: int = 0      # this rank's contribution as sent (or as it would be sent)
    bytes_sent: int = 0
    bytes_received: int = 0
    total_bytes_sent: int = 0   # summed over all ranks (every rank computes the same number)
    control_bytes_sent: int = 0
    encode_s: float = 0.0
    comm_s: float = 0.0
    decode_s: float = 0.0       # decoding plus the reduction (adding, averaging)
    total_s: float = 0.0

    @property
    def original_bytes(self):
        """Bytes of this rank's input array."""
        return self.n * fmt.DTYPE_ITEMSIZE.get(self.dtype, 4)

    def as_dict(self):
        return {f.name: getattr(self, f.name) for f in fields(self)}


_SUMMED = ("message_bytes", "bytes_sent", "bytes_received", "total_bytes_sent",
           "control_bytes_sent", "encode_s", "comm_s", "decode_s", "total_s")


@dataclass
class Stats:
    """Accumulates :class:`CallStats`: pass one as ``stats=`` to any collective.

    ``keep_calls=True`` also keeps every call's record in :attr:`calls`.
    """

    keep_calls: bool = False
    calls_made: int = 0
    message_bytes: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    total_bytes_sent: int = 0
    control_bytes_sent: int = 0
    encode_s: float = 0.0
    comm_s: float = 0.0
    decode_s: float = 0.0
    total_s: float = 0.0
    calls: list = field(default_factory=list)
    last: CallStats = None

    def add(self, call):
        self.calls_made += 1
        for name in _SUMMED:
            setattr(self, name, getattr(self, name) + getattr(call, name))
        self.last = call
        if self.keep_calls:
            self.calls.append(call)

    def reset(self):
        keep = self.keep_calls
        self.__init__(keep_calls=keep)

    def as_dict(self):
        return {name: getattr(self, name) for name in ("calls_made", *_SUMMED)}


# ----------------------------------------------------------------------------- launching

def local_ranks():
    """Ranks the launcher started on this node (from its environment), or None if unknown."""
    import os
    for name in ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE",
                 "SLURM_NTASKS_PER_NODE", "PMI_SIZE"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return None


def available_cores():
    import os
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def recommended_env(ranks, cores=None):
    """Environment variables for ``ranks`` processes sharing ``cores`` cores (default: ours).

    - ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS`` and
      ``NUMBA_NUM_THREADS`` = ``max(1, cores // ranks)``: ranks do not fight over cores.
    - When ranks outnumber cores: ``MPIR_CVAR_ENABLE_HEAVY_YIELD=1``.  MPICH busy-polls
      while it waits; with more ranks than cores the waiting ranks steal the CPU from the
      ranks that have work (measured: a rank computing while three others wait in a barrier
      ran 2.1-2.4x slower on 2 cores).  Heavy yield makes waiting ranks sleep briefly instead,
      at the price of latency (a 16-byte Allreduce of 4 ranks: ~50 us -> ~600 us).
      Leave it unset when every rank has its own core, and keep mpi4py's default thread
      level (``multiple``): with ``MPI4PY_RC_THREAD_LEVEL=single`` the heavy yield made a
      1 MB Allreduce take seconds (measured with MPICH 5.0).
    """
    cores = available_cores() if cores is None else cores
    threads = str(max(1, cores // max(1, ranks)))
    env = {name: threads for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                      "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}
    if ranks > cores:
        env["MPIR_CVAR_ENABLE_HEAVY_YIELD"] = "1"
    return env


# ----------------------------------------------------------------------------- plumbing

def _mpi():
    try:
        from mpi4py import MPI
    except ImportError:
        raise ImportError("qsgd_codec.mpi needs mpi4py and an MPI library: "
                          "pip install 'qsgd_codec[mpi]' (mpi4py and the mpich wheel)") from None
    return MPI


_STEP_KEYVAL = None


def _next_step(comm):
    """The per-communicator call counter (an MPI attribute cached on ``comm``)."""
    global _STEP_KEYVAL
    MPI = _mpi()
    if _STEP_KEYVAL is None:
        _STEP_KEYVAL = MPI.Comm.Create_keyval()
    counter = comm.Get_attr(_STEP_KEYVAL)
    if counter is None:
        counter = [0]
        comm.Set_attr(_STEP_KEYVAL, counter)
    step = counter[0]
    counter[0] = step + 1
    return step


#: status codes carried in the int64 rows: 0 = ok, else 1 + index of the error class name
_ERROR_NAMES = [name for name in _errors.__all__ if name != "error_class"]
_OTHER = len(_ERROR_NAMES) + 1   # an exception that is not a QSGDError


def _code_of(exc):
    for cls in type(exc).__mro__:   # the nearest class every rank knows by name
        if issubclass(cls, QSGDError) and cls.__name__ in _ERROR_NAMES:
            return 1 + _ERROR_NAMES.index(cls.__name__)
    return _OTHER


def _class_of(code):
    if 1 <= code <= len(_ERROR_NAMES):
        return _errors.error_class(_ERROR_NAMES[code - 1])
    return QSGDError


def _plain(v):
    """Numbers as plain Python ints, so np.int64(3) and 3 fingerprint alike."""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return int(v)
    return v


def _fingerprint(desc):
    digest = hashlib.blake2b(repr(sorted(desc.items())).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _host_input(x):
    """A host NumPy array of ``x``: GPU arrays are copied to host memory (staged)."""
    if interop.is_device_array(x):
        dev, name = interop.as_device_array(x)
        host = np.asarray(dev.copy_to_host())
        return host.view(fmt.numpy_dtype(name)) if name == "bfloat16" else host
    return interop.as_host_array(x)


def _chunk_bounds(n, d, k):
    """Element bounds of K bucket-aligned chunks: owner j gets buckets nb*j//K .. nb*(j+1)//K."""
    nb = fmt.num_buckets(n, d)
    return [min(n, (nb * j // k) * d) for j in range(k + 1)]


class _Call:
    """One collective call on one rank: local failures, agreement rows and timing."""

    def __init__(self, op, comm, x, *, codec, average, root, seed, step, derive_seeds, stats):
        MPI = _mpi()
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        if not isinstance(self.comm, MPI.Comm) or self.comm == MPI.COMM_NULL \
                or self.comm.Is_inter():
            # the same on every rank of the communicator, so raising here cannot split them
            raise ParameterError(f"comm must be an mpi4py intracommunicator, got {comm!r}")
        self.op = op
        self.K = self.comm.Get_size()
        self.rank = self.comm.Get_rank()
        self.t0 = time.perf_counter()
        self.stats_sink = stats
        self.error = None            # this rank's exception, if any
        self.error_source = -1       # the rank whose message failed (or this rank)
        self.step = _next_step(self.comm) if step is None else step
        self.derive_seeds = bool(derive_seeds)
        self.seed = seed
        self.average = average
        self.arr = None
        self.params = None
        desc = {"op": op, "ranks": self.K, "step": self.step, "average": bool(average),
                "root": root, "derive_seeds": self.derive_seeds,
                "seed": seed if self.derive_seeds else "per-rank",
                **{k: v for k, v in codec.items()}}
        try:
            if isinstance(step, bool) or not isinstance(self.step, (int, np.integer)) \
                    or self.step < 0:
                raise ParameterError(f"step must be a non-negative integer, got {step!r}")
            self.arr = _host_input(x)
            desc["shape"] = tuple(self.arr.shape)
            desc["dtype"] = fmt.dtype_name(self.arr.dtype)
            if codec:
                self.params = fmt.encode_params(**codec, seed=0)
                for k in codec:
                    del desc[k]
                desc.update(levels=self.params.levels, bucket_size=self.params.bucket_size,
                            scale=self.params.scale, coding=self.params.coding,
                            checksum=self.params.checksum)
                if self.derive_seeds:
                    derive_seed(seed, 0, self.step)    # validates the seed base
                elif seed is None or isinstance(seed, bool) or not 0 <= int(seed) <= _MASK64:
                    raise ParameterError(f"seed must be an integer in 0..2**64-1, got {seed!r}")
            if root is not None and not (isinstance(root, (int, np.integer))
                                         and 0 <= root < self.K):
                raise ParameterError(f"root must be a rank in 0..{self.K - 1}, got {root!r}")
        except Exception as exc:  # reported to every rank by the first agreement
            self.fail(exc, self.rank)
        desc.setdefault("shape", None)
        desc.setdefault("dtype", None)
        self.desc = {k: _plain(v) for k, v in desc.items()}
        self.fingerprint = _fingerprint(self.desc)
        n = int(self.arr.size) if self.arr is not None else 0
        self.stats = CallStats(op=op, ranks=self.K, rank=self.rank, n=n,
                               dtype=desc["dtype"] or "?", step=int(self.step)
                               if isinstance(self.step, (int, np.integer)) else -1)
        self.ok = self.error is None

    # -- failures and agreement

    def fail(self, exc, source):
        if self.error is None:
            self.error = exc
            self.error_source = source

    def seed_for(self, phase, chunk=0):
        if self.derive_seeds:
            return derive_seed(self.seed, self.rank, self.step, phase, chunk)
        return int(self.seed)

    def encode(self, x, phase, chunk=0):
        seed = self.seed_for(phase, chunk)
        t = time.perf_counter()
        msg = _encode_message(x, self.params, seed)
        self.stats.encode_s += time.perf_counter() - t
        return msg

    def decode(self, data, source, shape, dtype):
        """Decode one message, checking it holds what the caller expects."""
        t = time.perf_counter()
        n = 1
        for extent in shape:
            n *= extent
        values = qsgd_codec.decode(data, max_elements=n)
        if values.shape != tuple(shape) or values.dtype != dtype:
            raise _errors.CorruptDataError(
                f"the message from rank {source} holds {values.dtype} values of shape "
                f"{values.shape}, but this collective carries {dtype} of shape {tuple(shape)}")
        self.stats.decode_s += time.perf_counter() - t
        return values

    def exchange(self, extra=(), *, check_fingerprint=False):
        """Allgather one int64 row [status, source, fingerprint, *extra] per rank.

        Raises on every rank if any rank failed (or, with ``check_fingerprint``, if the
        fingerprints differ).  Returns the (K, 3 + len(extra)) table.
        """
        MPI = self.MPI
        code = 0 if self.error is None else _code_of(self.error)
        row = np.array([code, self.error_source, self.fingerprint, *extra], dtype=np.int64)
        if check_fingerprint:
            # the first exchange of every collective has the same length (3 + K), so ranks
            # that called different collectives meet the fingerprint check, not an MPI error
            row = np.concatenate([row, np.zeros(3 + self.K - row.size, dtype=np.int64)])
        table = np.empty((self.K, row.size), dtype=np.int64)
        t = time.perf_counter()
        self.comm.Allgather([row, MPI.INT64_T], [table, MPI.INT64_T])
        self.stats.comm_s += time.perf_counter() - t
        self.stats.control_bytes_sent += row.nbytes * (self.K - 1)
        self._raise_failures(table[:, 0], table[:, 1])
        if check_fingerprint and np.any(table[:, 2] != table[0, 2]):
            self._raise_mismatch()
        return table

    def check_counts(self, counts, shapes, senders):
        """Refuse, on every rank alike, a byte count no encoder could have produced.

        ``counts[i]`` is the length of a message from ``senders[i]`` holding an array of
        ``shapes[i]``; the bound is :func:`qsgd_codec.max_encoded_size`.  Every rank sees
        the same counts, so every rank raises together, before allocating anything.
        """
        p = self.params
        for count, shape, sender in zip(counts, shapes, senders):
            limit = qsgd_codec.max_encoded_size(shape, levels=p.levels, bucket_size=p.bucket_size,
                                                scale=p.scale, coding=p.coding,
                                                checksum=p.checksum)
            if not 0 <= int(count) <= limit:
                raise _errors.LengthError(
                    f"qsgd_codec.mpi.{self.op}: rank {sender} announced a message of {int(count)}"
                    f" bytes, but a message of shape {tuple(shape)} with these parameters holds "
                    f"at most {limit} bytes (raised on every rank)")

    def _raise_mismatch(self):
        # error path only: the ranks trade their (small) descriptions to name the difference
        descs = self.comm.allgather(self.desc)
        keys = sorted({k for d in descs for k in d}, key=str)
        if any(d.get("op") != descs[0].get("op") for d in descs):
            keys = ["op"]       # ranks in different collectives: the rest follows from that
        lines = []
        for k in keys:
            values = [d.get(k) for d in descs]
            if any(v != values[0] for v in values):
                per_rank = ", ".join(f"rank {r}: {v!r}" for r, v in enumerate(values))
                lines.append(f"  {k}: {per_rank}")
        raise ParameterError(
            f"qsgd_codec.mpi.{self.op}: the ranks were called with different arguments "
            f"(every rank must pass the same shape, dtype and codec parameters, at the same "
            f"step):\n" + "\n".join(lines))

    def _raise_failures(self, codes, sources):
        failed = np.flatnonzero(codes)
        if failed.size == 0:
            return
        # error path only: every rank learns what the failing ranks saw (small strings)
        mine = None if self.error is None else f"{type(self.error).__name__}: {self.error}"
        texts = self.comm.allgather(mine)
        where = ", ".join(str(int(r)) for r in failed)
        if self.error is not None:
            if hasattr(self.error, "add_note"):
                self.error.add_note(f"qsgd_codec.mpi.{self.op}: raised on every rank "
                                    f"(failures on ranks {where})")
            if isinstance(self.error, QSGDError):
                raise self.error
            raise QSGDError(f"qsgd_codec.mpi.{self.op}: rank {self.rank} failed: "
                            f"{texts[self.rank]}") from self.error
        first = int(failed[0])
        code, source = int(codes[first]), int(sources[first])
        if source == first:
            what = f"rank {first} failed"
        else:
            what = f"the message from rank {source} failed to decode on rank {first}"
        raise _class_of(code)(f"qsgd_codec.mpi.{self.op}: {what}: {texts[first]} (failures on "
                              f"ranks {where}; raised on every rank)")

    # -- communication helpers

    def comm_call(self, fn, *args):
        t = time.perf_counter()
        fn(*args)
        self.stats.comm_s += time.perf_counter() - t

    def finish(self, result):
        self.stats.total_s = time.perf_counter() - self.t0
        if self.stats_sink is not None:
            self.stats_sink.add(self.stats)
        return result


def _encode_message(x, params, seed):
    """Encode through the public API (one home, so tests can wrap it)."""
    return qsgd_codec.encode(x, levels=params.levels, bucket_size=params.bucket_size,
                       scale=params.scale, coding=params.coding, seed=seed,
                       checksum=params.checksum)


def _as_u8(msg):
    return np.frombuffer(msg, dtype=np.uint8)


def _displacements(counts):
    displs = np.zeros(len(counts), dtype=np.int64)
    if len(counts) > 1:
        np.cumsum(counts[:-1], out=displs[1:])
    return displs


def _codec(bits, levels, bucket_size, scale, coding, checksum):
    return {"bits": bits, "levels": levels, "bucket_size": bucket_size, "scale": scale,
            "coding": coding, "checksum": checksum}


def _finish_values(acc, k, average, dtype, shape):
    if average:
        acc /= k
    return acc.astype(dtype).reshape(shape)


# ----------------------------------------------------------------------------- allgather

def allgather(x, *, comm=None, average=True, bits=None, levels=None, bucket_size=None,
              scale=None, coding=None, checksum=True, seed=0, step=None, derive_seeds=True,
              stats=None):
    """Algorithm 1: encode, allgather the messages, decode all, return their mean (or sum).

    Parameters
    ----------
    x : array of float16, bfloat16, float32 or float64 (any framework; same shape and dtype
        on every rank)
    comm : mpi4py communicator, default ``MPI.COMM_WORLD``
    average : bool, default True
        Return the mean of the ranks' decoded arrays; False returns their sum.
    bits, levels, bucket_size, scale, coding, checksum
        Codec parameters, as in :func:`qsgd_codec.encode`; identical on every rank.
    seed : int, default 0
        Base seed; rank r at step t encodes with ``derive_seed(seed, r, t)``.
    step : int, optional
        The training step; default: the number of earlier collectives on ``comm``.
    derive_seeds : bool, default True
        False: encode with ``seed`` itself on every rank at every step.
    stats : :class:`Stats`, optional
        Accumulates this call's :class:`CallStats`.

    Returns a NumPy array of x's dtype and shape, bit-identical on every rank.  The sum is
    formed in float64 in rank order, then rounded once to the dtype.
    """
    codec = _codec(bits, levels, bucket_size, scale, coding, checksum)
    call = _Call("allgather", comm, x, codec=codec, average=average, root=None, seed=seed,
                 step=step, derive_seeds=derive_seeds, stats=stats)
    MPI, K, rank = call.MPI, call.K, call.rank
    msg = b""
    if call.ok:
        try:
            msg = call.encode(call.arr, PHASE_CONTRIBUTION)
        except Exception as exc:
            call.fail(exc, rank)
    table = call.exchange([len(msg)], check_fingerprint=True)
    counts = table[:, 3]
    call.check_counts(counts, [call.arr.shape] * K, range(K))
    displs = _displacements(counts)
    recv = np.empty(int(counts.sum()), dtype=np.uint8)
    call.comm_call(call.comm.Allgatherv, [_as_u8(msg), MPI.BYTE],
                   [recv, (counts, displs), MPI.BYTE])
    st = call.stats
    st.message_bytes = len(msg)
    st.bytes_sent = (K - 1) * len(msg)
    st.bytes_received = int(counts.sum()) - len(msg)
    st.total_bytes_sent = (K - 1) * int(counts.sum())

    arr = call.arr
    result = None
    source = rank
    try:
        acc = np.zeros(arr.size, dtype=np.float64)
        for k in range(K):
            source = k
            values = call.decode(recv[displs[k]:displs[k] + counts[k]], k, arr.shape, arr.dtype)
            t = time.perf_counter()
            acc += values.reshape(-1)          # float64 accumulation, cast in the loop
            st.decode_s += time.perf_counter() - t
        source = rank
        t = time.perf_counter()
        result = _finish_values(acc, K, average, arr.dtype, arr.shape)
        st.decode_s += time.perf_counter() - t
    except Exception as exc:
        call.fail(exc, source)
    call.exchange()
    return call.finish(result)


# ----------------------------------------------------------------------------- allreduce

def allreduce(x, *, comm=None, average=True, bits=None, levels=None, bucket_size=None,
              scale=None, coding=None, checksum=True, seed=0, step=None, derive_seeds=True,
              stats=None):
    """Compressed reduce-scatter, re-encode, compressed allgather; mean (or sum) everywhere.

    Chunk ``j`` (buckets ``nb*j//K .. nb*(j+1)//K`` of the flattened array) is owned by
    rank ``j``.  Every rank encodes the chunks it does not own (seed
    ``derive_seed(seed, rank, step, 0, j)``) and sends each to its owner with one
    ``Alltoallv``; the owner adds the decoded copies to its own exact chunk (float64, rank
    order), rounds the mean to the dtype and re-encodes it (seed
    ``derive_seed(seed, owner, step, 1, 0)``); the compressed means are allgathered and every
    rank, the owner included, returns their decoded values.

    Quantization therefore happens twice: once on the K-1 contributions, once on their
    mean.  Parameters and return value as in :func:`allgather`.
    """
    codec = _codec(bits, levels, bucket_size, scale, coding, checksum)
    call = _Call("allreduce", comm, x, codec=codec, average=average, root=None, seed=seed,
                 step=step, derive_seeds=derive_seeds, stats=stats)
    MPI, K, rank = call.MPI, call.K, call.rank
    st = call.stats
    messages = [b""] * K
    bounds = None
    if call.ok:
        try:
            flat = call.arr.reshape(-1)
            bounds = _chunk_bounds(flat.size, call.params.bucket_size, K)
            for j in range(K):
                if j != rank:
                    messages[j] = call.encode(flat[bounds[j]:bounds[j + 1]],
                                              PHASE_CONTRIBUTION, chunk=j)
        except Exception as exc:
            call.fail(exc, rank)
    sendcounts = np.array([len(m) for m in messages], dtype=np.int64)
    table = call.exchange(sendcounts, check_fingerprint=True)
    matrix = table[:, 3:]                      # matrix[i, j]: bytes rank i sends to rank j
    call.check_counts(matrix.reshape(-1), [(bounds[j + 1] - bounds[j],) for i in range(K)
                                           for j in range(K)], np.repeat(np.arange(K), K))
    recvcounts = np.ascontiguousarray(matrix[:, rank])
    sdispls, rdispls = _displacements(sendcounts), _displacements(recvcounts)
    sendbuf = np.frombuffer(b"".join(messages), dtype=np.uint8)
    recv = np.empty(int(recvcounts.sum()), dtype=np.uint8)
    call.comm_call(call.comm.Alltoallv, [sendbuf, (sendcounts, sdispls), MPI.BYTE],
                   [recv, (recvcounts, rdispls), MPI.BYTE])
    arr = call.arr
    flat = arr.reshape(-1)
    lo, hi = bounds[rank], bounds[rank + 1]

    # the owner's reduction and re-encoding
    mine = b""
    try:
        acc = np.zeros(hi - lo, dtype=np.float64)
        source = rank
        for k in range(K):
            source = k
            if k == rank:
                part = flat[lo:hi]
            else:
                part = call.decode(recv[rdispls[k]:rdispls[k] + recvcounts[k]], k,
                                   (hi - lo,), arr.dtype)
            t = time.perf_counter()
            acc += part
            st.decode_s += time.perf_counter() - t
        t = time.perf_counter()
        reduced = _finish_values(acc, K, average, arr.dtype, (hi - lo,))
        st.decode_s += time.perf_counter() - t
        source = rank
        mine = call.encode(reduced, PHASE_AGGREGATE)
    except Exception as exc:
        call.fail(exc, source)
    table = call.exchange([len(mine)])
    counts = table[:, 3]
    call.check_counts(counts, [(bounds[j + 1] - bounds[j],) for j in range(K)], range(K))
    displs = _displacements(counts)
    gathered = np.empty(int(counts.sum()), dtype=np.uint8)
    call.comm_call(call.comm.Allgatherv, [_as_u8(mine), MPI.BYTE],
                   [gathered, (counts, displs), MPI.BYTE])
    st.message_bytes = int(sendcounts.sum()) + len(mine)
    st.bytes_sent = int(sendcounts.sum()) + (K - 1) * len(mine)
    st.bytes_received = int(recvcounts.sum()) + int(counts.sum()) - len(mine)
    st.total_bytes_sent = int(matrix.sum()) + (K - 1) * int(counts.sum())

    result = None
    source = rank
    try:
        out = np.empty(flat.size, dtype=arr.dtype)
        for j in range(K):
            source = j
            out[bounds[j]:bounds[j + 1]] = call.decode(
                gathered[displs[j]:displs[j] + counts[j]], j, (bounds[j + 1] - bounds[j],),
                arr.dtype)
        result = out.reshape(arr.shape)
    except Exception as exc:
        call.fail(exc, source)
    call.exchange()
    return call.finish(result)


# ----------------------------------------------------------------------------- parameter server

def parameter_server(x, *, comm=None, root=0, average=True, bits=None, levels=None,
                     bucket_size=None, scale=None, coding=None, checksum=True, seed=0, step=None,
                     derive_seeds=True, stats=None):
    """Gather compressed arrays at ``root``, which reduces, re-encodes and broadcasts.

    Workers encode with ``derive_seed(seed, rank, step, 0, 0)`` and send one message each
    to the root (``Gatherv``); the root adds the decoded messages to its own exact array
    (float64, rank order), rounds the mean to the dtype, re-encodes it with
    ``derive_seed(seed, root, step, 1, 0)`` and broadcasts it (``Bcast``); every rank, root
    included, returns the decoded broadcast.  Per-call traffic is O(K) messages, all through
    the root's link.  Parameters and return value as in :func:`allgather`.
    """
    codec = _codec(bits, levels, bucket_size, scale, coding, checksum)
    call = _Call("parameter_server", comm, x, codec=codec, average=average, root=root,
                 seed=seed, step=step, derive_seeds=derive_seeds, stats=stats)
    MPI, K, rank = call.MPI, call.K, call.rank
    st = call.stats
    msg = b""
    if call.ok and rank != root:
        try:
            msg = call.encode(call.arr, PHASE_CONTRIBUTION)
        except Exception as exc:
            call.fail(exc, rank)
    table = call.exchange([len(msg)], check_fingerprint=True)
    counts = table[:, 3]
    call.check_counts(counts, [call.arr.shape] * K, range(K))
    displs = _displacements(counts)
    recv = np.empty(int(counts.sum()) if rank == root else 0, dtype=np.uint8)
    call.comm_call(call.comm.Gatherv, [_as_u8(msg), MPI.BYTE],
                   [recv, (counts, displs), MPI.BYTE], root)
    arr = call.arr

    reply = b""
    if rank == root:
        source = rank
        try:
            acc = np.zeros(arr.size, dtype=np.float64)
            for k in range(K):
                source = k
                if k == rank:
                    part = arr.reshape(-1)
                else:
                    part = call.decode(recv[displs[k]:displs[k] + counts[k]], k, arr.shape,
                                       arr.dtype).reshape(-1)
                t = time.perf_counter()
                acc += part
                st.decode_s += time.perf_counter() - t
            t = time.perf_counter()
            reduced = _finish_values(acc, K, average, arr.dtype, arr.shape)
            st.decode_s += time.perf_counter() - t
            source = rank
            reply = call.encode(reduced, PHASE_AGGREGATE)
        except Exception as exc:
            call.fail(exc, source)
    # the root's verdict and reply length, broadcast: a failure at the root stops everyone
    code = 0 if call.error is None else _code_of(call.error)
    head = np.array([code, call.error_source, len(reply)], dtype=np.int64)
    call.comm_call(call.comm.Bcast, [head, MPI.INT64_T], root)
    st.control_bytes_sent += head.nbytes * (K - 1) if rank == root else 0
    if head[0] != 0:
        codes = np.zeros(K, dtype=np.int64)
        sources = np.full(K, -1, dtype=np.int64)
        codes[root], sources[root] = head[0], head[1]
        call._raise_failures(codes, sources)
    call.check_counts([head[2]], [arr.shape], [root])
    nreply = int(head[2])
    buf = np.frombuffer(reply, dtype=np.uint8).copy() if rank == root else \
        np.empty(nreply, dtype=np.uint8)
    call.comm_call(call.comm.Bcast, [buf, MPI.BYTE], root)
    st.message_bytes = len(msg) if rank != root else nreply
    st.bytes_sent = len(msg) if rank != root else (K - 1) * nreply
    st.bytes_received = nreply if rank != root else int(counts.sum())
    st.total_bytes_sent = int(counts.sum()) + (K - 1) * nreply

    result = None
    try:
        result = call.decode(buf, root, arr.shape, arr.dtype)
    except Exception as exc:
        call.fail(exc, root)
    call.exchange()
    return call.finish(result)


# ----------------------------------------------------------------------------- baseline

def allreduce_float32(x, *, comm=None, average=True, step=None, stats=None):
    """The uncompressed baseline: ``MPI.Allreduce`` (SUM) of the values as float32.

    The same up-front agreement as the compressed collectives (shape and dtype checked
    across ranks), the same statistics (bytes counted as the bandwidth-optimal ring
    allreduce: ``2 (K-1)/K * 4n`` sent and received per rank).  Returns float32 values
    rounded to x's dtype.  MPI does not promise that a floating-point Allreduce gives
    bit-identical results on every rank; MPICH's algorithms do in practice.
    """
    call = _Call("allreduce_float32", comm, x, codec={}, average=average, root=None, seed=0,
                 step=step, derive_seeds=True, stats=stats)
    MPI, K = call.MPI, call.K
    st = call.stats
    send = None
    if call.ok:
        try:
            send = np.ascontiguousarray(call.arr, dtype=np.float32).reshape(-1)
        except Exception as exc:
            call.fail(exc, call.rank)
    call.exchange(check_fingerprint=True)
    recv = np.empty_like(send)
    call.comm_call(call.comm.Allreduce, [send, MPI.FLOAT], [recv, MPI.FLOAT], MPI.SUM)
    t = time.perf_counter()
    if average:
        recv /= np.float32(K)
    result = recv.astype(call.arr.dtype, copy=False).reshape(call.arr.shape)
    st.decode_s += time.perf_counter() - t
    nbytes = 4 * send.size
    per_rank = (2 * (K - 1) * nbytes) // K
    st.message_bytes = nbytes
    st.bytes_sent = st.bytes_received = per_rank
    st.total_bytes_sent = K * per_rank
    return call.finish(result)
