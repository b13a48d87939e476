"""zlib's CRC-32 (spec 7) of uint8 arrays, three ways that give the same value.

Carry-less multiply folding with 512-bit VPCLMULQDQ, the same with 128-bit PCLMULQDQ, and a
slicing-by-8 table loop for CPUs without either.  :func:`crc32` runs the fastest one the
CPU that numba compiles for supports (:data:`CRC_IMPLEMENTATION` names it).

Folding keeps a 128-bit value congruent (mod P) to the data seen so far; polynomial
constants are x^k mod P in bit-reflected form, with k one less than the fold distance
because a carry-less product of two reflected operands comes out one position short.  The
final 16 bytes are finished by the table loop.
"""

import platform

import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .byteio import U32, U64, _ld32, _ld64

_CRC_POLY = 0x104C11DB7


def _xpow_mod(e):
    """x^e mod P (bit d = coefficient of x^d)."""

    def mulmod(a, b):
        p = 0
        while b:
            if b & 1:
                p ^= a
            b >>= 1
            a <<= 1
            if a >> 32 & 1:
                a ^= _CRC_POLY
        return p

    r, base = 1, 2
    while e:
        if e & 1:
            r = mulmod(r, base)
        base = mulmod(base, base)
        e >>= 1
    return r


def _reflected_constant(e):
    k = _xpow_mod(e)
    return sum(1 << (63 - d) for d in range(32) if k >> d & 1)


_K128 = (_reflected_constant(191), _reflected_constant(127))  # fold by 128 bits
_K512 = (_reflected_constant(575), _reflected_constant(511))  # 4 x 128-bit lanes
_K2048 = (_reflected_constant(2111), _reflected_constant(2047))  # 4 x 512-bit lanes


def _crc_tables():
    t = np.zeros((8, 256), dtype=np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ (0xEDB88320 if c & 1 else 0)
        t[0, i] = c
    for k in range(1, 8):
        t[k] = (t[k - 1] >> 8) ^ t[0][t[k - 1] & 0xFF]
    return t


CRC_TABLES = _crc_tables()
K128_LO, K128_HI = U64(_K128[0]), U64(_K128[1])


def _make_fold_intrinsic(width):
    """An intrinsic folding ``nvec`` 16-byte blocks (a multiple of 4*width/128) of a uint8
    array from byte ``start`` into one 128-bit value, returned as two uint64 (memory order).
    ``init`` is XORed into the first 8 bytes."""
    per = width // 128  # 128-bit lanes per register
    k_far = _K512 if per == 1 else _K2048
    name = "llvm.x86.pclmulqdq" if per == 1 else "llvm.x86.pclmulqdq.512"

    @intrinsic
    def fold(typingctx, buf, start, nvec, init):
        sig = types.UniTuple(types.uint64, 2)(buf, types.int64, types.int64, types.uint64)

        def codegen(context, builder, signature, args):
            ary = context.make_array(signature.args[0])(context, builder, args[0])
            start, nvec, init = args[1], args[2], args[3]
            i64, i32, i8 = ir.IntType(64), ir.IntType(32), ir.IntType(8)
            v2 = ir.VectorType(i64, 2)
            vw = ir.VectorType(i64, 2 * per)
            vptr = builder.bitcast(builder.gep(ary.data, [start]), vw.as_pointer())
            clw = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vw, [vw, vw, i8]), name
            )
            cl2 = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(v2, [v2, v2, i8]), "llvm.x86.pclmulqdq"
            )
            kw = ir.Constant(vw, [k_far[0], k_far[1]] * per)
            k2 = ir.Constant(v2, [_K128[0], _K128[1]])

            def load(idx):
                return builder.load(builder.gep(vptr, [idx]), align=1)

            def fold_w(v):
                a = builder.call(clw, [v, kw, ir.Constant(i8, 0x00)])
                b = builder.call(clw, [v, kw, ir.Constant(i8, 0x11)])
                return builder.xor(a, b)

            def fold_2(v):
                a = builder.call(cl2, [v, k2, ir.Constant(i8, 0x00)])
                b = builder.call(cl2, [v, k2, ir.Constant(i8, 0x11)])
                return builder.xor(a, b)

            nregs = builder.sdiv(nvec, ir.Constant(i64, per))
            four = ir.Constant(i64, 4)
            initv = builder.insert_element(
                ir.Constant(vw, [0] * (2 * per)), init, ir.Constant(i32, 0)
            )
            first = [builder.xor(load(ir.Constant(i64, 0)), initv)]
            first += [load(ir.Constant(i64, k)) for k in (1, 2, 3)]
            entry = builder.block
            loop = builder.append_basic_block("crc.fold")
            done = builder.append_basic_block("crc.done")
            builder.cbranch(builder.icmp_signed("<", four, nregs), loop, done)
            builder.position_at_end(loop)
            iv = builder.phi(i64)
            acc = [builder.phi(vw) for _ in range(4)]
            iv.add_incoming(four, entry)
            for phi, value in zip(acc, first):
                phi.add_incoming(value, entry)
            new = [
                builder.xor(fold_w(acc[k]), load(builder.add(iv, ir.Constant(i64, k))))
                for k in range(4)
            ]
            nxt = builder.add(iv, four)
            for phi, value in zip(acc, new):
                phi.add_incoming(value, loop)
            iv.add_incoming(nxt, loop)
            builder.cbranch(builder.icmp_signed("<", nxt, nregs), loop, done)
            builder.position_at_end(done)
            final = []
            for k in range(4):
                phi = builder.phi(vw)
                phi.add_incoming(first[k], entry)
                phi.add_incoming(new[k], loop)
                final.append(phi)
            state = None
            for k in range(4):
                for lane in range(per):
                    part = (
                        final[k]
                        if per == 1
                        else builder.shuffle_vector(
                            final[k],
                            final[k],
                            ir.Constant(ir.VectorType(i32, 2), [2 * lane, 2 * lane + 1]),
                        )
                    )
                    state = part if state is None else builder.xor(fold_2(state), part)
            lo = builder.extract_element(state, ir.Constant(i32, 0))
            hi = builder.extract_element(state, ir.Constant(i32, 1))
            return context.make_tuple(builder, signature.return_type, [lo, hi])

        return sig, codegen

    return fold


