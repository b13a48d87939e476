"""qsgd_codec: QSGD gradient compression with a versioned wire format.

    >>> import numpy as np, qsgd_codec
    >>> x = np.linspace(-1, 1, 1000, dtype=np.float32)
    >>> data = qsgd_codec.encode(x, bits=4, bucket_size=512, seed=1)
    >>> y = qsgd_codec.decode(data)

The wire format is specified in spec/wire-format.md; :mod:`qsgd_codec.reference` is its
readable oracle.  Importing this package imports only NumPy: the Numba kernels load on the
first call.
"""

__version__ = "0.1.0"

from .api import decode, encode, inspect, max_encoded_size, warmup  # noqa: E402
from .errors import *  # noqa: E402,F401,F403
from .errors import __all__ as _errors_all  # noqa: E402
from .wire import MAJOR as FORMAT_MAJOR, MINOR as FORMAT_MINOR, EncodeParams  # noqa: E402
from .wire.rng import PHASE_AGGREGATE, PHASE_CONTRIBUTION, derive_seed  # noqa: E402

FORMAT_VERSION = f"{FORMAT_MAJOR}.{FORMAT_MINOR}"

__all__ = [
    "encode",
    "decode",
    "inspect",
    "max_encoded_size",
    "warmup",
    "EncodeParams",
    "derive_seed",
    "PHASE_CONTRIBUTION",
    "PHASE_AGGREGATE",
    "FORMAT_VERSION",
    "__version__",
    *_errors_all,
]
