"""Encoder parameters and element types (spec sections 3.3 and 4).

:class:`EncodeParams` is the one parameters object of the library: built and validated once,
then passed unchanged from an adapter (MPI, DDP, numcodecs, the CLI) down to the kernels.
"""

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ..errors import DTypeError, ParameterError
from .constants import (
    CODING_CODES,
    DEFAULT_BITS,
    DEFAULT_BUCKET_SIZE,
    DEFAULT_CODING,
    DEFAULT_LEVELS,
    DEFAULT_SCALE,
    DEFAULT_SEED,
    DTYPE_ITEMSIZE,
    MAX_BITS,
    MAX_BUCKET_SIZE,
    MAX_LEVELS,
    MIN_BITS,
    SCALE_CODES,
)


def _integer(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ParameterError(f"{name} must be an integer, got {type(value).__name__}")
    return int(value)


@dataclass(frozen=True)
class EncodeParams:
    """Validated encoder parameters: levels ``s``, bucket size ``d``, scale kind, coding,
    seed and checksum flag.

    Constructing one validates it (:class:`~qsgd_codec.errors.ParameterError` otherwise), so
    every instance is usable as it is: ``qsgd_codec.encode(x, params=p)`` checks nothing
    again.  Equality is by value; ``repr`` evaluates back to an equal object;
    :meth:`to_dict` / :meth:`from_dict` give a JSON-ready form (like a numcodecs config).
    :meth:`from_options` takes the API's keywords (``bits=`` or ``levels=``, None = default).
    """

    levels: int = DEFAULT_LEVELS
    bucket_size: int = DEFAULT_BUCKET_SIZE
    scale: str = DEFAULT_SCALE
    coding: str = DEFAULT_CODING
    seed: int = DEFAULT_SEED
    checksum: bool = True

    def __post_init__(self):
        levels = _integer("levels", self.levels)
        if not 1 <= levels <= MAX_LEVELS:
            raise ParameterError(f"levels must be in 1..{MAX_LEVELS}, got {levels}")
        d = _integer("bucket_size", self.bucket_size)
        if not 1 <= d <= MAX_BUCKET_SIZE:
            raise ParameterError(f"bucket_size must be in 1..{MAX_BUCKET_SIZE}, got {d}")
        if not isinstance(self.scale, str) or self.scale not in SCALE_CODES:
            raise ParameterError(f"scale must be one of {sorted(SCALE_CODES)}, got {self.scale!r}")
        if not isinstance(self.coding, str) or self.coding not in CODING_CODES:
            raise ParameterError(
                f"coding must be one of {sorted(CODING_CODES)}, got {self.coding!r}"
            )
        seed = _integer("seed", DEFAULT_SEED if self.seed is None else self.seed)
        if not 0 <= seed < (1 << 64):
            raise ParameterError(f"seed must be in 0..2**64-1, got {seed}")
        set_ = object.__setattr__
        set_(self, "levels", levels)
        set_(self, "bucket_size", d)
        set_(self, "seed", seed)
        set_(self, "checksum", bool(self.checksum))

    @classmethod
    def from_options(
        cls,
        *,
        bits: Optional[int] = None,
        levels: Optional[int] = None,
        bucket_size: Optional[int] = None,
        scale: Optional[str] = None,
        coding: Optional[str] = None,
        seed: Optional[int] = None,
        checksum: Optional[bool] = True,
    ) -> "EncodeParams":
        """Parameters from the API's keywords; None means the default."""
        return cls(
            resolve_levels(bits, levels),
            DEFAULT_BUCKET_SIZE if bucket_size is None else bucket_size,
            DEFAULT_SCALE if scale is None else scale,
            DEFAULT_CODING if coding is None else coding,
            DEFAULT_SEED if seed is None else seed,
            True if checksum is None else checksum,
        )

    def with_seed(self, seed: int) -> "EncodeParams":
        """The same parameters with another seed (only the seed is checked)."""
        seed = _integer("seed", seed)
        if not 0 <= seed < (1 << 64):
            raise ParameterError(f"seed must be in 0..2**64-1, got {seed}")
        other = copy.copy(self)
        object.__setattr__(other, "seed", seed)
        return other

    @property
    def width(self) -> int:
        """Dense field width w in bits (spec section 4)."""
        return int(self.levels).bit_length() + 1

    def to_dict(self) -> dict:
        """The parameters as a plain dict of JSON types."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, config: dict) -> "EncodeParams":
        """The inverse of :meth:`to_dict`; ``bits`` may stand for ``levels``."""
        if not isinstance(config, dict):
            raise ParameterError(
                f"EncodeParams.from_dict takes a dict, got {type(config).__name__}"
            )
        known = {field.name for field in dataclasses.fields(cls)} | {"bits"}
        unknown = sorted(set(config) - known, key=str)
        if unknown:
            raise ParameterError(f"unknown EncodeParams keys: {unknown}")
        return cls.from_options(**config)


class ParamsAttributes:
    """Read-only ``levels``, ``bucket_size``, ``scale``, ``coding``, ``seed`` and ``checksum``
    attributes for a class that keeps its :class:`EncodeParams` in ``self.params`` (the
    adapters' configuration objects)."""

    levels = property(lambda self: self.params.levels)
    bucket_size = property(lambda self: self.params.bucket_size)
    scale = property(lambda self: self.params.scale)
    coding = property(lambda self: self.params.coding)
    seed = property(lambda self: self.params.seed)
    checksum = property(lambda self: self.params.checksum)


#: the API's keywords to :class:`EncodeParams` (``None`` = default)
encode_params = EncodeParams.from_options

_OPTION_NAMES = ("bits", "levels", "bucket_size", "scale", "coding", "seed", "checksum")


def resolve_params(params: Optional[EncodeParams] = None, **options) -> EncodeParams:
    """``params`` as it is, or the API's keywords validated (never both).

    The one place where an entry point that takes both forms (``qsgd_codec.encode``, the
    collectives, the adapters) turns them into an :class:`EncodeParams`.
    """
    unknown = sorted(set(options) - set(_OPTION_NAMES))
    if unknown:
        raise ParameterError(f"unknown encoder options: {unknown}")
    if params is None:
        return EncodeParams.from_options(**options)
    if not isinstance(params, EncodeParams):
        raise ParameterError(
            f"params must be a qsgd_codec.EncodeParams, got {type(params).__name__}"
        )
    given = [name for name in _OPTION_NAMES if options.get(name) is not None]
    if given:
        raise ParameterError(
            f"pass either params= or encoder keywords, not both (got params "
            f"and {', '.join(given)}); use params.with_seed(...) or "
            f"dataclasses.replace(params, ...) to change one"
        )
    return params


def resolve_levels(bits: Any = None, levels: Any = None) -> int:
    """Map the API's ``bits`` / ``levels`` to s (spec section 4)."""
    if (
        bits is not None
        and isinstance(bits, bool)
        or levels is not None
        and isinstance(levels, bool)
    ):
        raise ParameterError("bits and levels must be integers, not bool")
    if bits is not None:
        bits = _integer("bits", bits)
        if bits == 1:
            raise ParameterError(
                "bits=1 is not supported: a 1-bit code has no zero level "
                "(QSGD needs -s..s); use bits=2 for ternary levels"
            )
        if not MIN_BITS <= bits <= MAX_BITS:
            raise ParameterError(f"bits must be in {MIN_BITS}..{MAX_BITS}, got {bits}")
        s = (1 << (bits - 1)) - 1
        if levels is not None and int(levels) != s:
            raise ParameterError(f"bits={bits} means levels={s}, but levels={levels} was given")
        return s
    if levels is None:
        return (1 << (DEFAULT_BITS - 1)) - 1
    levels = _integer("levels", levels)
    if not 1 <= levels <= MAX_LEVELS:
        raise ParameterError(f"levels must be in 1..{MAX_LEVELS}, got {levels}")
    return levels


# ----------------------------------------------------------------------------- element types


def dtype_name(dtype) -> str:
    """The format's name for a NumPy dtype, or DTypeError.  bfloat16 is ml_dtypes' type."""
    dtype = np.dtype(dtype)
    name = dtype.name
    if name in ("float16", "float32", "float64") and dtype.kind == "f":
        return name
    if name == "bfloat16" and dtype.itemsize == 2:
        return name
    raise DTypeError(
        f"dtype {dtype} is not supported; the format carries float16, bfloat16, float32 and float64"
    )


def bfloat16_dtype() -> np.dtype:
    """ml_dtypes' bfloat16 (NumPy has none); DTypeError naming the extra when it is missing."""
    try:
        import ml_dtypes
    except ImportError:
        raise DTypeError(
            "bfloat16 values need the ml_dtypes package, since NumPy has no "
            "bfloat16 type: pip install 'qsgd_codec[bfloat16]' (or decode into "
            "out= a bfloat16 array)"
        ) from None
    return np.dtype(ml_dtypes.bfloat16)


def numpy_dtype(name: str) -> np.dtype:
    """The NumPy dtype for a format dtype name; bfloat16 needs the ml_dtypes package."""
    if name == "bfloat16":
        return bfloat16_dtype()
    return np.dtype(name)


def bits_dtype(name: str) -> type:
    """Unsigned integer dtype of the same width, used to carry raw float bits to kernels."""
    return {2: np.uint16, 4: np.uint32, 8: np.uint64}[DTYPE_ITEMSIZE[name]]
