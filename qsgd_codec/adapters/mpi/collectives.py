"""The collectives: :func:`allgather` (Algorithm 1), :func:`allreduce`, :func:`parameter_server`
and the uncompressed baseline :func:`allreduce_float32` (see the package docstring)."""

import time
from typing import Any, Optional

import numpy as np

from ...wire import EncodeParams
from ...wire.rng import PHASE_AGGREGATE, PHASE_CONTRIBUTION
from .agreement import (
    _as_u8,
    _Call,
    _chunk_bounds,
    _code_of,
    _codec,
    _displacements,
    _finish_values,
)
from .stats import Stats

# ----------------------------------------------------------------------------- allgather


def allgather(
    x: Any,
    *,
    comm: Any = None,
    average: bool = True,
    bits: Optional[int] = None,
    levels: Optional[int] = None,
    bucket_size: Optional[int] = None,
    scale: Optional[str] = None,
    coding: Optional[str] = None,
    checksum: Optional[bool] = None,
    seed: int = 0,
    step: Optional[int] = None,
    derive_seeds: bool = True,
    stats: Optional[Stats] = None,
    params: Optional[EncodeParams] = None,
) -> np.ndarray:
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
    params : :class:`qsgd_codec.EncodeParams`, optional
        The same in one object, instead of the keywords (its ``seed`` is not used: each
        message gets its own, from ``seed`` below).
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
    codec = _codec(bits, levels, bucket_size, scale, coding, checksum, params)
    call = _Call(
        "allgather",
        comm,
        x,
        codec=codec,
        average=average,
        root=None,
        seed=seed,
        step=step,
        derive_seeds=derive_seeds,
        stats=stats,
    )
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
    call.comm_call(
        call.comm.Allgatherv, [_as_u8(msg), MPI.BYTE], [recv, (counts, displs), MPI.BYTE]
    )
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
            values = call.decode(recv[displs[k] : displs[k] + counts[k]], k, arr.shape, arr.dtype)
            t = time.perf_counter()
            acc += values.reshape(-1)  # float64 accumulation, cast in the loop
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


def allreduce(
    x: Any,
    *,
    comm: Any = None,
    average: bool = True,
    bits: Optional[int] = None,
    levels: Optional[int] = None,
    bucket_size: Optional[int] = None,
    scale: Optional[str] = None,
    coding: Optional[str] = None,
    checksum: Optional[bool] = None,
    seed: int = 0,
    step: Optional[int] = None,
    derive_seeds: bool = True,
    stats: Optional[Stats] = None,
    params: Optional[EncodeParams] = None,
) -> np.ndarray:
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
    codec = _codec(bits, levels, bucket_size, scale, coding, checksum, params)
    call = _Call(
        "allreduce",
        comm,
        x,
        codec=codec,
        average=average,
        root=None,
        seed=seed,
        step=step,
        derive_seeds=derive_seeds,
        stats=stats,
    )
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
                    messages[j] = call.encode(
                        flat[bounds[j] : bounds[j + 1]], PHASE_CONTRIBUTION, chunk=j
                    )
        except Exception as exc:
            call.fail(exc, rank)
    sendcounts = np.array([len(m) for m in messages], dtype=np.int64)
    table = call.exchange(sendcounts, check_fingerprint=True)
    matrix = table[:, 3:]  # matrix[i, j]: bytes rank i sends to rank j
    call.check_counts(
        matrix.reshape(-1),
        [(bounds[j + 1] - bounds[j],) for i in range(K) for j in range(K)],
        np.repeat(np.arange(K), K),
    )
    recvcounts = np.ascontiguousarray(matrix[:, rank])
    sdispls, rdispls = _displacements(sendcounts), _displacements(recvcounts)
    sendbuf = np.frombuffer(b"".join(messages), dtype=np.uint8)
    recv = np.empty(int(recvcounts.sum()), dtype=np.uint8)
    call.comm_call(
        call.comm.Alltoallv,
        [sendbuf, (sendcounts, sdispls), MPI.BYTE],
        [recv, (recvcounts, rdispls), MPI.BYTE],
    )
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
                part = call.decode(
                    recv[rdispls[k] : rdispls[k] + recvcounts[k]], k, (hi - lo,), arr.dtype
                )
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
    call.comm_call(
        call.comm.Allgatherv, [_as_u8(mine), MPI.BYTE], [gathered, (counts, displs), MPI.BYTE]
    )
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
            out[bounds[j] : bounds[j + 1]] = call.decode(
                gathered[displs[j] : displs[j] + counts[j]],
                j,
                (bounds[j + 1] - bounds[j],),
                arr.dtype,
            )
        result = out.reshape(arr.shape)
    except Exception as exc:
        call.fail(exc, source)
    call.exchange()
    return call.finish(result)


# ----------------------------------------------------------------------------- parameter server


def parameter_server(
    x: Any,
    *,
    comm: Any = None,
    root: int = 0,
    average: bool = True,
    bits: Optional[int] = None,
    levels: Optional[int] = None,
    bucket_size: Optional[int] = None,
    scale: Optional[str] = None,
    coding: Optional[str] = None,
    checksum: Optional[bool] = None,
    seed: int = 0,
    step: Optional[int] = None,
    derive_seeds: bool = True,
    stats: Optional[Stats] = None,
    params: Optional[EncodeParams] = None,
) -> np.ndarray:
    """Gather compressed arrays at ``root``, which reduces, re-encodes and broadcasts.

    Workers encode with ``derive_seed(seed, rank, step, 0, 0)`` and send one message each
    to the root (``Gatherv``); the root adds the decoded messages to its own exact array
    (float64, rank order), rounds the mean to the dtype, re-encodes it with
    ``derive_seed(seed, root, step, 1, 0)`` and broadcasts it (``Bcast``); every rank, root
    included, returns the decoded broadcast.  Per-call traffic is O(K) messages, all through
    the root's link.  Parameters and return value as in :func:`allgather`.
    """
    codec = _codec(bits, levels, bucket_size, scale, coding, checksum, params)
    call = _Call(
        "parameter_server",
        comm,
        x,
        codec=codec,
        average=average,
        root=root,
        seed=seed,
        step=step,
        derive_seeds=derive_seeds,
        stats=stats,
    )
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
    call.comm_call(
        call.comm.Gatherv, [_as_u8(msg), MPI.BYTE], [recv, (counts, displs), MPI.BYTE], root
    )
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
                    part = call.decode(
                        recv[displs[k] : displs[k] + counts[k]], k, arr.shape, arr.dtype
                    ).reshape(-1)
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
    buf = (
        np.frombuffer(reply, dtype=np.uint8).copy()
        if rank == root
        else np.empty(nreply, dtype=np.uint8)
    )
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


def allreduce_float32(
    x: Any,
    *,
    comm: Any = None,
    average: bool = True,
    step: Optional[int] = None,
    stats: Optional[Stats] = None,
) -> np.ndarray:
    """The uncompressed baseline: ``MPI.Allreduce`` (SUM) of the values as float32.

    The same up-front agreement as the compressed collectives (shape and dtype checked
    across ranks), the same statistics (bytes counted as the bandwidth-optimal ring
    allreduce: ``2 (K-1)/K * 4n`` sent and received per rank).  Returns float32 values
    rounded to x's dtype.  MPI does not promise that a floating-point Allreduce gives
    bit-identical results on every rank; MPICH's algorithms do in practice.
    """
    call = _Call(
        "allreduce_float32",
        comm,
        x,
        codec={},
        average=average,
        root=None,
        seed=0,
        step=step,
        derive_seeds=True,
        stats=stats,
    )
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
