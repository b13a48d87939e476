"""qsgd_codec: QSGD gradient compression with a versioned wire format.

    >>> import numpy as np, qsgd_codec
    >>> x = np.linspace(-1, 1, 1000, dtype=np.float32)
    >>> data = qsgd_codec.encode(x, bits=4, bucket_size=512, seed=1)
    >>> y = qsgd_codec.decode(data)

The wire format is specified in spec/wire-format.md; :mod:`qsgd_codec.reference` is its
readable oracle.  Importing this package imports only NumPy and Numba.
"""

from .api import decode, encode, inspect, max_encoded_size, warmup
from .errors import *  # noqa: F401,F403
from .errors import __all__ as _errors_all
from .format import MAJOR as FORMAT_MAJOR, MINOR as FORMAT_MINOR

__version__ = "0.1.0"
FORMAT_VERSION = f"{FORMAT_MAJOR}.{FORMAT_MINOR}"

__all__ = ["encode", "decode", "inspect", "max_encoded_size", "warmup", "FORMAT_VERSION", "__version__", *_errors_all]
