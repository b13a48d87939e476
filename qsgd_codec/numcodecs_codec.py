"""``qsgd_codec.numcodecs_codec``: short for :mod:`qsgd_codec.adapters.numcodecs_codec`.

The same module object, not a copy:
``qsgd_codec.numcodecs_codec is qsgd_codec.adapters.numcodecs_codec``.
"""

import sys

from .adapters import numcodecs_codec as _module

sys.modules[__name__] = _module
