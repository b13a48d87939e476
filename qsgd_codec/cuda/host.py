"""The host side of the GPU codec: launch sizing, the encode and decode drivers, and the
reading of the status array into the errors of :data:`qsgd_codec.errors.DEFECTS`.

Each defect raises :func:`qsgd_codec.errors.defect` with the reference's code, place and
context, so its message is the reference's.  Precedence is the reference's too: the
checksum, then the scales, then (elias) the bit-length table, then the codes.
"""

import mmap
import struct

import numpy as np
from numba import cuda

from .. import reference, wire
from ..errors import (
    D_CHECKSUM,
    D_TABLE_SUM,
    D_ZERO_SCALE,
    ParameterError,
    defect,
)
from ..interop import is_device_array
from ..wire.rng import seed_key
from .arrays import (
    _as_device,
    _as_device_bytes,
    _bits_view,
    _check_out,
    _flat,
    _message_buffer,
    _new_output,
    _resolve_stream,
    _to_host,
)
from .crc import _init_term, _k_crc, _tables
from .decoder import _k_dense_decode, _k_elias_decode, _k_fill_zero, _k_read_lengths, _k_read_scales
from .encoder import _k_dense_encode, _k_elias_levels, _k_elias_write, _k_zero_u32
from .layout import (
    CRC_CHUNK,
    DEFECT_STRIDE,
    E_BADSCALE,
    E_CODES,
    E_CRC,
    E_INPUT,
    E_PER_THREAD,
    E_SCALE,
    E_STORED,
    E_TOTAL,
    ELEM_T,
    I64_MAX,
    MAX_GRID,
    MAX_T,
    N_ERR,
    TILE_MAX,
    ZERO_SLOTS,
)
from .primitives import SIMULATOR
from .scan import _k_scan_offsets, _k_scan_partials

#: threads per block of the bucket kernels under the simulator (tests vary it)
SIM_THREADS = 8


def is_available():
    """True when a CUDA GPU (or the simulator) can run the kernels."""
    try:
        return bool(cuda.is_available())
    except Exception:  # pragma: no cover - driver errors
        return False


def _require_cuda():
    if not is_available():
        raise ParameterError(
            "a GPU array was given but CUDA is not available (no NVIDIA driver or GPU was "
            "found by numba-cuda); copy the array to the host first, or set "
            "NUMBA_ENABLE_CUDASIM=1 to use the CUDA simulator"
        )


# ----------------------------------------------------------------------------- launches


