"""Element types: the per-dtype kernel parameters and the exact conversions (spec 8.1, 9).

Input values reach the kernels as raw bit patterns (uint16 for float16 and bfloat16, uint32
for float32, uint64 for float64); :func:`_to_f64` turns one into its exact binary64 value
inside the loops, so no converted copy of the input is ever made.  :func:`_mag_bits` and
:func:`_out_bits` round a binary64 result to the output type, nearest-even, keeping
subnormals.  The three are overloads dispatching on the raw-bits array's dtype (the stubs
below are what the kernels call).
"""

import numpy as np
from numba import types
from numba.extending import overload

from .. import wire

U64 = np.uint64
U32 = np.uint32
# shift count typed uint64 (a uint64 shifted by an int64 literal becomes int64 in numba)
SH52 = U64(52)
TWO_52 = 2.0**52


class _DType:
    """Kernel parameters of one element type: raw-bits dtype and IEEE layout."""

    def __init__(self, name, bits, mant, emin, absmask, infbits):
        self.name = name
        self.bits = np.dtype(bits)
        self.mant = mant  # explicit mantissa bits
        self.emin = emin  # exponent of the smallest normal
        self.absmask = self.bits.type(absmask)
        self.infbits = self.bits.type(infbits)
        self.signbit = self.bits.type(1 << (8 * self.bits.itemsize - 1))
        self.dmax = float(wire.DTYPE_MAX[name])
        self.dmax_bits = U32(np.float32(self.dmax).view(np.uint32))


DTYPES = {
    "float16": _DType("float16", np.uint16, 10, -14, 0x7FFF, 0x7C00),
    "bfloat16": _DType("bfloat16", np.uint16, 7, -126, 0x7FFF, 0x7F80),
    "float32": _DType("float32", np.uint32, 23, -126, 0x7FFFFFFF, 0x7F800000),
    "float64": _DType("float64", np.uint64, 52, -1022, 0x7FFFFFFFFFFFFFFF, 0x7FF0000000000000),
}


def _value_of(bits, dtype):
    """The value of one raw bit pattern of ``dtype``, as a NumPy scalar (host side)."""
    if dtype == "float16":
        return np.uint16(bits).view(np.float16)
    if dtype == "bfloat16":
        return (np.uint32(bits) << np.uint32(16)).view(np.float32)
    return bits.view(np.float32 if dtype == "float32" else np.float64)


def _to_f64(b, mant, xb):
    """binary64 value of the raw bits ``b`` of an element of array ``xb`` (a stub: the kernels
    use the overload below, which dispatches on the array's dtype, because numba widens
    small unsigned scalars to uint64 in arithmetic)."""
    raise NotImplementedError


@overload(_to_f64)
def _to_f64_impl(b, mant, xb):
    dt = xb.dtype
    if dt == types.uint16:

        def impl(b, mant, xb):
            # float16 (mant=10) and bfloat16 (mant=7): value = m * 2^(max(e,1) - bias - mant)
            v = np.int64(b)
            emask = np.int64(0x7FFF) >> mant
            e = (v >> mant) & emask
            m = v & ((np.int64(1) << mant) - 1)
            if e != 0:
                m |= np.int64(1) << mant
            else:
                e = 1
            p2 = U64(U64(e - (emask >> 1) - mant + 1023) << SH52)
            x = np.float64(m) * p2.view(np.float64)
            return -x if v & 0x8000 else x

        return impl
    if dt == types.uint32:
        return lambda b, mant, xb: np.float64(U32(b).view(np.float32))
    if dt == types.uint64:
        return lambda b, mant, xb: U64(b).view(np.float64)
    return None


def _mag_bits(v, mant, emin, out):
    """Bits of the non-negative binary64 ``v`` rounded to the element type of the raw-bits
    array ``out`` (stub; see the overload)."""
    raise NotImplementedError


@overload(_mag_bits)
def _mag_bits_impl(v, mant, emin, out):
    dt = out.dtype
    if dt == types.uint64:
        return lambda v, mant, emin, out: np.float64(v).view(np.uint64)
    if dt == types.uint32:
        # the hardware conversion rounds to nearest even and keeps subnormals (no FTZ)
        return lambda v, mant, emin, out: np.float32(v).view(np.uint32)
    if dt == types.uint16:

        def impl(v, mant, emin, out):
            if v == 0.0:
                return np.uint16(0)
            e = np.int64((np.float64(v).view(np.uint64) >> SH52) & U64(0x7FF)) - 1023
            if e < emin:
                e = emin
            # k = RNE(v / 2^(e - mant)): the scaling is exact, and adding and subtracting 2^52
            # rounds to an integer with ties to even (k < 2^(mant+1) <= 2^11)
            scaled = v * U64(U64(mant - e + 1023) << SH52).view(np.float64)
            k = (scaled + TWO_52) - TWO_52
            return np.uint16(((e - emin) << mant) + np.int64(k))

        return impl
    return None


def _out_bits(v, mant, emin, out):
    """Bits of the binary64 ``v`` (any sign) rounded to the element type of ``out`` (stub)."""
    raise NotImplementedError


@overload(_out_bits)
def _out_bits_impl(v, mant, emin, out):
    dt = out.dtype
    if dt == types.uint64:
        return lambda v, mant, emin, out: np.float64(v).view(np.uint64)
    if dt == types.uint32:
        return lambda v, mant, emin, out: np.float32(v).view(np.uint32)
    if dt == types.uint16:

        def impl(v, mant, emin, out):
            mag = _mag_bits(abs(v), mant, emin, out)
            return np.uint16(mag | np.uint16(0x8000)) if v < 0.0 else mag

        return impl
    return None
