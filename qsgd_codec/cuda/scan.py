"""The device exclusive scan of elias byte lengths: offsets[b] = sum of ceil(L_c / 8), c < b.

Both the encoder (where to write each bucket's code) and the decoder (where to read it) use
it.  :func:`qsgd_codec.cuda.host._scan_offsets` launches the two kernels.
"""

import numpy as np
from numba import cuda
from numba.cuda import types as _nbt

from .device import _block_scan
from .layout import E_TOTAL, MAX_T, SCAN_SIZE


@cuda.jit(cache=True)
def _k_scan_partials(lengths, nb, per_block, partials):
    """partials[k] = sum of ceil(L_b / 8) over block k's range of buckets."""
    sh = cuda.shared.array(MAX_T, _nbt.int64)
    t = cuda.threadIdx.x
    nthreads = cuda.blockDim.x
    for k in range(cuda.blockIdx.x, (nb + per_block - 1) // per_block, cuda.gridDim.x):
        acc = np.int64(0)
        for b in range(k * per_block + t, min(nb, (k + 1) * per_block), nthreads):
            acc += (np.int64(lengths[b]) + 7) >> 3
        sh[t] = acc
        cuda.syncthreads()
        h = nthreads >> 1
        while h > 0:
            if t < h:
                sh[t] += sh[t + h]
            cuda.syncthreads()
            h >>= 1
        if t == 0:
            partials[k] = sh[0]
        cuda.syncthreads()


@cuda.jit(cache=True)
def _k_scan_offsets(lengths, nb, per_block, partials, nparts, offsets, err):
    """offsets[b] = sum of ceil(L_c / 8) for c < b; offsets[nb] = err[E_TOTAL] = the total.

    Every block first adds up the partials before its own range (a few hundred at most).
    """
    sh = cuda.shared.array(SCAN_SIZE, _nbt.int64)
    t = cuda.threadIdx.x
    nthreads = cuda.blockDim.x
    for k in range(cuda.blockIdx.x, nparts, cuda.gridDim.x):
        acc = np.int64(0)
        for c in range(t, k, nthreads):
            acc += partials[c]
        _, carry = _block_scan(sh, t, nthreads, acc, False)
        for base in range(k * per_block, min(nb, (k + 1) * per_block), nthreads):
            b = base + t
            v = np.int64(0)
            if b < nb:
                v = (np.int64(lengths[b]) + 7) >> 3
            before, tot = _block_scan(sh, t, nthreads, v, False)
            if b < nb:
                offsets[b] = carry + before
            carry += tot
        if k == nparts - 1 and t == 0:
            offsets[nb] = carry
            err[E_TOTAL] = carry
