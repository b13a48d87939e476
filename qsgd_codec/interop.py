"""Input handling: turn any framework's array into something the codec's backends take.

One place decides what an input is (``classify``) and how it becomes a NumPy array
(``as_host_array``).  `encode`, `decode(like=...)` and every collective go through here.
"""

import numpy as np

from . import format as fmt
from .errors import DTypeError, ParameterError


def is_device_array(x):
    """True for GPU arrays: objects exposing __cuda_array_interface__ or numba device arrays."""
    if hasattr(x, "__cuda_array_interface__"):
        return True
    module = type(x).__module__ or ""
    return module.startswith("numba") and hasattr(x, "copy_to_host")


def as_host_array(x):
    """A NumPy view (or, for non-NumPy objects, array) of a host input, dtype checked."""
    if isinstance(x, np.ndarray):
        arr = x
    elif hasattr(x, "__array_interface__") or hasattr(x, "__array__"):
        arr = np.asarray(x)
    elif hasattr(x, "__dlpack__"):
        arr = np.from_dlpack(x)
    else:
        try:
            arr = np.asarray(memoryview(x))
        except TypeError:
            raise ParameterError(f"cannot encode an object of type {type(x).__name__}: pass a "
                                 f"NumPy array, a buffer, or an object with __array_interface__"
                                 f", __dlpack__ or __cuda_array_interface__") from None
    fmt.dtype_name(arr.dtype)
    return arr


def decode_like(data, like, *, max_elements=None):
    """Decode ``data`` into an array of ``like``'s framework and device."""
    from .api import decode
    result = decode(data, max_elements=max_elements)
    if isinstance(like, np.ndarray):
        return result
    raise ParameterError(f"decode(like=...) does not know objects of type {type(like).__name__}")
