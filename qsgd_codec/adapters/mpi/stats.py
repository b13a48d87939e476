"""What each collective call cost on this rank (:class:`CallStats`) and in sum (:class:`Stats`)."""

from dataclasses import dataclass, field, fields

from ... import wire


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
    message_bytes: int = 0  # this rank's contribution as sent (or as it would be sent)
    bytes_sent: int = 0
    bytes_received: int = 0
    total_bytes_sent: int = 0  # summed over all ranks (every rank computes the same number)
    control_bytes_sent: int = 0
    encode_s: float = 0.0
    comm_s: float = 0.0
    decode_s: float = 0.0  # decoding plus the reduction (adding, averaging)
    total_s: float = 0.0

    @property
    def original_bytes(self) -> int:
        """Bytes of this rank's input array."""
        return self.n * wire.DTYPE_ITEMSIZE.get(self.dtype, 4)

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_SUMMED = (
    "message_bytes",
    "bytes_sent",
    "bytes_received",
    "total_bytes_sent",
    "control_bytes_sent",
    "encode_s",
    "comm_s",
    "decode_s",
    "total_s",
)


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

    def add(self, call: CallStats) -> None:
        self.calls_made += 1
        for name in _SUMMED:
            setattr(self, name, getattr(self, name) + getattr(call, name))
        self.last = call
        if self.keep_calls:
            self.calls.append(call)

    def reset(self) -> None:
        keep = self.keep_calls
        self.__init__(keep_calls=keep)

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in ("calls_made", *_SUMMED)}
