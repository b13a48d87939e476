"""Sizes, codes and the status-array layout shared by the kernels and their launchers.

Kernels read these as compile-time constants.  Under the simulator a few sizes are smaller
(each simulated thread is a Python thread and every ``syncthreads()`` costs milliseconds).

The status array
----------------
Every launch of one call shares a small int64 array (:func:`qsgd_codec.cuda.host._new_err`).
The defect slots hold ``where * DEFECT_STRIDE + code`` with the codes of
:data:`qsgd_codec.errors.DEFECTS`, written with ``atomic.min``, so each keeps the first
defect in the order the reference finds them; ``I64_MAX`` means none.
"""

import numpy as np

from .. import wire
from .primitives import SIMULATOR

C_F16, C_BF16, C_F32, C_F64 = (
    wire.DTYPE_CODES[k] for k in ("float16", "bfloat16", "float32", "float64")
)
K_L2, K_MAX = wire.SCALE_CODES["l2"], wire.SCALE_CODES["max"]
DBL_MAX = 1.7976931348623157e308
FLT_MAX = float(np.finfo(np.float32).max)
TWO_M53 = 2.0**-53
I64_MAX = (1 << 63) - 1
MAX_ENTRY_BITS = wire.MAX_ENTRY_BITS
MAX_OMEGA_GROUP = wire.MAX_OMEGA_GROUP
#: the reflected CRC-32 polynomial (spec 7)
CRC_POLY = 0xEDB88320

#: most threads per block of the bucket kernels; shared arrays are sized for it.  Block sizes
#: are powers of two: on a GPU 32 .. MAX_T from the bucket size, SIM_THREADS in the simulator.
MAX_T = 128
SCAN_SIZE = 2 * MAX_T
#: elements per thread in one elias tile; a tile is T * E_PER_THREAD consecutive elements
E_PER_THREAD = 4
#: squares staged per round of the l2 sum (a multiple of 32, so lane = element index mod 32)
SQ_TILE = 512
#: most elements in an elias tile
TILE_MAX = MAX_T * E_PER_THREAD
#: threads of the element-wise kernels
ELEM_T = 256
#: bytes per thread of the CRC kernel
CRC_CHUNK = 1024
MAX_GRID = 1 << 20

if SIMULATOR:
    # small blocks, few blocks, long tiles
    ELEM_T = 8
    CRC_CHUNK = 64
    MAX_GRID = 3
    TILE_MAX = 4096

#: shared bit buffer of the elias writer: one tile's longest code plus a carried partial byte
BUF_WORDS = (7 + TILE_MAX * MAX_ENTRY_BITS + 31) // 32 + 2

#: a defect slot holds where * DEFECT_STRIDE + code (every code is below it)
DEFECT_STRIDE = 16

# slots of the status array
E_INPUT = 0  # encoder: first non-finite input element (D_NONFINITE)
E_SCALE = 1  # encoder: first bucket whose scale exceeds the dtype's range (D_SCALE_RANGE)
E_CRC = 2  # decoder: the computed CRC-32 when it differs from the stored one
E_BADSCALE = 3  # decoder: first bucket with an invalid scale (D_BAD_SCALE)
E_CODES = 4  # decoder: first defect in the codes (dense: by element; elias: by bucket)
E_TOTAL = 5  # elias: total code bytes (written by the offsets scan)
E_ACC = 6  # CRC: XOR of the chunks' contributions
E_DONE = 7  # CRC: blocks finished
E_STORED = 8  # decoder: the stored CRC-32 when it differs from the computed one
N_ERR = 9
#: slots that start at 0 rather than I64_MAX
ZERO_SLOTS = (E_TOTAL, E_ACC, E_DONE)
