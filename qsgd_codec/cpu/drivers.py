"""The Python side of the CPU codec: chunk bounds, buffers, and the drivers that run the
kernels and turn a reported defect into the reference's exception (:func:`errors.defect`).

What :mod:`qsgd_codec.api` calls: :func:`encode_array`, :func:`encode_bits`,
:func:`message_array`, :func:`verify_checksum`, :func:`decode_into`,
:func:`elias_code_bits` and :func:`warmup`.
"""

import math
import sys
import time

import numba
import numpy as np

from .. import wire
from ..errors import (
    D_BAD_SCALE,
    D_CHECKSUM,
    D_DENSE_PADDING,
    D_NONFINITE,
    D_OK,
    D_SCALE_RANGE,
    D_TABLE_SUM,
    defect,
    out_too_small,
)
from ..wire import rng
from .byteio import U32, U64, _ld32, _st32
from .convert import DTYPES, _value_of
from .crc import crc32
from .decode import (
    _check_scales,
    _dense_decode_par,
    _dense_decode_seq,
    _elias_check_table,
    _elias_code_bits,
    _elias_decode_par,
    _elias_decode_seq,
)
from .dense import _dense_encode_par, _dense_encode_seq, _scales_par
from .elias import (
    _elias_count_par,
    _elias_count_seq,
    _elias_layout,
    _elias_total,
    _elias_write_par,
    _elias_write_seq,
)

#: elements per chunk of parallel work (a chunk is whole buckets unless a bucket is larger)
CHUNK = 1 << 15
#: below this many elements the serial kernels run (a parallel launch costs more)
PARALLEL_MIN = 1 << 16


# ----------------------------------------------------------------------------- chunks, arrays


def _parallel(n):
    return n >= PARALLEL_MIN and numba.get_num_threads() > 1


