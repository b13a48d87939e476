"""QSGD as a numcodecs codec (``codec_id = "qsgd"``) and as a Zarr v3 array-to-bytes codec.

numcodecs finds :class:`QSGD` through the ``numcodecs.codecs`` entry point, so
``numcodecs.get_codec({"id": "qsgd", ...})`` works once the package is installed::

    >>> from typing import Any, Optional

import numpy as np
    >>> from qsgd_codec.numcodecs_codec import QSGD
    >>> codec = QSGD(levels=127, bucket_size=512, seed=7)
    >>> x = np.linspace(-1, 1, 1000, dtype=np.float32)
    >>> y = codec.decode(codec.encode(x))       # the quantized values, float32, flat

QSGD is lossy: decoding gives the quantized values, not the input.  Encoding is
deterministic: the seed is part of the configuration, so the same chunk always gives the
same bytes (and every chunk uses the same random stream, indexed by position in the chunk).

numcodecs semantics are followed: a buffer is flat memory.  An ndarray keeps its dtype; a
raw buffer (``bytes``, ``bytearray``, ``array.array('b')``, ``uint8`` arrays) is read as the
codec's ``dtype``, which must then be configured.  Decoding returns a flat array (the
message's shape) or fills ``out``.

The Zarr v3 codec :class:`ZarrQSGD` (codec name ``"qsgd"``) is created on first access so
that importing this module does not import zarr.
"""

from typing import Any, Optional

import numpy as np
from numcodecs.abc import Codec
from numcodecs.compat import ensure_contiguous_ndarray, ndarray_copy

from .. import api, wire
from ..errors import DTypeError, ParameterError

__all__ = ["QSGD", "ZarrQSGD"]  # noqa: F822 - ZarrQSGD comes from __getattr__ below

_CONFIG_KEYS = ("levels", "bucket_size", "scale", "coding", "seed", "checksum")


