"""``qsgd_codec.mpi``: the short name of :mod:`qsgd_codec.adapters.mpi`.

The same module object, not a copy:
``qsgd_codec.mpi is qsgd_codec.adapters.mpi``.
"""

import sys

from .adapters import mpi as _module

sys.modules[__name__] = _module