def _launch_dims(d):
    """Threads per block of the bucket kernels for bucket size d."""
    if SIMULATOR:
        return SIM_THREADS
    want = max(32, min(MAX_T, -(-d // E_PER_THREAD)))
    return 1 << (want - 1).bit_length()


def _per_thread(d, threads):
    """Elements per thread in an elias tile.  The GPU uses E_PER_THREAD; the simulator takes
    more so that a bucket needs at most about four tiles (each tile costs a dozen simulated
    barriers).  A tile never exceeds TILE_MAX elements, which the shared bit buffer holds."""
    if not SIMULATOR:
        return E_PER_THREAD
    return max(1, min(TILE_MAX // threads, max(E_PER_THREAD, -(-d // (threads * 4)))))


def _grid(count, threads=1):
    return max(1, min(MAX_GRID, -(-count // threads)))


def _level_dtype(s):
    if s <= 127:
        return np.int8
    if s <= 32767:
        return np.int16
    return np.int32


def _new_err(stream):
    """The call's small int64 status array (defect slots, elias total, CRC accumulator)."""
    init = np.full(N_ERR, I64_MAX, dtype=np.int64)
    init[list(ZERO_SLOTS)] = 0
    return cuda.to_device(init, stream=stream)


def _device_crc(u8, total, stream, *, write, err, words=None):
    """CRC-32 of u8[:total]: written after it (write) or compared (E_CRC).  ``words``: a
    uint32 view of the same (4-byte aligned) memory, read a word at a time."""
    table, x2n = _tables()
    nchunks = -(-total // CRC_CHUNK)
    use_words = words is not None
    if words is None:
        words = x2n  # any uint32 array: not read
    _k_crc[_grid(nchunks, ELEM_T), ELEM_T, stream](
        u8, words, use_words, total, CRC_CHUNK, table, x2n, _init_term(total), write, err
    )


def _scan_offsets(lengths, nb, stream, err):
    """Device exclusive scan of ceil(L_b / 8): int64 offsets[nb + 1]; the total also goes
    to err[E_TOTAL] so that one copy to the host brings it with the defect slots."""
    per_block = 32 * 128 if not SIMULATOR else 64
    nparts = -(-nb // per_block)
    partials = cuda.device_array(max(1, nparts), dtype=np.int64, stream=stream)
    offsets = cuda.device_array(nb + 1, dtype=np.int64, stream=stream)
    threads = SIM_THREADS if SIMULATOR else MAX_T
    _k_scan_partials[_grid(nparts), threads, stream](lengths, nb, per_block, partials)
    _k_scan_offsets[_grid(nparts), threads, stream](
        lengths, nb, per_block, partials, nparts, offsets, err
    )
    return offsets


def _slot(err_host, slot):
    """(where, code) of a defect slot, or None when it holds no defect."""
    value = int(err_host[slot])
    return None if value == I64_MAX else divmod(value, DEFECT_STRIDE)


# ----------------------------------------------------------------------------- encode


def _raise_encode_errors(err_host, dx, dtype, params, stream):
    found = _slot(err_host, E_INPUT)
    if found is not None:
        i, code = found
        value = _to_host(dx[i : i + 1], stream)
        if dtype == "bfloat16":
            value = (value.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif dtype == "float16":
            value = value.view(np.float16)
        raise defect(code, i, value=value[0])
    found = _slot(err_host, E_SCALE)
    if found is not None:
        b, code = found
        raise defect(
            code, b, scale=params.scale, dtype=dtype, limit=float(np.float32(wire.DTYPE_MAX[dtype]))
        )


def encode_device(x, params, *, device_output=False, stream=None):
    """Encode the device array ``x`` with validated :class:`~qsgd_codec.wire.EncodeParams`.

    Returns host ``bytes`` (default) or a device ``uint8`` array of the message.  The bytes
    are identical to :func:`qsgd_codec.reference.encode_array` on the same values.
    """
    _require_cuda()
    stream = _resolve_stream(stream)
    arr, dtype = _as_device(x, "x")
    shape = tuple(int(e) for e in arr.shape)
    if len(shape) > wire.MAX_NDIM:
        raise ParameterError(f"arrays with more than {wire.MAX_NDIM} dimensions are not supported")
    flat = _flat(arr, "x")
    dx = _bits_view(flat, dtype)
    n, d, s = int(flat.size), params.bucket_size, params.levels
    nb = wire.num_buckets(n, d)
    code = wire.DTYPE_CODES[dtype]
    kind = wire.SCALE_CODES[params.scale]
    key = np.uint64(seed_key(params.seed))
    dmax = wire.DTYPE_MAX[dtype]
    hl = wire.header_length(len(shape))
    crc_len = wire.CRC_LENGTH if params.checksum else 0
    threads = _launch_dims(d)
    grid = _grid(nb)
    err = _new_err(stream)

    if params.coding == "dense":
        w = wire.dense_width(s)
        codes_len = wire.dense_codes_length(n, s)
        body = 4 * nb + codes_len
        total = hl + body + crc_len
        words, u8, f32 = _message_buffer(total, stream)
        codes_w0 = (hl + 4 * nb) // 4
        if n:
            if (d * w) % 32:
                nwords = -(-codes_len // 4)
                _k_zero_u32[_grid(nwords, ELEM_T), ELEM_T, stream](
                    words, codes_w0, codes_w0 + nwords
                )
            _k_dense_encode[grid, threads, stream](
                dx,
                code,
                n,
                d,
                s,
                w,
                1.0 / w,
                kind,
                key,
                nb,
                dmax,
                f32,
                hl // 4,
                words,
                codes_w0,
                err,
            )
        # errors are read once at the end: a dense message's size does not depend on them
    else:
        if n:
            scales = cuda.device_array(nb, dtype=np.float32, stream=stream)
            lengths = cuda.device_array(nb, dtype=np.uint32, stream=stream)
            levels = cuda.device_array(n, dtype=_level_dtype(s), stream=stream)
            _k_elias_levels[grid, threads, stream](
                dx,
                code,
                n,
                d,
                s,
                kind,
                key,
                nb,
                dmax,
                _per_thread(d, threads),
                scales,
                lengths,
                levels,
                err,
            )
            offsets = _scan_offsets(lengths, nb, stream, err)
            err_host = _to_host(err, stream)
            _raise_encode_errors(err_host, dx, dtype, params, stream)
            codes_len = int(err_host[E_TOTAL])
        else:
            codes_len = 0
        body = 8 * nb + codes_len
        total = hl + body + crc_len
        words, u8, f32 = _message_buffer(total, stream)
        if n:
            _k_elias_write[grid, threads, stream](
                levels,
                n,
                d,
                nb,
                _per_thread(d, threads),
                scales.view(np.uint32),
                lengths,
                offsets,
                words,
                hl // 4,
                hl // 4 + nb,
                u8,
                hl + 8 * nb,
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
    u8[:hl].copy_to_device(np.frombuffer(header, dtype=np.uint8), stream=stream)
    if params.checksum:
        _device_crc(u8, hl + body, stream, write=True, err=err, words=words)
    message = u8[:total]
    if params.coding == "dense":
        _raise_encode_errors(_to_host(err, stream), dx, dtype, params, stream)  # synchronises
    if device_output:
        stream.synchronize()
        return message
    return _to_host(message, stream).tobytes()


def encode(
    x,
    *,
    bits=None,
    levels=None,
    bucket_size=None,
    scale=None,
    coding=None,
    seed=None,
    checksum=True,
    device_output=False,
    stream=None,
):
    """Encode a device array; the keywords are :func:`qsgd_codec.encode`'s.

    ``device_output=True`` returns the message as a device ``uint8`` array (a numba device
    array: wrap it with ``cupy.asarray`` or ``torch.as_tensor(..., device="cuda")``) instead
    of host ``bytes``.  ``stream``: see the package docstring.
    """
    params = wire.encode_params(
        bits=bits,
        levels=levels,
        bucket_size=bucket_size,
        scale=scale,
        coding=coding,
        seed=seed,
        checksum=checksum,
    )
    return encode_device(x, params, device_output=device_output, stream=stream)


# ----------------------------------------------------------------------------- decode


def _message_on_device(data, max_elements, stream):
    """(validated header, device uint8 message, total length, uint32 view or None).

    The header is checked (spec 3.4, checksum excepted) before a host message is copied to the
    device, so a message declaring too many elements allocates nothing.
    """
    if is_device_array(data):
        arr = _as_device_bytes(data)
        total = int(arr.size)
        first = _to_host(arr[: min(total, wire.FIXED_HEADER_LENGTH)], stream).tobytes()
        want = len(first)
        if len(first) >= 8:
            want = max(want, min(total, struct.unpack_from("<H", first, 6)[0]))
        prefix = first if want <= len(first) else _to_host(arr[:want], stream).tobytes()
        words = None
        if not SIMULATOR and arr.__cuda_array_interface__["data"][0] % 4 == 0 and total >= 4:
            words = arr[: total - total % 4].view(np.uint32)
        return _parse_header(prefix, total, max_elements), arr, total, words
    try:
        mv = memoryview(data).cast("B")
    except TypeError:
        raise ParameterError(
            f"data must be bytes-like or a device uint8 array, got {type(data).__name__}"
        ) from None
    header = wire.parse_header(mv, max_elements=max_elements, verify_checksum=False)
    host = np.frombuffer(mv, dtype=np.uint8)
    total = int(host.size)
    words, u8, _ = _message_buffer(total, stream)
    u8 = u8[:total]
    u8.copy_to_device(host, stream=stream)
    return header, u8, total, words


def _parse_header(prefix, total, max_elements):
    """wire.parse_header's checks (spec 3.4) for a message of ``total`` bytes that begins with
    ``prefix``, without copying the rest: the probe is an anonymous mapping whose untouched
    pages cost nothing.  The checksum is verified on the device."""
    if total <= len(prefix):
        return wire.parse_header(prefix[:total], max_elements=max_elements, verify_checksum=False)
    probe = mmap.mmap(-1, total)
    probe[: len(prefix)] = prefix
    return wire.parse_header(probe, max_elements=max_elements, verify_checksum=False)


def _raise_header_errors(err_host, header, msg, stream):
    """The checksum, then the first invalid scale (its four bytes are read back)."""
    if err_host[E_CRC] != I64_MAX:
        raise defect(D_CHECKSUM, stored=int(err_host[E_STORED]), computed=int(err_host[E_CRC]))
    found = _slot(err_host, E_BADSCALE)
    if found is not None:
        b, code = found
        pos = header.scales_offset + 4 * b
        raw = _to_host(msg[pos : pos + 4], stream)
        raise defect(
            code, b, value=raw.view("<f4")[0], bits=int(raw.view("<u4")[0]), dtype=header.dtype
        )


def _raise_code_errors(err_host, header):
    """The first defect in the codes: dense by element (a zero-scale one names its bucket),
    elias by bucket."""
    found = _slot(err_host, E_CODES)
    if found is not None:
        where, code = found
        if header.coding == "dense" and code == D_ZERO_SCALE:
            where //= header.bucket_size
        raise defect(code, where, s=header.levels)


def decode_device(data, *, out=None, max_elements=None, stream=None):
    """Decode ``data`` (host bytes or a device uint8 array) on the GPU.

    Writes into the device array ``out`` and returns it, or returns a new device array of the
    message's dtype and shape (bfloat16: a uint16 array of the bits where the array type
    cannot carry bfloat16; 16-bit integer ``out`` arrays are accepted for bfloat16 bits).
    ``max_elements`` bounds the element count (default 2**28, or ``out``'s size), checked
    before anything is allocated.  On error the contents of ``out`` are unspecified.
    """
    _require_cuda()
    stream = _resolve_stream(stream)
    out_size = None
    if out is not None and hasattr(out, "shape"):
        out_size = int(np.prod(out.shape, dtype=np.int64))
    max_elements = wire.element_limit(max_elements, out_size)
    header, msg, total, words = _message_on_device(data, max_elements, stream)
    n, d, s, nb = header.n, header.bucket_size, header.levels, header.num_buckets
    code = wire.DTYPE_CODES[header.dtype]
    if out is None:
        result, target = _new_output(header, stream)
    else:
        result, target = out, _check_out(out, header)
    if n == 0:
        # nothing to run on the device: the reference checks the (tiny) rest
        reference.decode_bits(_to_host(msg, stream).tobytes(), max_elements=max_elements)
        return result

    err = _new_err(stream)
    if header.has_checksum:
        _device_crc(msg, total - wire.CRC_LENGTH, stream, write=False, err=err, words=words)
    scales = cuda.device_array(nb, dtype=np.float64, stream=stream)
    dmax_bits = int(np.float32(wire.DTYPE_MAX[header.dtype]).view(np.uint32))
    _k_read_scales[_grid(nb, ELEM_T), ELEM_T, stream](
        msg, header.scales_offset, nb, dmax_bits, scales, err
    )
    codes0 = header.codes_offset
    codes_len = header.header_length + header.body_length - codes0
    if header.coding == "elias":
        lengths = cuda.device_array(nb, dtype=np.int64, stream=stream)
        _k_read_lengths[_grid(nb, ELEM_T), ELEM_T, stream](msg, header.table_offset, nb, lengths)
        offsets = _scan_offsets(lengths, nb, stream, err)
        err_host = _to_host(err, stream)
        _raise_header_errors(err_host, header, msg, stream)
        code_bytes = int(err_host[E_TOTAL])
        if code_bytes != codes_len:
            raise defect(D_TABLE_SUM, code_bytes=code_bytes, body_bytes=codes_len)
        _k_fill_zero[_grid(n, ELEM_T), ELEM_T, stream](target, n)
        threads = ELEM_T if SIMULATOR else 64
        _k_elias_decode[_grid(nb, threads), threads, stream](
            msg, codes0, codes_len, lengths, offsets, n, d, s, nb, scales, target, code, err
        )
    else:
        _k_dense_decode[_grid(n, ELEM_T), ELEM_T, stream](
            msg, codes0, codes_len, n, d, 1.0 / d, s, header.width, scales, target, code, err
        )
    err_host = _to_host(err, stream)
    _raise_header_errors(err_host, header, msg, stream)
    _raise_code_errors(err_host, header)
    return result


def decode(data, *, out=None, max_elements=None, stream=None):
    """Decode on the GPU; ``data`` is host bytes or a device uint8 array (see decode_device)."""
    return decode_device(data, out=out, max_elements=max_elements, stream=stream)