_fold128 = _make_fold_intrinsic(128)
_fold512 = _make_fold_intrinsic(512)


@intrinsic
def _clmul(typingctx, a, b):
    """128-bit carry-less product of two uint64, as (low, high)."""
    sig = types.UniTuple(types.uint64, 2)(types.uint64, types.uint64)

    def codegen(context, builder, signature, args):
        i64, i32, i8 = ir.IntType(64), ir.IntType(32), ir.IntType(8)
        v2 = ir.VectorType(i64, 2)
        zero = ir.Constant(v2, [0, 0])
        va = builder.insert_element(zero, args[0], ir.Constant(i32, 0))
        vb = builder.insert_element(zero, args[1], ir.Constant(i32, 0))
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(v2, [v2, v2, i8]), "llvm.x86.pclmulqdq"
        )
        r = builder.call(fn, [va, vb, ir.Constant(i8, 0)])
        return context.make_tuple(
            builder,
            signature.return_type,
            [
                builder.extract_element(r, ir.Constant(i32, 0)),
                builder.extract_element(r, ir.Constant(i32, 1)),
            ],
        )

    return sig, codegen


@njit(cache=True)
def _crc_bytes(buf, lo, hi, r):
    """Advance the (pre-inverted) CRC register over buf[lo:hi], slicing by 8."""
    t = CRC_TABLES
    i = lo
    while i + 8 <= hi:
        a = r ^ _ld32(buf, i)
        b = _ld32(buf, i + 4)
        r = (
            t[7, a & U32(255)]
            ^ t[6, (a >> U32(8)) & U32(255)]
            ^ t[5, (a >> U32(16)) & U32(255)]
            ^ t[4, a >> U32(24)]
            ^ t[3, b & U32(255)]
            ^ t[2, (b >> U32(8)) & U32(255)]
            ^ t[1, (b >> U32(16)) & U32(255)]
            ^ t[0, b >> U32(24)]
        )
        i += 8
    while i < hi:
        r = t[0, (r ^ U32(buf[i])) & U32(255)] ^ (r >> U32(8))
        i += 1
    return r