def _bucket_bounds(nb, d):
    """Chunk boundaries in buckets: about CHUNK elements each, first elements multiples of 8."""
    g = max(1, CHUNK // d)
    g0 = 8 // math.gcd(d, 8)
    g = -(-g // g0) * g0
    return np.append(np.arange(0, nb, g, dtype=np.int64), np.int64(nb)), g


def _element_bounds(n):
    step = CHUNK
    return np.append(np.arange(0, n, step, dtype=np.int64), np.int64(n))


def _readonly(a):
    v = a.view()
    v.flags.writeable = False
    return v


def flat_bits(arr, dtype):
    """The input as a flat, aligned, read-only array of raw bits (a view when possible)."""
    info = DTYPES[dtype]
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if not (arr.flags.c_contiguous and arr.flags.aligned):
        arr = np.ascontiguousarray(arr)
        if not arr.flags.aligned:  # pragma: no cover - numpy aligns copies
            arr = arr.copy()
    return _readonly(arr.reshape(-1).view(info.bits))


class _Buffer:
    """Where an encoder writes: a new bytes object filled in place, or the caller's ``out``."""

    def __init__(self, size, out=None):
        self.size = size
        self.result = None
        if out is not None:
            self.array = out[:size]
            return
        self.result = _new_bytes(size)
        if self.result is not None:
            self.array = np.frombuffer(self.result, dtype=np.uint8)
            self.array = _writable_alias(self.array)
        else:  # pragma: no cover - non-CPython
            self.array = np.empty(size, dtype=np.uint8)

    def finish(self, out):
        if out is not None:
            return memoryview(out)[: self.size]
        if self.result is not None:
            return self.result
        return self.array.tobytes()  # pragma: no cover - non-CPython


def _new_bytes(size):
    """A new, uninitialised ``bytes`` of ``size`` bytes (CPython: PyBytes_FromStringAndSize
    with a NULL source, whose contents the C API lets its creator write before sharing)."""
    if sys.implementation.name != "cpython" or size < 2:
        return None
    import ctypes

    fn = ctypes.pythonapi.PyBytes_FromStringAndSize
    fn.restype = ctypes.py_object
    fn.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)
    return fn(None, size)


def _writable_alias(readonly_array):
    import ctypes

    n = readonly_array.size
    addr = readonly_array.ctypes.data
    return np.ctypeslib.as_array((ctypes.c_uint8 * n).from_address(addr))


def _check_encode_out(out, total):
    if out is None:
        return None
    if out.size < total:
        raise out_too_small(out.size, total)
    return out


# ----------------------------------------------------------------------------- encoding


def _raise_encode_status(status, x_bits, dtype, d, params):
    """The reference's error for the per-bucket statuses: the first non-finite element
    anywhere (spec 8.1 is checked before 8.2), else the first bucket whose scale is out of
    range."""
    bad = np.flatnonzero(status == D_NONFINITE)
    if bad.size:
        b = int(bad[0])
        info = DTYPES[dtype]
        seg = x_bits[b * d : (b + 1) * d]
        i = b * d + int(np.argmax((seg & info.absmask) >= info.infbits))
        raise defect(D_NONFINITE, i, value=_value_of(x_bits[i], dtype))
    b = int(np.flatnonzero(status == D_SCALE_RANGE)[0])
    raise defect(
        D_SCALE_RANGE,
        b,
        scale=params.scale,
        dtype=dtype,
        limit=float(np.float32(wire.DTYPE_MAX[dtype])),
    )


def encode_array(arr, params, *, out=None):
    """Encode a host array (any shape, strides, supported dtype): spec section 8.

    ``out``: optional writable uint8 array receiving the message; then a memoryview of the
    bytes written is returned, else a new ``bytes``.
    """
    dtype = wire.dtype_name(arr.dtype)
    shape = arr.shape
    xb = flat_bits(arr, dtype)
    return encode_bits(xb, dtype, shape, params, out=out)


def encode_bits(xb, dtype, shape, params, *, out=None, parallel=None):
    """Encode raw bit patterns ``xb`` (flat, aligned uint16/32/64) of ``dtype`` and ``shape``."""
    info = DTYPES[dtype]
    n, d, s = xb.size, params.bucket_size, params.levels
    nb = wire.num_buckets(n, d)
    l2 = params.scale == "l2"
    key = U64(rng.seed_key(params.seed))  # np.uint64: a Python int would type as int64
    par = _parallel(n) if parallel is None else parallel
    header_length = wire.header_length(len(shape))
    status = np.zeros(nb, dtype=np.int8)
    bounds, g = _bucket_bounds(nb, d)
    if params.coding == "dense":
        w = wire.dense_width(s)
        body = 4 * nb + wire.dense_codes_length(n, s)
        total = header_length + body + (wire.CRC_LENGTH if params.checksum else 0)
        buf = _Buffer(total, _check_encode_out(out, total))
        arr = buf.array
        codes = arr[header_length + 4 * nb : header_length + body]
        if d > CHUNK and par:
            # few, huge buckets: scales first (per bucket), then levels in element chunks
            bkt = np.arange(nb + 1, dtype=np.int64)
            _scales_par(
                xb,
                n,
                d,
                l2,
                info.mant,
                info.absmask,
                info.infbits,
                info.dmax,
                bkt,
                arr,
                header_length,
                status,
            )
            _dense_encode_par(
                xb,
                n,
                d,
                s,
                w,
                l2,
                key,
                info.mant,
                info.absmask,
                info.infbits,
                info.dmax,
                _element_bounds(n),
                arr,
                header_length,
                codes,
                status,
                True,
            )
        else:
            kernel = _dense_encode_par if par else _dense_encode_seq
            kernel(
                xb,
                n,
                d,
                s,
                w,
                l2,
                key,
                info.mant,
                info.absmask,
                info.infbits,
                info.dmax,
                bounds,
                arr,
                header_length,
                codes,
                status,
                False,
            )
        if status.any():
            _raise_encode_status(status, xb, dtype, d, params)
    else:
        scales = np.empty(nb, dtype=np.float32)
        lengths = np.empty(nb, dtype=np.uint32)
        (_elias_count_par if par else _elias_count_seq)(
            xb,
            n,
            d,
            s,
            l2,
            key,
            info.mant,
            info.absmask,
            info.infbits,
            info.dmax,
            bounds,
            scales,
            lengths,
            status,
        )
        if status.any():
            _raise_encode_status(status, xb, dtype, d, params)
        code_bytes = int(_elias_total(lengths))
        body = 8 * nb + code_bytes
        total = header_length + body + (wire.CRC_LENGTH if params.checksum else 0)
        buf = _Buffer(total, _check_encode_out(out, total))
        arr = buf.array
        offs = np.empty(bounds.size, dtype=np.int64)
        _elias_layout(arr, header_length, header_length + 4 * nb, scales, lengths, bounds, offs)
        codes = arr[header_length + 8 * nb : header_length + body]
        (_elias_write_par if par else _elias_write_seq)(
            xb, n, d, s, key, info.mant, bounds, scales, lengths, codes, offs
        )
    header = wire.pack_header(
        dtype=dtype,
        scale=params.scale,
        coding=params.coding,
        shape=shape,
        bucket_size=d,
        levels=s,
        seed=params.seed,
        body_length=body,
        checksum=params.checksum,
    )
    arr[:header_length] = np.frombuffer(header, dtype=np.uint8)
    if params.checksum:
        end = header_length + body
        _st32(arr, end, U32(crc32(arr[:end])))
    return buf.finish(out)


# ----------------------------------------------------------------------------- decoding


def message_array(data):
    """The message as a flat read-only uint8 array (no copy)."""
    mv = wire.byte_view(data)
    return _readonly(np.frombuffer(mv, dtype=np.uint8))


def verify_checksum(msg, header):
    if not header.has_checksum:
        return
    total = msg.size
    stored = int(_ld32(msg, total - wire.CRC_LENGTH))
    actual = crc32(msg[: total - wire.CRC_LENGTH])
    if stored != actual:
        raise defect(D_CHECKSUM, stored=stored, computed=actual)


def decode_into(header, msg, out_bits, *, parallel=None):
    """Decode a parsed, checksum-verified message into the flat raw-bits array ``out_bits``.

    The checks run in the reference's order: the scales, then (dense) the padding bits or
    (elias) the table sum, then the codes, whose first defect in element order is raised.
    """
    info = DTYPES[header.dtype]
    n, d, s = header.n, header.bucket_size, header.levels
    nb = header.num_buckets
    soff = header.scales_offset
    bad = int(_check_scales(msg, soff, nb, info.dmax_bits))
    if bad >= 0:
        bits = int(_ld32(msg, soff + 4 * bad))
        raise defect(
            D_BAD_SCALE, bad, value=np.uint32(bits).view(np.float32), bits=bits, dtype=header.dtype
        )
    par = _parallel(n) if parallel is None else parallel
    coff = header.codes_offset
    clen = header.header_length + header.body_length - coff
    if header.coding == "dense":
        w = header.width
        if n:
            pad = n * w % 8
            if pad and msg[coff + clen - 1] >> pad:
                raise defect(D_DENSE_PADDING)
        nc = -(-n // CHUNK)
        errs = np.zeros(nc, dtype=np.int8)
        where = np.zeros(nc, dtype=np.int64)
        (_dense_decode_par if par else _dense_decode_seq)(
            msg, soff, coff, clen, n, d, s, w, info.mant, info.emin, CHUNK, out_bits, errs, where
        )
    else:
        _, g = _bucket_bounds(nb, d)
        nc = -(-nb // g)
        offs = np.empty(nc + 1, dtype=np.int64)
        total = _elias_check_table(msg, header.table_offset, nb, g, offs)
        if total != clen:
            raise defect(D_TABLE_SUM, code_bytes=int(total), body_bytes=clen)
        errs = np.zeros(nc, dtype=np.int8)
        where = np.zeros(nc, dtype=np.int64)
        (_elias_decode_par if par else _elias_decode_seq)(
            msg,
            soff,
            header.table_offset,
            coff,
            clen,
            n,
            d,
            s,
            info.mant,
            info.emin,
            info.signbit,
            g,
            offs,
            out_bits,
            errs,
            where,
        )
    if errs.any():
        c = int(np.flatnonzero(errs != D_OK)[0])
        raise defect(int(errs[c]), int(where[c]), s=s)
    return out_bits


def elias_code_bits(msg, header):
    """Total elias code bits of a parsed message, after checking the table sum (5.3)."""
    bits, nbytes = _elias_code_bits(msg, header.table_offset, header.num_buckets)
    clen = header.header_length + header.body_length - header.codes_offset
    if nbytes != clen:
        raise defect(D_TABLE_SUM, code_bytes=int(nbytes), body_bytes=clen)
    return int(bits)


# ----------------------------------------------------------------------------- warm-up


def warmup():
    """Compile (or load from numba's cache) every kernel: both codings, both scalings, every
    dtype, serial and parallel drivers, the CRC and inspect()'s elias code count.  Returns
    {name: seconds}."""
    timings = {}
    start = time.perf_counter()
    t = time.perf_counter()
    crc32(np.zeros(1024, dtype=np.uint8))
    timings["crc32"] = time.perf_counter() - t
    gen = np.random.default_rng(0)
    for dtype, info in DTYPES.items():
        x = gen.standard_normal(96).astype(np.float32)
        if dtype == "bfloat16":
            bits = (x.view(np.uint32) >> 16).astype(np.uint16)
        elif dtype == "float16":
            bits = x.astype(np.float16).view(np.uint16)
        else:
            bits = x.astype(dtype).view(info.bits)
        bits = _readonly(bits)
        for coding in ("dense", "elias"):
            t = time.perf_counter()
            for par in (False, True):
                for scale, levels, d in (("max", 7, 16), ("l2", 127, 40), ("max", 5, 8)):
                    params = wire.EncodeParams(levels, d, scale, coding, 1, True)
                    message = encode_bits(bits, dtype, bits.shape, params, parallel=par)
                    msg = message_array(message)
                    header = wire.parse_header(message, max_elements=None, verify_checksum=False)
                    verify_checksum(msg, header)
                    decode_into(header, msg, np.empty(header.n, info.bits), parallel=par)
                    if coding == "elias":
                        elias_code_bits(msg, header)  # what inspect() reads
            timings[f"{coding}/{dtype}"] = time.perf_counter() - t
    # the two-phase path for buckets larger than a chunk
    t = time.perf_counter()
    for info in DTYPES.values():
        xb = _readonly(np.zeros(CHUNK + 8, dtype=info.bits))
        encode_bits(
            xb,
            info.name,
            xb.shape,
            wire.EncodeParams(7, CHUNK + 8, "max", "dense", 0, False),
            parallel=True,
        )
    timings["dense/large-buckets"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - start
    return timings
