"""Error classes of the QSGD wire format (spec/wire-format.md, section 11), and the one table
of defects that every backend reports.

Every error is a :class:`QSGDError`, which is a :class:`ValueError`, so callers that
already catch ``ValueError`` keep working.  The class names are part of the
conformance suite: each invalid vector names the class a decoder must raise.

Defects found in a message's body or in an encoder's input are numbered once, here
(:data:`DEFECTS`).  The reference raises them through :func:`defect`; the CPU and CUDA
kernels report ``(code, where)`` pairs with the same numbers and the host side raises
:func:`defect` of the first one, so a defect reads the same whichever path found it.
"""

__all__ = [
    "QSGDError",
    "FormatError",
    "BadMagicError",
    "VersionError",
    "ReservedBitsError",
    "UnsupportedError",
    "TruncatedError",
    "TrailingDataError",
    "LengthError",
    "ChecksumError",
    "CorruptDataError",
    "LimitError",
    "ParameterError",
    "DTypeError",
    "NonFiniteError",
    "error_class",
]

ERROR_CLASS_NAMES = __all__[:-1]


class QSGDError(ValueError):
    """Base class of every error raised by qsgd_codec."""


class FormatError(QSGDError):
    """The bytes are not a well-formed QSGD message."""


class BadMagicError(FormatError):
    """The first four bytes are not the QSGD magic number."""


class VersionError(FormatError):
    """The message has a major format version this reader does not know."""


class ReservedBitsError(FormatError):
    """A reserved flag bit or reserved header field is set."""


class UnsupportedError(FormatError):
    """Unknown dtype, scale kind or coding code (possibly from a newer minor version)."""


class TruncatedError(FormatError):
    """The message ends before one of its declared lengths."""


class TrailingDataError(FormatError):
    """There are bytes after the declared end of the message."""


class LengthError(FormatError):
    """Declared lengths disagree with each other or with the shape."""


class ChecksumError(FormatError):
    """The CRC-32 trailer does not match the message."""


class CorruptDataError(FormatError):
    """A field is out of range: a bad scale, a gap past the bucket end, a level above s, ..."""


class LimitError(QSGDError):
    """The message declares more elements than the caller allows."""


class ParameterError(QSGDError):
    """Bad encoder or decoder parameters."""


class DTypeError(ParameterError):
    """The input dtype is not one the format supports."""


class NonFiniteError(QSGDError):
    """NaN or infinite input, or a bucket scale outside the float32/dtype range."""


_BY_NAME = {
    name: obj
    for name, obj in globals().items()
    if isinstance(obj, type) and issubclass(obj, QSGDError)
}


def error_class(name):
    """Return the error class called ``name`` (as written in the conformance vectors)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown QSGD error class {name!r}") from None


def out_too_small(have, need):
    """The error for an encoder ``out`` buffer of ``have`` bytes that needs ``need``."""
    return ParameterError(
        f"out holds {have} bytes but the message needs {need}; size it with "
        f"qsgd_codec.max_encoded_size(...)"
    )


# ----------------------------------------------------------------------------- defects

# Codes the kernels report (plain ints: numba and numba.cuda compile them as constants).
# ``where`` is an element index, a bucket index, or -1, as each row says.
D_OK = 0
D_FIELD_RANGE = 1  # element: a dense field outside -s..s
D_ZERO_SCALE = 2  # bucket: non-zero levels in a bucket whose scale is 0
D_DENSE_PADDING = 3  # -1: non-zero padding bits after the last dense field
D_CODE_TOO_LONG = 4  # bucket: L_b > 73 m
D_PAST_END = 5  # bucket: an elias code runs past L_b
D_GAP = 6  # bucket: an elias gap past the bucket's end
D_LEVEL = 7  # bucket: an elias level above s
D_OMEGA_GROUP = 8  # bucket: an omega group longer than 25 bits
D_ELIAS_PADDING = 9  # bucket: non-zero padding bits after an elias bucket
D_BAD_SCALE = 10  # bucket: a scale that is negative, NaN, infinite or too large
D_NONFINITE = 11  # element: NaN or infinite encoder input
D_SCALE_RANGE = 12  # bucket: an encoder scale beyond the dtype's range
D_CHECKSUM = 13  # -1: CRC-32 mismatch
D_TABLE_SUM = 14  # -1: elias bit lengths disagree with the body length

#: code -> (error class, message template).  Templates take ``where`` and the keywords
#: their row names (header fields and values the host side reads back).
DEFECTS = {
    D_FIELD_RANGE: (CorruptDataError, "dense field {where} holds a level outside -{s}..{s}"),
    D_ZERO_SCALE: (CorruptDataError, "bucket {where} has scale 0 but non-zero levels"),
    D_DENSE_PADDING: (CorruptDataError, "non-zero padding bits after the last dense field"),
    D_CODE_TOO_LONG: (
        CorruptDataError,
        "bucket {where} declares more elias code bits than its elements can use",
    ),
    D_PAST_END: (
        CorruptDataError,
        "bucket {where}: an elias code runs past the bucket's declared bit length",
    ),
    D_GAP: (CorruptDataError, "bucket {where}: an elias gap reaches past the end of its bucket"),
    D_LEVEL: (CorruptDataError, "bucket {where}: an elias level is above s={s}"),
    D_OMEGA_GROUP: (
        CorruptDataError,
        "bucket {where}: an elias omega group longer than any valid gap or level (25 bits)",
    ),
    D_ELIAS_PADDING: (
        CorruptDataError,
        "bucket {where}: non-zero padding bits after its elias code",
    ),
    D_BAD_SCALE: (
        CorruptDataError,
        "scale of bucket {where} is {value!r} (bits 0x{bits:08x}): "
        "a scale must be +0.0 or a positive finite float32 no "
        "larger than the {dtype} maximum",
    ),
    D_NONFINITE: (
        NonFiniteError,
        "input element {where} is {value!r}: QSGD cannot encode NaN or infinite values (spec 8.1)",
    ),
    D_SCALE_RANGE: (
        NonFiniteError,
        "bucket {where}'s {scale} scale exceeds {limit!r}, the "
        "largest scale a {dtype} message can carry; {hint} "
        "(spec 8.2)",
    ),
    D_CHECKSUM: (
        ChecksumError,
        "CRC-32 mismatch: stored 0x{stored:08x}, computed 0x{computed:08x}",
    ),
    D_TABLE_SUM: (
        LengthError,
        "elias bit lengths add up to {code_bytes} code bytes, but the body holds {body_bytes}",
    ),
}


def _scale_range_hint(dtype, scale):
    if dtype == "float64" and scale == "max":
        return "float64 input must lie within the float32 range"
    return "use scale='max' or a smaller bucket_size"


def defect(code, where=-1, **context):
    """The exception for defect ``code`` at ``where`` (see :data:`DEFECTS`).

    ``context`` fills the row's template: ``s`` (levels), ``dtype``, ``scale``, ``value`` and
    ``bits``, ``limit``, ``stored`` and ``computed``, ``code_bytes`` and ``body_bytes``.
    """
    cls, template = DEFECTS[code]
    if code == D_SCALE_RANGE:
        context.setdefault("hint", _scale_range_hint(context.get("dtype"), context.get("scale")))
    if "value" in context:
        context["value"] = float(context["value"])
    return cls(template.format(where=int(where), **context))
