"""Command line: ``python -m qsgd_codec`` (or ``qsgd``) COMMAND.

Commands: encode, decode, inspect, verify, bench, warmup.

Every subcommand reports bad input (missing or corrupt files, wrong dtype, invalid messages)
as one line on stderr and a non-zero exit status, never a traceback:

- exit 0: success;
- exit 1: ``verify`` found a non-conforming result; ``warmup`` has nothing to warm up;
- exit 2: bad input or usage.  For a rejected message the first stderr line is
  ``<ErrorClass>: <message>`` (the class names of spec/wire-format.md section 11);
- exit 3: an internal error (a bug: rerun with ``--debug`` for the traceback and report it);
- exit 130: interrupted.

``verify`` runs the conformance vectors of spec/test-vectors/v1 against this package or
against an external decoder command (:mod:`qsgd_codec.conformance`; the protocol is
documented in docs/integrations.md and in :func:`qsgd_codec.conformance.run_external`).
"""

import argparse
import io
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from . import api, wire
from .conformance import (
    MAX_ELEMENTS_ENV,
    VectorsError,
    check_external,
    check_internal,
    find_vectors,
    load_vectors,
    raw_values,
)
from .errors import QSGDError

EXIT_OK, EXIT_FAIL, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3


class CLIError(Exception):
    """Bad input or usage detected by the command line (exit 2)."""


def _err(text):
    print(text, file=sys.stderr)


# ----------------------------------------------------------------------------- file I/O


def _read_bytes(path):
    if path == "-":
        return sys.stdin.buffer.read()
    p = Path(path)
    if p.is_dir():
        raise CLIError(f"{path}: is a directory")
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise CLIError(f"{path}: no such file") from None
    except OSError as exc:
        raise CLIError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _write_bytes(path, data):
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    try:
        Path(path).write_bytes(data)
    except OSError as exc:
        raise CLIError(f"{path}: cannot write: {exc.strerror or exc}") from None


def _read_npy(path):
    data = _read_bytes(path)
    if not data.startswith(b"\x93NUMPY"):
        kind = "an .npz archive" if data.startswith(b"PK\x03\x04") else "not a .npy file"
        raise CLIError(f"{path}: {kind} (pass --raw DTYPE to read raw little-endian values)")
    try:
        return np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
    except (ValueError, EOFError, OSError, SyntaxError, TypeError) as exc:
        raise CLIError(f"{path}: corrupt or unsupported .npy file: {exc}") from None


def _npy_bytes(arr):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _parse_dtype(name):
    if name == "bfloat16":
        return wire.bfloat16_dtype()
    try:
        dtype = np.dtype(name)
    except TypeError:
        raise CLIError(f"unknown dtype {name!r}") from None
    wire.dtype_name(dtype)
    return dtype


def _default_output(path, suffix):
    """INPUT with its suffix replaced; never an existing file (no silent overwrite)."""
    if path == "-":
        return "-"
    p = Path(path)
    out = p.with_suffix(suffix)
    if out == p:
        out = p.with_name(p.name + suffix)
    if out.exists():
        raise CLIError(f"{out} exists: pass -o/--output to choose the output file")
    return str(out)


# ----------------------------------------------------------------------------- encode