@njit(cache=True)
def _crc_finish_state(buf, i, n, s0, s1):
    """Fold the remaining whole 16-byte blocks, then run the table over the state's 16 bytes
    (init 0: the state already holds the register) and the tail."""
    while i + 16 <= n:
        a0, a1 = _clmul(s0, K128_LO)
        b0, b1 = _clmul(s1, K128_HI)
        s0 = a0 ^ b0 ^ _ld64(buf, i)
        s1 = a1 ^ b1 ^ _ld64(buf, i + 8)
        i += 16
    t = CRC_TABLES
    r = U32(0)
    for w in (s0, s1):
        for k in range(8):
            r = t[0, (r ^ U32((w >> U64(8 * k)) & U64(255))) & U32(255)] ^ (r >> U32(8))
    return _crc_bytes(buf, i, n, r)


@njit(cache=True)
def crc32_table(buf, crc):
    """zlib.crc32(buf, crc) with tables only (any CPU)."""
    r = U32(crc) ^ U32(0xFFFFFFFF)
    return _crc_bytes(buf, 0, buf.size, r) ^ U32(0xFFFFFFFF)


@njit(cache=True)
def crc32_clmul128(buf, crc):
    """zlib.crc32(buf, crc) by 128-bit carry-less multiply folding (x86 PCLMULQDQ)."""
    n = buf.size
    r = U32(crc) ^ U32(0xFFFFFFFF)
    if n < 128:
        return _crc_bytes(buf, 0, n, r) ^ U32(0xFFFFFFFF)
    nvec = (n // 64) * 4
    s0, s1 = _fold128(buf, 0, nvec, U64(r))
    return _crc_finish_state(buf, nvec * 16, n, s0, s1) ^ U32(0xFFFFFFFF)


@njit(cache=True)
def crc32_clmul512(buf, crc):
    """zlib.crc32(buf, crc) by 512-bit carry-less multiply folding (AVX-512 VPCLMULQDQ)."""
    n = buf.size
    r = U32(crc) ^ U32(0xFFFFFFFF)
    if n < 512:
        return _crc_bytes(buf, 0, n, r) ^ U32(0xFFFFFFFF)
    nvec = (n // 256) * 16
    s0, s1 = _fold512(buf, 0, nvec, U64(r))
    return _crc_finish_state(buf, nvec * 16, n, s0, s1) ^ U32(0xFFFFFFFF)


def _cpu_features():
    """The CPU features numba compiles for (honours NUMBA_CPU_NAME / NUMBA_CPU_FEATURES)."""
    if numba.config.CPU_FEATURES is not None:
        return {f[1:] for f in numba.config.CPU_FEATURES.split(",") if f.startswith("+")}
    if numba.config.CPU_NAME not in (None, "host"):
        return set()
    try:
        import llvmlite.binding as llvm

        return {name for name, on in llvm.get_host_cpu_features().items() if on}
    except Exception:  # pragma: no cover - llvmlite without feature detection
        return set()


def _pick_crc():
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return crc32_table, "table"
    features = _cpu_features()
    if {"vpclmulqdq", "avx512f", "avx512bw"} <= features:
        return crc32_clmul512, "vpclmulqdq-512"
    if {"pclmul", "sse4.1"} <= features:
        return crc32_clmul128, "pclmulqdq-128"
    return crc32_table, "table"


_CRC_KERNEL, CRC_IMPLEMENTATION = _pick_crc()


def crc32(buf, crc=0):
    """zlib.crc32 of a 1-D contiguous uint8 array."""
    global _CRC_KERNEL, CRC_IMPLEMENTATION
    try:
        return int(_CRC_KERNEL(buf, U32(crc)))
    except numba.core.errors.NumbaError:  # pragma: no cover - an intrinsic the CPU lacks
        _CRC_KERNEL, CRC_IMPLEMENTATION = crc32_table, "table"
        return int(_CRC_KERNEL(buf, U32(crc)))
