"""A PyTorch DDP communication hook that QSGD-allgathers each gradient bucket.

Algorithm 1 of the paper on top of ``torch.distributed``: every worker encodes its gradient,
the messages are allgathered, and every worker decodes all K messages and averages them.
All workers decode the same bytes and add them in the same (rank) order, so their averaged
gradients, and therefore their models, stay bit-identical.

    >>> import torch.distributed as dist
    >>> from torch.nn.parallel import DistributedDataParallel as DDP
    >>> from qsgd_codec.torch_ddp import QSGDState, qsgd_hook
    >>> model = DDP(net)                                    # doctest: +SKIP
    >>> state = QSGDState(bits=4, bucket_size=512, seed=1)  # doctest: +SKIP
    >>> model.register_comm_hook(state, qsgd_hook)          # doctest: +SKIP

Details:

- Each parameter's gradient (a slice of the DDP bucket) is one QSGD message.  Gradients with
  fewer than ``min_compress_numel`` elements (default 10,000, the paper's rule: "matrices with
  < 10K elements sent unquantized") travel as raw values.
- Seeds: message ``j`` of bucket ``b`` on rank ``r`` at step ``t`` uses
  :func:`message_seed`, that is the library's one seed convention
  ``derive_seed(seed, r, t, PHASE_CONTRIBUTION, b << 32 | j)`` (docs/seeds.md), so the
  rounding noise is independent across workers and steps and a run is reproducible from the
  base seed.
- The step counter advances when DDP hands over the iteration's last bucket.  Checkpoint the
  state with :meth:`QSGDState.state_dict` (or pickle it / ``torch.save`` it: the process
  group is left out and set to the default group on load) to resume the same seed sequence.
- Collectives: gloo on CPU tensors, NCCL (payloads on the bucket's CUDA device) where
  present.  Dense messages have the same length on every rank, so one ``all_gather``
  suffices; elias messages first allgather their lengths.
- torch is an optional dependency: ``pip install 'qsgd_codec[torch]'``.
"""

import struct
import warnings
from typing import Any, Optional

import numpy as np
import torch
import torch.distributed as dist

from .. import api, wire
from ..errors import FormatError, ParameterError
from ..wire.rng import PHASE_CONTRIBUTION, derive_seed

__all__ = ["QSGDState", "qsgd_hook", "derive_seed", "message_seed", "STATE_VERSION"]

#: version of :meth:`QSGDState.state_dict`.  2: per-message seeds from the library's one
#: :func:`derive_seed` convention (1 used a fold over (seed, step, rank, bucket, index)).
STATE_VERSION = 2


def message_seed(seed: int, rank: int, step: int, bucket: int, index: int) -> int:
    """The encoder seed of gradient ``index`` of DDP bucket ``bucket`` on ``rank`` at ``step``:
    ``derive_seed(seed, rank, step, PHASE_CONTRIBUTION, bucket << 32 | index)``."""
    if not 0 <= index < (1 << 32) or not 0 <= bucket < (1 << 32):
        raise ParameterError(f"DDP bucket {bucket} / tensor {index}: each must be below 2**32")
    return derive_seed(seed, rank, step, PHASE_CONTRIBUTION, (bucket << 32) | index)