def cmd_encode(args):
    if args.raw:
        dtype = _parse_dtype(args.raw)
        data = _read_bytes(args.input)
        if len(data) % dtype.itemsize:
            raise CLIError(
                f"{args.input}: {len(data)} bytes is not a whole number of {args.raw} values"
            )
        arr = np.frombuffer(
            data, dtype=dtype.newbyteorder("<") if dtype.kind == "f" else np.dtype("<u2")
        ).view(dtype)
        if args.shape:
            try:
                arr = arr.reshape(args.shape)
            except ValueError:
                raise CLIError(f"cannot reshape {arr.size} values to {tuple(args.shape)}") from None
    else:
        if args.shape:
            raise CLIError("--shape goes with --raw (a .npy file carries its own shape)")
        arr = _read_npy(args.input)
    if args.input_dtype:
        if args.input_dtype != "bfloat16":
            raise CLIError("--input-dtype accepts only bfloat16")
        if arr.dtype.itemsize != 2 or arr.dtype.kind not in "iuV":
            raise CLIError(
                f"--input-dtype bfloat16 reinterprets 2-byte integer or void "
                f"arrays, not {arr.dtype}"
            )
        arr = np.ascontiguousarray(arr).view(wire.bfloat16_dtype())
    elif arr.dtype.kind == "V" and arr.dtype.itemsize == 2:
        raise CLIError(
            f"{args.input}: dtype {arr.dtype} (how NumPy saves bfloat16): pass "
            f"--input-dtype bfloat16"
        )
    message = api.encode(
        arr,
        bits=args.bits,
        levels=args.levels,
        bucket_size=args.bucket_size,
        scale=args.scale,
        coding=args.coding,
        seed=args.seed,
        checksum=not args.no_checksum,
    )
    out = args.output or _default_output(args.input, ".qsgd")
    _write_bytes(out, message)
    if not args.quiet and out != "-":
        info = api.inspect(message)
        _err(
            f"{out}: {info['message_bytes']} bytes, {info['bits_per_coordinate']:.3f} bits "
            f"per coordinate ({info['compression_ratio']:.2f}x)"
        )
    return EXIT_OK


# ----------------------------------------------------------------------------- decode


def _max_elements(value):
    if value is not None:
        return value
    env = os.environ.get(MAX_ELEMENTS_ENV)
    if env:
        try:
            limit = int(env)
            if limit < 0:
                raise ValueError
        except ValueError:
            raise CLIError(f"{MAX_ELEMENTS_ENV}={env!r} is not a non-negative integer") from None
        return limit
    return None


def cmd_decode(args):
    data = _read_bytes(args.input)
    arr = api.decode(data, max_elements=_max_elements(args.max_elements))
    if args.raw:
        payload = raw_values(arr)
    else:
        if wire.dtype_name(arr.dtype) == "bfloat16":
            if args.bfloat16_as == "float32":
                arr = arr.astype(np.float32)  # exact
                if not args.quiet and args.output != "-":
                    _err(
                        "note: bfloat16 values written as float32 (exact; .npy has no "
                        "bfloat16 type); --bfloat16-as uint16 keeps the bit patterns"
                    )
            else:
                arr = arr.view(np.uint16)
        payload = _npy_bytes(arr)
    out = args.output or (
        "-"
        if args.raw and args.input == "-"
        else _default_output(args.input, ".raw" if args.raw else ".npy")
    )
    _write_bytes(out, payload)
    return EXIT_OK


# ----------------------------------------------------------------------------- inspect


def cmd_inspect(args):
    data = _read_bytes(args.input)
    info = api.inspect(data)
    info["shape"] = list(info["shape"])
    if args.check:
        api.decode(data, max_elements=_max_elements(args.max_elements))
        info["codes_valid"] = True
    if args.json:
        # an empty message has no bits per coordinate: null, not the non-JSON NaN
        print(
            json.dumps(
                {k: None if isinstance(v, float) and v != v else v for k, v in info.items()},
                indent=1,
            )
        )
        return EXIT_OK
    width = max(len(k) for k in info)
    for key, value in info.items():
        if isinstance(value, float):
            value = f"{value:.4f}"
        elif key == "seed":
            value = f"{value} (0x{value:016x})"
        print(f"{key:<{width}}  {value}")
    return EXIT_OK


# ----------------------------------------------------------------------------- verify