class QSGD(wire.ParamsAttributes, Codec):
    """numcodecs codec for QSGD gradient compression (spec/wire-format.md).

    Parameters
    ----------
    levels, bits : int, optional
        s, the number of non-zero levels, or the dense width b (s = 2**(b-1) - 1).  The
        configuration always stores ``levels``.  Default: bits=8 (s=127).
    bucket_size : int, default 512
    scale : {"max", "l2"}, default "max"
    coding : {"dense", "elias"}, default "dense"
    seed : int, default 0
        Part of the configuration: the same data always encodes to the same bytes.
    checksum : bool, default True
    dtype : str, optional
        Element type used to read raw byte buffers ("float16", "bfloat16", "float32",
        "float64").  Typed float arrays are read as their own dtype and must match it.
    max_buffer_size : int, optional
        Largest input (encode) and output (decode) in bytes; larger ones raise ValueError.
        Default :attr:`DEFAULT_MAX_BUFFER_SIZE` (2**31 - 1).
    """

    codec_id = "qsgd"
    DEFAULT_MAX_BUFFER_SIZE = 2**31 - 1
    max_buffer_size = DEFAULT_MAX_BUFFER_SIZE

    def __init__(
        self,
        levels: Optional[int] = None,
        bucket_size: Optional[int] = None,
        scale: Optional[str] = None,
        coding: Optional[str] = None,
        seed: Optional[int] = None,
        checksum: Optional[bool] = None,
        dtype: Optional[str] = None,
        max_buffer_size: Optional[int] = None,
        *,
        bits: Optional[int] = None,
        params: Optional[wire.EncodeParams] = None,
    ) -> None:
        #: the encoder parameters (:class:`qsgd_codec.EncodeParams`), validated once
        self.params = wire.resolve_params(
            params,
            bits=bits,
            levels=levels,
            bucket_size=bucket_size,
            scale=scale,
            coding=coding,
            seed=seed,
            checksum=checksum,
        )
        self.dtype = (
            None
            if dtype is None
            else wire.dtype_name(wire.numpy_dtype(dtype) if dtype == "bfloat16" else dtype)
        )
        if max_buffer_size is not None:
            if (
                isinstance(max_buffer_size, bool)
                or not isinstance(max_buffer_size, int)
                or max_buffer_size < 1
            ):
                raise ParameterError(
                    f"max_buffer_size must be a positive integer, got {max_buffer_size!r}"
                )
            self.max_buffer_size = max_buffer_size

    # -------------------------------------------------------------- config, equality, repr

    def get_config(self) -> dict:
        config = {"id": self.codec_id}
        config.update(self.params.to_dict())
        if self.dtype is not None:
            config["dtype"] = self.dtype
        if self.max_buffer_size != self.DEFAULT_MAX_BUFFER_SIZE:
            config["max_buffer_size"] = self.max_buffer_size
        return config

    @classmethod
    def from_config(cls, config: dict) -> "QSGD":
        config = dict(config)
        config.pop("id", None)
        return cls(**config)

    def __eq__(self, other):
        return isinstance(other, Codec) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash(tuple(sorted(self.get_config().items())))

    def __repr__(self):
        config = self.get_config()
        del config["id"]
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in config.items())})"

    # -------------------------------------------------------------- encode / decode

    def _typed(self, arr):
        """``arr`` (flat, contiguous) as an array of a supported float dtype."""
        try:
            name = wire.dtype_name(arr.dtype)
        except DTypeError:
            name = None
        if name is not None:
            if self.dtype is not None and name != self.dtype:
                raise DTypeError(
                    f"QSGD codec configured for dtype {self.dtype} got an array "
                    f"of dtype {arr.dtype}"
                )
            return arr
        if arr.dtype.kind not in "iuV" and arr.dtype != np.bool_:
            raise DTypeError(f"QSGD codec cannot encode arrays of dtype {arr.dtype}")
        if self.dtype is None:
            raise DTypeError(
                f"QSGD codec got a raw buffer (dtype {arr.dtype}) and has no "
                f"dtype configured: pass QSGD(dtype='float32') (or the data's "
                f"float type) to read raw bytes"
            )
        dtype = wire.numpy_dtype(self.dtype)
        raw = arr.view(np.uint8)
        if raw.size % dtype.itemsize:
            raise ValueError(
                f"a buffer of {raw.size} bytes is not a whole number of {self.dtype} values"
            )
        return raw.view(dtype)

    def encode(self, buf: Any) -> bytes:
        arr = ensure_contiguous_ndarray(buf, max_buffer_size=self.max_buffer_size)
        arr = self._typed(arr.reshape(-1, order="A"))
        return api.encode(arr, params=self.params)

    def decode(self, buf: Any, out: Any = None) -> Any:
        data = ensure_contiguous_ndarray(buf, max_buffer_size=self.max_buffer_size)
        data = data.reshape(-1, order="A").view(np.uint8)
        header = wire.parse_header(data, max_elements=None, verify_checksum=False)
        itemsize = wire.DTYPE_ITEMSIZE[header.dtype]
        limit = self.max_buffer_size // itemsize
        if out is None:
            if header.n > limit:
                raise ValueError(
                    f"Codec does not support buffers of > {self.max_buffer_size} "
                    f"bytes: the message decodes to {header.n * itemsize}"
                )
            return api.decode(data, max_elements=limit)
        target = ensure_contiguous_ndarray(out, flatten=False)
        flat = target.reshape(-1, order="A")
        if flat.nbytes != header.n * itemsize:
            raise ValueError(
                f"out holds {flat.nbytes} bytes but the message decodes to "
                f"{header.n} {header.dtype} values ({header.n * itemsize} bytes)"
            )
        if header.n > limit:
            raise ValueError(
                f"Codec does not support buffers of > {self.max_buffer_size} "
                f"bytes: the message decodes to {header.n * itemsize}"
            )
        try:
            same_dtype = wire.dtype_name(flat.dtype) == header.dtype
        except DTypeError:
            same_dtype = False
        if same_dtype and flat.dtype.isnative and flat.flags.writeable:
            api.decode(data, out=flat)
        elif same_dtype:  # e.g. a big-endian out: convert values, not bytes
            flat[...] = api.decode(data, max_elements=header.n).reshape(-1)
        else:  # raw memory (bytearray, array.array, uint8 arrays): the native bytes
            ndarray_copy(api.decode(data, max_elements=header.n), flat)
        return out


