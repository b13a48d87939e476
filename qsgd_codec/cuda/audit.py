"""The PTX audit: compile every kernel specialisation the launchers use and list what would
break bit-exactness (fused multiply-adds, approximate or flush-to-zero instructions)."""

from numba import cuda
from numba.cuda import types as _nbt

from ..errors import ParameterError
from . import crc, decoder, encoder, scan
from .primitives import SIMULATOR

#: every kernel of the package, by name
KERNELS = {
    name: getattr(module, name)
    for module in (encoder, scan, crc, decoder)
    for name in vars(module)
    if name.startswith("_k_")
}


def kernel_signatures(few=False):
    """(kernel name, argument types) of the specialisations the launchers compile.

    ``few``: one specialisation per kernel (the float32 / int8 ones).
    """
    t = _nbt

    def arr(dtype):
        return t.Array(dtype, 1, "C")

    i8, u64, f64 = t.int64, t.uint64, t.float64
    f32a, u32a, u8a, i64a = arr(t.float32), arr(t.uint32), arr(t.uint8), arr(t.int64)
    inputs = [arr(t.float32), arr(t.float64), arr(t.uint16)]
    levels = [arr(t.int8), arr(t.int16), arr(t.int32)]
    if few:
        inputs, levels = inputs[:1], levels[:1]
    sigs = []
    for xa in inputs:
        sigs.append(
            (
                "_k_dense_encode",
                (xa, i8, i8, i8, i8, i8, f64, i8, u64, i8, f64, f32a, i8, u32a, i8, i64a),
            )
        )
        for qa in levels:
            sigs.append(
                (
                    "_k_elias_levels",
                    (xa, i8, i8, i8, i8, i8, u64, i8, f64, i8, f32a, u32a, qa, i64a),
                )
            )
    for qa in levels:
        sigs.append(
            ("_k_elias_write", (qa, i8, i8, i8, i8, u32a, u32a, i64a, u32a, i8, i8, u8a, i8))
        )
    for la in [u32a] if few else [u32a, i64a]:
        sigs.append(("_k_scan_partials", (la, i8, i8, i64a)))
        sigs.append(("_k_scan_offsets", (la, i8, i8, i64a, i8, i64a, i64a)))
    sigs += [
        ("_k_zero_u32", (u32a, i8, i8)),
        ("_k_crc", (u8a, u32a, t.boolean, i8, i8, u32a, u32a, i8, t.boolean, i64a)),
        ("_k_read_scales", (u8a, i8, i8, i8, arr(f64), i64a)),
        ("_k_read_lengths", (u8a, i8, i8, i64a)),
    ]
    for oa in inputs:
        sigs += [
            ("_k_dense_decode", (u8a, i8, i8, i8, i8, f64, i8, i8, arr(f64), oa, i8, i64a)),
            ("_k_fill_zero", (oa, i8)),
            ("_k_elias_decode", (u8a, i8, i8, i64a, i64a, i8, i8, i8, i8, arr(f64), oa, i8, i64a)),
        ]
    return sigs


#: libdevice's frexp scales subnormals by 2^54 with an unrounded multiply feeding bit ops
_EXACT_PLAIN_MUL = "0d4350000000000000"


def audit_ptx(cc=None, few=False):
    """Compile the kernels to PTX and list what would break bit-exactness.

    Flags any fused multiply-add, approximate or flush-to-zero instruction, and any
    floating-point multiply without an explicit rounding mode (ptxas may contract those into
    an FMA) other than libdevice frexp's exact scaling.  Returns a list of
    ``(kernel, instruction)``; empty means clean.  ``cc`` defaults to the current device's.
    """
    if SIMULATOR:
        raise ParameterError("audit_ptx compiles real kernels: unset NUMBA_ENABLE_CUDASIM")
    if cc is None:
        cc = cuda.get_current_device().compute_capability
    problems = []
    for name, sig in kernel_signatures(few):
        ptx, _ = cuda.compile_ptx(KERNELS[name].py_func, sig, cc=cc)
        for line in ptx.splitlines():
            parts = line.strip().split(None, 1)
            if not parts:
                continue
            op = parts[0]
            if (
                op.startswith("fma.")
                or ".approx" in op
                or ".ftz" in op
                or (op in ("mul.f64", "mul.f32") and _EXACT_PLAIN_MUL not in line)
            ):
                problems.append((name, line.strip()))
    return problems