def cmd_verify(args):
    root = find_vectors(args.vectors)
    records = load_vectors(root)
    if args.select:
        records = [r for r in records if any(s in r["file"] for s in args.select)]
        if not records:
            raise CLIError(f"no vector matches {args.select}")
    if args.decoder:
        command = shlex.split(args.decoder)
        if not command:
            raise CLIError("--decoder is empty")
        target = f"external decoder {args.decoder!r}"
    else:
        command = None
        from . import __version__

        target = f"qsgd_codec {__version__} (this package)"
    if not args.quiet:
        _err(f"verifying {len(records)} vectors from {root} against {target}")
    counts = {"ok": 0, "FAIL": 0, "skip": 0}
    results = []
    for record in records:
        if command is None:
            status, detail = check_internal(record)
        else:
            status, detail = check_external(record, command, args.timeout, args.require_error_class)
        counts[status] += 1
        results.append(
            {"file": record["file"], "kind": record.get("kind"), "status": status, "detail": detail}
        )
        if status != "ok" or args.verbose:
            print(f"{status:<5} {record['file']}: {detail}")
    summary = (
        f"{counts['ok']} passed, {counts['FAIL']} failed, {counts['skip']} skipped "
        f"({len(records)} vectors, format {wire.MAJOR}.{wire.MINOR})"
    )
    print(summary)
    if args.json:
        _write_bytes(
            args.json,
            json.dumps(
                {"target": target, "vectors": str(root), "results": results, "counts": counts},
                indent=1,
            ).encode(),
        )
    return EXIT_FAIL if counts["FAIL"] else EXIT_OK


# ----------------------------------------------------------------------------- bench


class _TextBar:
    """A minimal progress bar for when tqdm is not installed."""

    def __init__(self, total, desc, file):
        self.total, self.n, self.desc, self.file = total, 0, desc, file

    def set_description(self, desc):
        self.desc = desc

    def update(self, k=1):
        self.n += k
        filled = int(30 * self.n / max(self.total, 1))
        self.file.write(
            f"\r{self.desc:<10} [{'#' * filled}{'.' * (30 - filled)}] {self.n}/{self.total}"
        )
        self.file.flush()

    def close(self):
        self.file.write("\n")
        self.file.flush()


class _NoBar(_TextBar):
    def update(self, k=1):
        self.n += k

    def close(self):
        pass


def _progress(total, desc, mode):
    if mode == "none":
        return _NoBar(total, desc, sys.stderr)
    if mode == "auto":
        try:
            from tqdm import tqdm

            return tqdm(total=total, desc=desc, file=sys.stderr, leave=False)
        except ImportError:
            pass
    return _TextBar(total, desc, sys.stderr)


def _median_time(fn, repeat, bar, label):
    bar.set_description(label)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        bar.update(1)
    return float(np.median(times))