# ----------------------------------------------------------------------------- Zarr v3


def _make_zarr_codec():
    import asyncio
    from dataclasses import dataclass

    from zarr.abc.codec import ArrayBytesCodec
    from zarr.core.common import parse_named_configuration
    from zarr.registry import register_codec

    @dataclass(frozen=True)
    class ZarrQSGD(ArrayBytesCodec):
        """Zarr v3 array-to-bytes codec ``{"name": "qsgd", "configuration": {...}}``.

        It takes the place of the ``bytes`` codec: each chunk is encoded as one QSGD
        message carrying the chunk's shape and dtype (float16, float32, float64).
        Configuration keys are those of :class:`QSGD` (``levels``, ``bucket_size``, ``scale``,
        ``coding``, ``seed``, ``checksum``); bytes-to-bytes codecs may follow it.
        """

        levels: int
        bucket_size: int
        scale: str
        coding: str
        seed: int
        checksum: bool

        is_fixed_size = False

        def __init__(
            self,
            *,
            levels=None,
            bits=None,
            bucket_size=None,
            scale=None,
            coding=None,
            seed=None,
            checksum=None,
            params=None,
        ):
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
            for key in _CONFIG_KEYS:
                object.__setattr__(self, key, getattr(p, key))
            object.__setattr__(self, "_params", p)

        @property
        def params(self):
            """The encoder parameters (:class:`qsgd_codec.EncodeParams`), validated once."""
            return self._params

        @classmethod
        def from_dict(cls, data):
            _, configuration = parse_named_configuration(data, "qsgd", require_configuration=False)
            return cls(**(configuration or {}))

        def to_dict(self):
            return {"name": "qsgd", "configuration": self.params.to_dict()}

        def validate(self, *, shape, dtype, chunk_grid):
            native = np.dtype(dtype.to_native_dtype())
            if native.name not in ("float16", "float32", "float64") or native.kind != "f":
                raise ValueError(
                    f"the qsgd codec encodes float16, float32 and float64 arrays, not {native}"
                )

        def _encode_sync(self, chunk_array, chunk_spec):
            arr = chunk_array.as_ndarray_like()
            message = api.encode(arr, params=self.params)
            return chunk_spec.prototype.buffer.from_bytes(message)

        def _decode_sync(self, chunk_bytes, chunk_spec):
            data = chunk_bytes.as_numpy_array()
            n = 1
            for extent in chunk_spec.shape:
                n *= extent
            arr = api.decode(data, max_elements=n)
            want = np.dtype(chunk_spec.dtype.to_native_dtype())
            if arr.shape != tuple(chunk_spec.shape) or arr.dtype != want:
                raise ValueError(
                    f"qsgd chunk holds {arr.dtype}{list(arr.shape)}, the array "
                    f"expects {want}{list(chunk_spec.shape)}"
                )
            return chunk_spec.prototype.nd_buffer.from_numpy_array(arr)

        async def _encode_single(self, chunk_array, chunk_spec):
            return await asyncio.to_thread(self._encode_sync, chunk_array, chunk_spec)

        async def _decode_single(self, chunk_bytes, chunk_spec):
            return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)

        def compute_encoded_size(self, input_byte_length, chunk_spec):
            raise NotImplementedError("qsgd output size depends on the data (elias coding)")

    ZarrQSGD.__module__ = __name__
    ZarrQSGD.__qualname__ = "ZarrQSGD"
    register_codec("qsgd", ZarrQSGD)
    return ZarrQSGD


def __getattr__(name):
    if name == "ZarrQSGD":
        cls = _make_zarr_codec()
        globals()["ZarrQSGD"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
