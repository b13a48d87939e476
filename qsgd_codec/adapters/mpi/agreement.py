"""The agreement that keeps the ranks of one collective call together.

Every call first allgathers a small int64 row per rank (status, a fingerprint of the
arguments, byte counts); after decoding, the ranks agree on a status row again.  So a
failure on one rank -- bad arguments, a refused input, a corrupt message -- raises the same
:class:`~qsgd_codec.errors.QSGDError` subclass on every rank instead of leaving the others
waiting.  :class:`_Call` holds one call's state on one rank.
"""

import hashlib
import time

import numpy as np

from ... import api, errors as _errors, interop, wire
from ...errors import ParameterError, QSGDError
from ...wire.rng import MASK64, derive_seed
from .stats import CallStats


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError:
        raise ImportError(
            "qsgd_codec.mpi needs mpi4py and an MPI library: "
            "pip install 'qsgd_codec[mpi]' (mpi4py and the mpich wheel)"
        ) from None
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
_ERROR_NAMES = _errors.ERROR_CLASS_NAMES
_OTHER = len(_ERROR_NAMES) + 1  # an exception that is not a QSGDError


def _code_of(exc):
    for cls in type(exc).__mro__:  # the nearest class every rank knows by name
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
        from ...cuda.arrays import as_device_array  # only a GPU array brings numba.cuda in

        dev, name = as_device_array(x)
        host = np.asarray(dev.copy_to_host())
        return host.view(wire.numpy_dtype(name)) if name == "bfloat16" else host
    return interop.as_host_array(x)