def cmd_bench(args):
    if args.size < 1:
        raise CLIError("--size must be positive")
    if args.repeat < 1:
        raise CLIError("--repeat must be positive")
    dtype = _parse_dtype(args.dtype)
    params = dict(
        bits=args.bits,
        levels=args.levels,
        bucket_size=args.bucket_size,
        scale=args.scale,
        coding=args.coding,
        seed=1,
    )
    wire.encode_params(**params)  # bad parameters fail before any work
    rng = np.random.default_rng(0)
    x = rng.standard_normal(args.size).astype(dtype)
    # warm-up: compile or load the kernels, touch the memory
    import qsgd_codec

    if hasattr(qsgd_codec, "warmup"):
        qsgd_codec.warmup()
    api.decode(api.encode(x[:4096], **params))
    message = api.encode(x, **params)
    out = np.empty_like(x)
    mode = "none" if args.no_progress else ("text" if args.text_progress else "auto")
    bar = _progress(3 * args.repeat, "bench", mode)
    try:
        t_copy = _median_time(lambda: np.copyto(out, x), args.repeat, bar, "copy")
        t_enc = _median_time(lambda: api.encode(x, **params), args.repeat, bar, "encode")
        t_dec = _median_time(lambda: api.decode(message, out=out), args.repeat, bar, "decode")
    finally:
        bar.close()
    mb = x.nbytes / 1e6
    info = api.inspect(message)
    result = {
        "qsgd_codec": qsgd_codec.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "numba_threads": os.environ.get("NUMBA_NUM_THREADS"),
        "dtype": args.dtype,
        "elements": args.size,
        "input_mb": mb,
        "repeat": args.repeat,
        "params": {k: info[k] for k in ("levels", "bucket_size", "scale", "coding")},
        "bits_per_coordinate": info["bits_per_coordinate"],
        "median_s": {"copy": t_copy, "encode": t_enc, "decode": t_dec},
        "mb_per_s": {"copy": mb / t_copy, "encode": mb / t_enc, "decode": mb / t_dec},
        "ratio_to_copy": {"encode": t_copy / t_enc, "decode": t_copy / t_dec},
    }
    print(
        f"qsgd_codec {result['qsgd_codec']}: {args.size} {args.dtype} values "
        f"({mb:.1f} MB), levels={info['levels']} bucket={info['bucket_size']} "
        f"{info['scale']} {info['coding']}, {info['bits_per_coordinate']:.3f} bits/coord, "
        f"median of {args.repeat}"
    )
    print(f"{'operation':<10} {'median ms':>10} {'MB/s':>10} {'vs copy':>8}")
    for op in ("copy", "encode", "decode"):
        ratio = 1.0 if op == "copy" else result["ratio_to_copy"][op]
        print(
            f"{op:<10} {1e3 * result['median_s'][op]:>10.2f} "
            f"{result['mb_per_s'][op]:>10.0f} {ratio:>8.3f}"
        )
    if args.json:
        _write_bytes(args.json, json.dumps(result, indent=1).encode())
    return EXIT_OK


# ----------------------------------------------------------------------------- warmup


def cmd_warmup(args):
    import qsgd_codec

    warmup = getattr(qsgd_codec, "warmup", None)
    if warmup is None:
        _err(
            "qsgd warmup: this qsgd_codec build has no compiled kernels to warm up "
            "(qsgd_codec.warmup() is not available)"
        )
        return EXIT_FAIL
    t0 = time.perf_counter()
    result = warmup()
    elapsed = time.perf_counter() - t0
    if not args.quiet:
        timings = result if isinstance(result, dict) else {}
        parts = [k for k in timings if k != "total"]
        extra = f" ({len(parts)} kernel groups)" if parts else ""
        print(f"kernels ready in {elapsed:.2f} s{extra}")
        if args.verbose:
            for key, value in timings.items():
                print(
                    f"  {key:<24} {value:.3f} s"
                    if isinstance(value, float)
                    else f"  {key:<24} {value}"
                )
    return EXIT_OK


# ----------------------------------------------------------------------------- parser


def _positive_int(text):
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be non-negative: {text}")
    return value


