"""``qsgd_codec.torch_ddp``: the short name of :mod:`qsgd_codec.adapters.torch_ddp`.

The same module object, not a copy:
``qsgd_codec.torch_ddp is qsgd_codec.adapters.torch_ddp``.
"""

import sys

from .adapters import torch_ddp as _module

sys.modules[__name__] = _module