class QSGDState(wire.ParamsAttributes):
    """Configuration and checkpointable state of :func:`qsgd_hook`.

    Parameters
    ----------
    process_group : torch.distributed.ProcessGroup, optional
        Default: the world group.
    bits, levels, bucket_size, scale, coding : encoder parameters of :func:`qsgd_codec.encode`
        (default 8 bits, bucket 512, max scaling, dense coding: the paper's setting that
        recovered full accuracy in every experiment).
    seed : int, default 0
        Base seed; per-message seeds come from :func:`derive_seed`.
    min_compress_numel : int, default 10000
        Gradients with fewer elements are sent uncompressed.
    checksum : bool, default True
        CRC-32 on every message.
    """

    _SAVED = (
        "levels",
        "bucket_size",
        "scale",
        "coding",
        "seed",
        "checksum",
        "min_compress_numel",
        "step",
        "bytes_sent",
        "bytes_uncompressed",
        "messages_compressed",
        "tensors_uncompressed",
    )
    _PARAMS = ("levels", "bucket_size", "scale", "coding", "seed", "checksum")

    def __init__(
        self,
        process_group: Any = None,
        *,
        bits: Optional[int] = None,
        levels: Optional[int] = None,
        bucket_size: Optional[int] = None,
        scale: Optional[str] = None,
        coding: Optional[str] = None,
        seed: Optional[int] = None,
        min_compress_numel: int = 10_000,
        checksum: Optional[bool] = None,
        params: Optional[wire.EncodeParams] = None,
    ) -> None:
        p = wire.resolve_params(
            params,
            bits=bits,
            levels=levels,
            bucket_size=bucket_size,
            scale=scale,
            coding=coding,
            seed=seed,
            checksum=checksum,
        )
        if (
            isinstance(min_compress_numel, bool)
            or not isinstance(min_compress_numel, int)
            or min_compress_numel < 0
        ):
            raise ParameterError(
                f"min_compress_numel must be a non-negative integer, got {min_compress_numel!r}"
            )
        self.process_group = process_group
        #: the encoder parameters (:class:`qsgd_codec.EncodeParams`); ``seed`` is the base
        #: seed of :func:`message_seed`
        self.params = p
        self.min_compress_numel = min_compress_numel
        #: iterations completed (advanced when the last bucket of an iteration is handled)
        self.step = 0
        #: bytes this rank sent (its payloads) and the bytes the raw gradients would take
        self.bytes_sent = 0
        self.bytes_uncompressed = 0
        self.messages_compressed = 0
        self.tensors_uncompressed = 0

    @property
    def compression_ratio(self) -> float:
        return self.bytes_uncompressed / self.bytes_sent if self.bytes_sent else float("nan")

    def state_dict(self) -> dict:
        """A plain dict (ints, strings, bools) for checkpoints."""
        state = {key: getattr(self, key) for key in self._SAVED}
        state["version"] = STATE_VERSION
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` output (configuration, step and counters).

        A version-1 checkpoint is migrated, with a warning: its configuration, step and
        counters carry over, but the per-message seeds from the resumed step on follow the
        version-2 derivation (:func:`message_seed`), so the run is not bit-identical to one
        that never stopped under version 1.
        """
        state = dict(state)
        version = state.pop("version", STATE_VERSION)
        if version == 1:
            warnings.warn(
                "QSGDState: migrating a version-1 checkpoint; per-message seeds from "
                "here on follow derive_seed(seed, rank, step, 0, bucket << 32 | "
                "index) (docs/seeds.md), not version 1's order",
                stacklevel=2,
            )
        elif version != STATE_VERSION:
            raise ParameterError(
                f"QSGDState checkpoint version {version!r} is not supported "
                f"(this qsgd_codec reads versions 1 and {STATE_VERSION})"
            )
        unknown = set(state) - set(self._SAVED)
        if unknown:
            raise ParameterError(f"unknown QSGDState keys: {sorted(unknown)}")
        self.params = wire.EncodeParams(
            *(state.get(key, getattr(self.params, key)) for key in self._PARAMS)
        )
        for key, value in state.items():
            if key not in self._PARAMS:
                setattr(self, key, value)

    def __getstate__(self):
        # a process group cannot be pickled: it is left out and reset on load
        return self.state_dict()

    def __setstate__(self, state):
        self.__init__()
        self.load_state_dict(state)

    def __repr__(self):
        return (
            f"QSGDState(levels={self.levels}, bucket_size={self.bucket_size}, "
            f"scale={self.scale!r}, coding={self.coding!r}, seed={self.seed}, "
            f"min_compress_numel={self.min_compress_numel}, step={self.step})"
        )


# ----------------------------------------------------------------------------- the hook


def _segments(bucket, numel):
    """(start, length) of each gradient in the flat bucket buffer."""
    sizes = [int(g.numel()) for g in bucket.gradients()]
    if sum(sizes) != numel:  # not a plain concatenation: treat the buffer as one tensor
        return [(0, numel)]
    segments, start = [], 0
    for size in sizes:
        segments.append((start, size))
        start += size
    return segments


def _host_bytes(tensor):
    """Raw little-endian bytes of a CPU tensor's values (any float dtype, bfloat16 included)."""
    t = tensor.detach().contiguous()
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.view(torch.int16)
    return t.cpu().numpy().tobytes()


def _encode_payload(state, bucket, buffer, segments, rank):
    """This rank's payload: a table of part lengths, then each part (a message or raw bytes)."""
    parts = []
    for j, (start, length) in enumerate(segments):
        view = buffer[start : start + length]
        if _compressed(state, length):
            seed = message_seed(state.seed, rank, state.step, bucket.index(), j)
            parts.append(api.encode(view.detach(), params=state.params.with_seed(seed)))
            state.messages_compressed += 1
        else:
            parts.append(_host_bytes(view))
            state.tensors_uncompressed += 1
    table = struct.pack(f"<{len(parts)}Q", *(len(p) for p in parts))
    return table + b"".join(parts)


def _payload_length(state, segments, buffer):
    """Payload length when every part has a fixed size (dense coding), else None."""
    if state.coding != "dense":
        return None
    item = buffer.element_size()
    total = 8 * len(segments)
    for _, length in segments:
        if _compressed(state, length):
            total += wire.encoded_size((length,), state.params)
        else:
            total += length * item
    return total


def _raw_values(raw, dtype):
    if dtype == torch.bfloat16:
        return torch.from_numpy(np.frombuffer(raw, np.int16).copy()).view(torch.bfloat16)
    np_dtype = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}[
        dtype
    ]
    return torch.from_numpy(np.frombuffer(raw, np_dtype).copy())


def _compressed(state, length):
    """Whether a gradient of ``length`` elements travels as a QSGD message."""
    return length > 0 and length >= state.min_compress_numel


def _accumulate(state, acc, payload, segments, buffer_dtype, rank):
    """Decode one rank's payload and add it into ``acc`` (float32 or float64, CPU)."""
    count = len(segments)
    if len(payload) < 8 * count:
        raise FormatError(f"payload of rank {rank} is {len(payload)} bytes, shorter than its table")
    lengths = struct.unpack_from(f"<{count}Q", payload, 0)
    if 8 * count + sum(lengths) > len(payload):
        raise FormatError(
            f"payload of rank {rank} declares {sum(lengths)} bytes of parts but "
            f"holds {len(payload) - 8 * count}"
        )
    offset = 8 * count
    for (start, length), size in zip(segments, lengths):
        part = payload[offset : offset + size]
        offset += size
        if not _compressed(state, length):
            itemsize = torch.empty((), dtype=buffer_dtype).element_size()
            if len(part) != length * itemsize:
                raise FormatError(
                    f"rank {rank} sent {len(part)} bytes for an uncompressed "
                    f"gradient of {length} elements"
                )
            values = _raw_values(part, buffer_dtype)
        else:
            decoded = api.decode(part, max_elements=length)
            if decoded.size != length:
                raise FormatError(
                    f"rank {rank} sent a message of {decoded.size} elements for "
                    f"a gradient of {length}"
                )
            if decoded.dtype.itemsize == 2 and buffer_dtype == torch.bfloat16:
                values = torch.from_numpy(decoded.reshape(-1).view(np.int16)).view(torch.bfloat16)
            else:
                values = torch.from_numpy(np.ascontiguousarray(decoded).reshape(-1))
        acc[start : start + length] += values.to(acc.dtype)


def _comm_device(group, buffer):
    try:
        backend = dist.get_backend(group)
    except Exception:
        backend = "gloo"
    return buffer.device if str(backend) == "nccl" else torch.device("cpu")


def qsgd_hook(state: QSGDState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP communication hook: QSGD-encode, allgather, decode all, average.

    Register with ``ddp_model.register_comm_hook(QSGDState(...), qsgd_hook)``.  Returns a
    ``torch.futures.Future`` holding the averaged bucket.
    """
    group = state.process_group if state.process_group is not None else dist.group.WORLD
    world = dist.get_world_size(group)
    rank = dist.get_rank(group)
    buffer = bucket.buffer()
    segments = _segments(bucket, buffer.numel())
    payload = _encode_payload(state, bucket, buffer.detach(), segments, rank)
    state.bytes_sent += len(payload)
    state.bytes_uncompressed += buffer.numel() * buffer.element_size()
    device = _comm_device(group, buffer)

    fixed = _payload_length(state, segments, buffer)
    if fixed is not None:
        # every rank computes the same length from the same shapes: no length exchange
        if len(payload) != fixed:
            raise RuntimeError(
                f"internal error: dense payload is {len(payload)} bytes, expected {fixed}"
            )
        size = fixed
        sizes = [fixed] * world
    else:
        mine = torch.tensor([len(payload)], dtype=torch.int64, device=device)
        gathered = [torch.zeros_like(mine) for _ in range(world)]
        dist.all_gather(gathered, mine, group=group)
        sizes = [int(t.item()) for t in gathered]
        size = max(sizes)

    send = torch.zeros(size, dtype=torch.uint8)
    send[: len(payload)] = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
    send = send.to(device)
    received = [torch.empty(size, dtype=torch.uint8, device=device) for _ in range(world)]
    work = dist.all_gather(received, send, group=group, async_op=True)
    step_done = bucket.is_last()
    if step_done:
        state.step += 1

    def finish(fut):
        fut.wait()
        acc_dtype = torch.float64 if buffer.dtype == torch.float64 else torch.float32
        acc = torch.zeros(buffer.numel(), dtype=acc_dtype)
        for r in range(world):
            payload_r = received[r][: sizes[r]].cpu().numpy().tobytes()
            _accumulate(state, acc, payload_r, segments, buffer.dtype, r)
        acc /= world
        buffer.copy_(acc.to(buffer.dtype).view(buffer.shape))
        return buffer

    return work.get_future().then(finish)
