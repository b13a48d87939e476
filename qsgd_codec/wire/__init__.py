"""The wire format alone: constants and limits, the header, parameters, sizes and the random
source of QSGD wire format 1.0 (spec/wire-format.md).  No Numba here: this layer is what an
independent implementation of the spec would need, and what every other layer builds on.

- :mod:`.constants` -- magic, versions, limits, enumerations, defaults;
- :mod:`.header` -- :class:`Header`, :func:`parse_header`, :func:`pack_header`, the checksum,
  scales and elias table checks, the element limit;
- :mod:`.params` -- :class:`EncodeParams` and the element types;
- :mod:`.sizes` -- bucket counts, dense widths, omega lengths, :func:`encoded_size`;
- :mod:`.rng` -- SplitMix64 (:func:`mix64`) and :func:`derive_seed`.
"""

from . import rng  # noqa: F401
from .constants import *  # noqa: F401,F403
from .header import (  # noqa: F401
    Header,
    bucket_extent,
    byte_view,
    check_representable,
    check_scales,
    crc32,
    element_limit,
    elias_table,
    message_fields,
    pack_header,
    parse_header,
    read_scales,
)
from .params import (  # noqa: F401
    EncodeParams,
    ParamsAttributes,
    bfloat16_dtype,
    bits_dtype,
    dtype_name,
    encode_params,
    numpy_dtype,
    resolve_levels,
    resolve_params,
)
from .sizes import (  # noqa: F401
    dense_codes_length,
    dense_width,
    encoded_size,
    header_length,
    num_buckets,
    omega_length,
)
