"""Little- and big-endian loads and stores of 32- and 64-bit words in uint8 arrays.

Byte offsets are made unsigned before indexing: numba then emits no negative-index
wraparound, and LLVM merges the byte accesses into one (byte-swapped) load or store.
Helpers taking arrays are left to LLVM's inliner: numba-level inlining of them leaves
reference-count calls inside the callers' loops.  (The hottest loops write the same
accesses out inline for that reason.)
"""

import numpy as np
from numba import njit

U64 = np.uint64
U32 = np.uint32
# shift counts typed uint64 (a uint64 shifted by an int64 literal becomes int64 in numba)
SH8, SH32, SH56 = U64(8), U64(32), U64(56)


@njit(cache=True)
def _ld32(buf, i):
    u = U64(i)
    return U32(
        U32(buf[u])
        | (U32(buf[u + U64(1)]) << U32(8))
        | (U32(buf[u + U64(2)]) << U32(16))
        | (U32(buf[u + U64(3)]) << U32(24))
    )


@njit(cache=True)
def _st32(buf, i, v):
    u = U64(i)
    buf[u] = np.uint8(v & U32(255))
    buf[u + U64(1)] = np.uint8((v >> U32(8)) & U32(255))
    buf[u + U64(2)] = np.uint8((v >> U32(16)) & U32(255))
    buf[u + U64(3)] = np.uint8(v >> U32(24))


@njit(cache=True)
def _ld64(buf, i):
    u = U64(i)
    return (
        U64(buf[u])
        | (U64(buf[u + U64(1)]) << SH8)
        | (U64(buf[u + U64(2)]) << U64(16))
        | (U64(buf[u + U64(3)]) << U64(24))
        | (U64(buf[u + U64(4)]) << SH32)
        | (U64(buf[u + U64(5)]) << U64(40))
        | (U64(buf[u + U64(6)]) << U64(48))
        | (U64(buf[u + U64(7)]) << SH56)
    )


@njit(cache=True)
def _ld64be(buf, i):
    u = U64(i)
    return (
        (U64(buf[u]) << SH56)
        | (U64(buf[u + U64(1)]) << U64(48))
        | (U64(buf[u + U64(2)]) << U64(40))
        | (U64(buf[u + U64(3)]) << SH32)
        | (U64(buf[u + U64(4)]) << U64(24))
        | (U64(buf[u + U64(5)]) << U64(16))
        | (U64(buf[u + U64(6)]) << SH8)
        | U64(buf[u + U64(7)])
    )


@njit(cache=True)
def _st64be(buf, i, v):
    u = U64(i)
    buf[u] = np.uint8(v >> SH56)
    buf[u + U64(1)] = np.uint8((v >> U64(48)) & U64(255))
    buf[u + U64(2)] = np.uint8((v >> U64(40)) & U64(255))
    buf[u + U64(3)] = np.uint8((v >> SH32) & U64(255))
    buf[u + U64(4)] = np.uint8((v >> U64(24)) & U64(255))
    buf[u + U64(5)] = np.uint8((v >> U64(16)) & U64(255))
    buf[u + U64(6)] = np.uint8((v >> SH8) & U64(255))
    buf[u + U64(7)] = np.uint8(v & U64(255))