def _chunk_bounds(n, d, k):
    """Element bounds of K bucket-aligned chunks: owner j gets buckets nb*j//K .. nb*(j+1)//K."""
    nb = wire.num_buckets(n, d)
    return [min(n, (nb * j // k) * d) for j in range(k + 1)]


class _Call:
    """One collective call on one rank: local failures, agreement rows and timing."""

    def __init__(self, op, comm, x, *, codec, average, root, seed, step, derive_seeds, stats):
        MPI = _mpi()
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        if (
            not isinstance(self.comm, MPI.Comm)
            or self.comm == MPI.COMM_NULL
            or self.comm.Is_inter()
        ):
            # the same on every rank of the communicator, so raising here cannot split them
            raise ParameterError(f"comm must be an mpi4py intracommunicator, got {comm!r}")
        self.op = op
        self.K = self.comm.Get_size()
        self.rank = self.comm.Get_rank()
        self.t0 = time.perf_counter()
        self.stats_sink = stats
        self.error = None  # this rank's exception, if any
        self.error_source = -1  # the rank whose message failed (or this rank)
        self.step = _next_step(self.comm) if step is None else step
        self.derive_seeds = bool(derive_seeds)
        self.seed = seed
        self.average = average
        self.arr = None
        self.params = None
        desc = {
            "op": op,
            "ranks": self.K,
            "step": self.step,
            "average": bool(average),
            "root": root,
            "derive_seeds": self.derive_seeds,
            "seed": seed if self.derive_seeds else "per-rank",
            **{k: v for k, v in codec.items() if k != "params"},
        }
        try:
            if (
                isinstance(step, bool)
                or not isinstance(self.step, (int, np.integer))
                or self.step < 0
            ):
                raise ParameterError(f"step must be a non-negative integer, got {step!r}")
            self.arr = _host_input(x)
            desc["shape"] = tuple(self.arr.shape)
            desc["dtype"] = wire.dtype_name(self.arr.dtype)
            if codec:
                # validated once here; the encoder gets it as it is, with each message's seed
                self.params = wire.resolve_params(
                    codec["params"], **{k: v for k, v in codec.items() if k != "params"}
                )
                for k in codec:
                    desc.pop(k, None)
                desc.update(
                    levels=self.params.levels,
                    bucket_size=self.params.bucket_size,
                    scale=self.params.scale,
                    coding=self.params.coding,
                    checksum=self.params.checksum,
                )
                if self.derive_seeds:
                    derive_seed(seed, 0, self.step)  # validates the seed base
                elif seed is None or isinstance(seed, bool) or not 0 <= int(seed) <= MASK64:
                    raise ParameterError(f"seed must be an integer in 0..2**64-1, got {seed!r}")
            if root is not None and not (
                isinstance(root, (int, np.integer)) and 0 <= root < self.K
            ):
                raise ParameterError(f"root must be a rank in 0..{self.K - 1}, got {root!r}")
        except Exception as exc:  # reported to every rank by the first agreement
            self.fail(exc, self.rank)
        desc.setdefault("shape", None)
        desc.setdefault("dtype", None)
        self.desc = {k: _plain(v) for k, v in desc.items()}
        self.fingerprint = _fingerprint(self.desc)
        n = int(self.arr.size) if self.arr is not None else 0
        self.stats = CallStats(
            op=op,
            ranks=self.K,
            rank=self.rank,
            n=n,
            dtype=desc["dtype"] or "?",
            step=int(self.step) if isinstance(self.step, (int, np.integer)) else -1,
        )
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
        values = api.decode(data, max_elements=n)
        if values.shape != tuple(shape) or values.dtype != dtype:
            raise _errors.CorruptDataError(
                f"the message from rank {source} holds {values.dtype} values of shape "
                f"{values.shape}, but this collective carries {dtype} of shape {tuple(shape)}"
            )
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
        ``shapes[i]``; the bound is :func:`qsgd_codec.wire.encoded_size`.  Every rank sees
        the same counts, so every rank raises together, before allocating anything.
        """
        p = self.params
        for count, shape, sender in zip(counts, shapes, senders):
            limit = wire.encoded_size(shape, p)
            if not 0 <= int(count) <= limit:
                raise _errors.LengthError(
                    f"qsgd_codec.mpi.{self.op}: rank {sender} announced a message of {int(count)}"
                    f" bytes, but a message of shape {tuple(shape)} with these parameters holds "
                    f"at most {limit} bytes (raised on every rank)"
                )

    def _raise_mismatch(self):
        # error path only: the ranks trade their (small) descriptions to name the difference
        descs = self.comm.allgather(self.desc)
        keys = sorted({k for d in descs for k in d}, key=str)
        if any(d.get("op") != descs[0].get("op") for d in descs):
            keys = ["op"]  # ranks in different collectives: the rest follows from that
        lines = []
        for k in keys:
            values = [d.get(k) for d in descs]
            if any(v != values[0] for v in values):
                per_rank = ", ".join(f"rank {r}: {v!r}" for r, v in enumerate(values))
                lines.append(f"  {k}: {per_rank}")
        raise ParameterError(
            f"qsgd_codec.mpi.{self.op}: the ranks were called with different arguments "
            f"(every rank must pass the same shape, dtype and codec parameters, at the same "
            f"step):\n" + "\n".join(lines)
        )

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
                self.error.add_note(
                    f"qsgd_codec.mpi.{self.op}: raised on every rank (failures on ranks {where})"
                )
            if isinstance(self.error, QSGDError):
                raise self.error
            raise QSGDError(
                f"qsgd_codec.mpi.{self.op}: rank {self.rank} failed: {texts[self.rank]}"
            ) from self.error
        first = int(failed[0])
        code, source = int(codes[first]), int(sources[first])
        if source == first:
            what = f"rank {first} failed"
        else:
            what = f"the message from rank {source} failed to decode on rank {first}"
        raise _class_of(code)(
            f"qsgd_codec.mpi.{self.op}: {what}: {texts[first]} (failures on "
            f"ranks {where}; raised on every rank)"
        )

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
    return api.encode(x, params=params.with_seed(seed))


def _as_u8(msg):
    return np.frombuffer(msg, dtype=np.uint8)


def _displacements(counts):
    displs = np.zeros(len(counts), dtype=np.int64)
    if len(counts) > 1:
        np.cumsum(counts[:-1], out=displs[1:])
    return displs


def _codec(bits, levels, bucket_size, scale, coding, checksum, params):
    """A collective's encoder arguments, validated by :class:`_Call` (``params`` or keywords)."""
    return {
        "bits": bits,
        "levels": levels,
        "bucket_size": bucket_size,
        "scale": scale,
        "coding": coding,
        "checksum": checksum,
        "params": params,
    }


def _finish_values(acc, k, average, dtype, shape):
    if average:
        acc /= k
    return acc.astype(dtype).reshape(shape)