def _add_encoder_options(p):
    g = p.add_argument_group("encoder parameters (spec/wire-format.md)")
    g.add_argument(
        "--bits", type=_positive_int, help="dense width b: levels s = 2**(b-1)-1 (default 8)"
    )
    g.add_argument("--levels", type=_positive_int, help="s directly, 1..2**24-1")
    g.add_argument("--bucket-size", type=_positive_int, help="d (default 512)")
    g.add_argument("--scale", choices=sorted(wire.SCALE_CODES), help="default max")
    g.add_argument("--coding", choices=sorted(wire.CODING_CODES), help="default dense")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="qsgd",
        description="QSGD gradient compression: encode, decode, inspect and "
        "verify messages of wire format 1.0; benchmark this machine.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"qsgd_codec {__version__} (wire format {wire.MAJOR}.{wire.MINOR})",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("encode", help="encode a .npy file (or raw values) to a message")
    p.add_argument("input", help=".npy file ('-' for stdin)")
    p.add_argument("-o", "--output", help="message file ('-' for stdout; default INPUT.qsgd)")
    _add_encoder_options(p)
    p.add_argument("--seed", type=_positive_int, default=0, help="random seed (default 0)")
    p.add_argument("--no-checksum", action="store_true", help="omit the CRC-32 trailer")
    p.add_argument(
        "--raw",
        metavar="DTYPE",
        help="input holds raw little-endian values of DTYPE (float16, bfloat16, float32, float64)",
    )
    p.add_argument("--shape", type=_positive_int, nargs="+", help="shape of --raw input")
    p.add_argument(
        "--input-dtype",
        metavar="bfloat16",
        help="read 2-byte integer/void .npy data as bfloat16 bit patterns",
    )
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("decode", help="decode a message to a .npy file (or raw values)")
    p.add_argument("input", help="message file ('-' for stdin)")
    p.add_argument(
        "-o",
        "--output",
        help="output file ('-' for stdout; default INPUT.npy, or stdout for --raw from stdin)",
    )
    p.add_argument(
        "--max-elements",
        type=_positive_int,
        help=f"refuse messages with more elements (default ${MAX_ELEMENTS_ENV} or 2**28)",
    )
    p.add_argument(
        "--raw",
        action="store_true",
        help="write raw little-endian values in C "
        "order (the external decoder protocol of `qsgd verify`)",
    )
    p.add_argument(
        "--bfloat16-as",
        choices=["float32", "uint16"],
        default="float32",
        help=".npy has no bfloat16 type: write float32 (exact) or the uint16 bits",
    )
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("inspect", help="header fields, sizes, bits per coordinate")
    p.add_argument("input", help="message file ('-' for stdin)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--check", action="store_true", help="also decode and validate the codes")
    p.add_argument("--max-elements", type=_positive_int, help="limit for --check")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser(
        "verify", help="run the conformance vectors against this package or an external decoder"
    )
    p.add_argument(
        "--vectors",
        metavar="DIR",
        help="vectors folder (default: $QSGD_VECTORS, "
        "the installed package's, or spec/test-vectors/v1 of a source checkout)",
    )
    p.add_argument(
        "--decoder",
        metavar="CMD",
        help="external decoder command line (see "
        "docs/integrations.md): message on stdin, raw values on stdout",
    )
    p.add_argument(
        "--timeout", type=float, default=30.0, help="seconds per vector for --decoder (default 30)"
    )
    p.add_argument(
        "--require-error-class",
        action="store_true",
        help="fail rejections whose first stderr line does not name the class",
    )
    p.add_argument(
        "--select",
        nargs="+",
        metavar="TEXT",
        help="only vectors whose file name contains one of TEXT",
    )
    p.add_argument("--json", metavar="FILE", help="write every result as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="list passing vectors too")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("bench", help="encode/decode MB/s on this machine vs a NumPy copy")
    p.add_argument(
        "--size", type=_positive_int, default=1 << 22, help="number of elements (default 2**22)"
    )
    p.add_argument("--dtype", default="float32")
    _add_encoder_options(p)
    p.add_argument("--repeat", type=_positive_int, default=5, help="timed runs (median)")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--text-progress",
        action="store_true",
        help="plain text progress bar even if tqdm is installed",
    )
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("warmup", help="compile or load the Numba kernels now")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true", help="time of each kernel group")
    p.set_defaults(func=cmd_warmup)
    return parser


def main(argv: Optional[list] = None) -> int:
    """Entry point of ``qsgd`` and ``python -m qsgd_codec``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except QSGDError as exc:
        _err(f"{type(exc).__name__}: {exc}")
        return EXIT_BAD_INPUT
    except (CLIError, VectorsError) as exc:
        _err(f"qsgd {args.command}: error: {exc}")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except BrokenPipeError:
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_OK
    except MemoryError:
        _err(f"qsgd {args.command}: error: out of memory (use --max-elements)")
        return EXIT_BAD_INPUT
    except Exception as exc:
        if args.debug:
            raise
        _err(
            f"qsgd {args.command}: internal error: {type(exc).__name__}: {exc} (rerun with "
            f"--debug and report it)"
        )
        return EXIT_INTERNAL
