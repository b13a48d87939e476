"""Error classes of the QSGD wire format (spec/wire-format.md, section 11).

Every error is a :class:`QSGDError`, which is a :class:`ValueError`, so callers that
already catch ``ValueError`` keep working.  The class names are part of the
conformance suite: each invalid vector names the class a decoder must raise.
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


_BY_NAME = {name: obj for name, obj in globals().items()
            if isinstance(obj, type) and issubclass(obj, QSGDError)}


def error_class(name):
    """Return the error class called ``name`` (as written in the conformance vectors)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown QSGD error class {name!r}") from None
