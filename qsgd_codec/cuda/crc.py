"""CRC-32 (spec 7) on the device: the kernel, its device functions and its host tables.

The message never passes through the host for it: each thread takes the CRC register of one
chunk with slicing-by-4 tables, multiplies it by x^(8 * bytes after the chunk) modulo the
polynomial (crc32_combine's algebra), the contributions are XORed, and the last block to
finish applies the initial and final XOR.
"""

import numpy as np
from numba import cuda
from numba.cuda import types as _nbt

from .device import _read_u32
from .layout import CRC_POLY, E_ACC, E_CRC, E_DONE, E_STORED, ELEM_T
from .primitives import SIMULATOR


@cuda.jit(device=True, cache=True)
def _mulmod_crc(a, b):
    """a * b modulo the CRC-32 polynomial, bit-reflected (bit 31 is x^0)."""
    p = np.int64(0)
    for k in range(32):
        if (a >> (31 - k)) & 1:
            p ^= b
        if b & 1:
            b = (b >> 1) ^ CRC_POLY
        else:
            b >>= 1
    return p


@cuda.jit(device=True, cache=True)
def _xpow8_crc(nbytes, x2n):
    """x^(8 * nbytes) modulo the CRC-32 polynomial; x2n[k] = x^(2^k)."""
    r = np.int64(0x80000000)
    e = nbytes * 8
    k = 0
    while e > 0:
        if e & 1:
            r = _mulmod_crc(np.int64(x2n[k]), r)
        e >>= 1
        k += 1
    return r


@cuda.jit(cache=True)
def _k_crc(msg, words, use_words, total, chunk, table, x2n, init_term, write, err):
    """CRC-32 of msg[:total] (spec 7): stored after it (``write``) or compared with the four
    bytes there (mismatch: err[E_CRC] = the computed value, err[E_STORED] = the stored one).

    Thread c takes the CRC register (initial value 0) of chunk c with the slicing-by-4 tables
    (a little-endian word at a time when ``use_words``: msg is 4-byte aligned and ``words`` is
    its uint32 view), multiplies it by x^(8 * bytes after the chunk) modulo the polynomial,
    and the contributions are XORed together (err[E_ACC]).  The last block to finish adds
    ``init_term`` (the initial 0xFFFFFFFF carried over all bytes, and the final XOR).
    """
    sh_tab = cuda.shared.array(1024, _nbt.uint32)
    sh_x = cuda.shared.array(ELEM_T, _nbt.int64)
    t = cuda.threadIdx.x
    nthreads = cuda.blockDim.x
    for k in range(t, 1024, nthreads):
        sh_tab[k] = table[k]
    cuda.syncthreads()
    mine = np.int64(0)
    nchunks = (total + chunk - 1) // chunk
    for c in range(cuda.grid(1), nchunks, cuda.gridsize(1)):
        lo = c * chunk
        hi = min(total, lo + chunk)
        crc = np.int64(0)
        k = lo
        if use_words:
            while k + 4 <= hi:
                crc ^= np.int64(words[k >> 2])
                crc = (
                    np.int64(sh_tab[768 + (crc & 0xFF)])
                    ^ np.int64(sh_tab[512 + ((crc >> 8) & 0xFF)])
                    ^ np.int64(sh_tab[256 + ((crc >> 16) & 0xFF)])
                    ^ np.int64(sh_tab[(crc >> 24) & 0xFF])
                )
                k += 4
        while k < hi:
            crc = np.int64(sh_tab[(crc ^ np.int64(msg[k])) & 0xFF]) ^ (crc >> 8)
            k += 1
        mine ^= _mulmod_crc(_xpow8_crc(total - hi, x2n), crc)
    sh_x[t] = mine
    cuda.syncthreads()
    h = nthreads >> 1
    while h > 0:
        if t < h:
            sh_x[t] ^= sh_x[t + h]
        cuda.syncthreads()
        h >>= 1
    if t == 0:
        cuda.atomic.xor(err, E_ACC, sh_x[0])
        cuda.threadfence()
        if cuda.atomic.add(err, E_DONE, 1) == cuda.gridDim.x - 1:
            crc = cuda.atomic.xor(err, E_ACC, 0) ^ init_term
            if write:
                for k in range(4):
                    msg[total + k] = np.uint8((crc >> (8 * k)) & 0xFF)
            else:
                stored = _read_u32(msg, total)
                if stored != crc:
                    err[E_CRC] = crc
                    err[E_STORED] = stored


# ----------------------------------------------------------------------------- host side


def _mulmod_host(a, b):
    p = 0
    for k in range(32):
        if (a >> (31 - k)) & 1:
            p ^= b
        b = (b >> 1) ^ CRC_POLY if b & 1 else b >> 1
    return p


def _xpow8_host(nbytes, x2n):
    r, e, k = 0x80000000, 8 * nbytes, 0
    while e:
        if e & 1:
            r = _mulmod_host(int(x2n[k]), r)
        e >>= 1
        k += 1
    return r


def _crc_tables():
    """Slicing-by-4 tables (table[256*k + b]: byte b followed by k zero bytes) and x^(2^k)."""
    table = np.zeros(1024, dtype=np.uint32)
    for byte in range(256):
        r = byte
        for _ in range(8):
            r = (r >> 1) ^ CRC_POLY if r & 1 else r >> 1
        table[byte] = r
    for k in range(1, 4):
        for byte in range(256):
            prev = int(table[256 * (k - 1) + byte])
            table[256 * k + byte] = (prev >> 8) ^ int(table[prev & 0xFF])
    x2n = np.zeros(64, dtype=np.uint32)
    x2n[0] = 0x40000000  # x^1
    for k in range(1, 64):
        x2n[k] = _mulmod_host(int(x2n[k - 1]), int(x2n[k - 1]))
    return table, x2n


_CRC_TABLE, _CRC_X2N = _crc_tables()
_device_tables = {}


def _tables():
    """The CRC tables on the device (per context; copied once, synchronously, so that any
    stream may use them)."""
    key = 0 if SIMULATOR else id(cuda.current_context())
    if key not in _device_tables:
        _device_tables[key] = (cuda.to_device(_CRC_TABLE), cuda.to_device(_CRC_X2N))
    return _device_tables[key]


def _init_term(total):
    """The initial 0xFFFFFFFF carried over ``total`` bytes, and the final XOR."""
    return _mulmod_host(_xpow8_host(total, _CRC_X2N), 0xFFFFFFFF) ^ 0xFFFFFFFF
