"""The command line: python -m qsgd_codec encode|decode|inspect|verify|bench|warmup.

Most tests call cli.main() in this process; a few run the real `python -m qsgd_codec` to check
stdin/stdout, the exit status and that no traceback ever reaches the user.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import qsgd_codec
from qsgd_codec import cli, conformance

REPO = Path(__file__).resolve().parent.parent
VECTORS = REPO / "spec" / "test-vectors" / "v1"
X = np.random.default_rng(0).standard_normal((30, 7)).astype(np.float32)


def run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def run_module(args, stdin=b"", env=None, timeout=120):
    proc = subprocess.run(
        [sys.executable, "-m", "qsgd_codec", *map(str, args)],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        cwd=REPO,
        env=None if env is None else {**os.environ, **env},
    )
    assert b"Traceback" not in proc.stderr, proc.stderr.decode()
    return proc


@pytest.fixture
def npy(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, X)
    return path


# ----------------------------------------------------------------------------- encode/decode


def test_encode_decode_files(npy, tmp_path, capsys):
    code, _, err = run(
        [
            "encode",
            npy,
            "--bits",
            4,
            "--bucket-size",
            64,
            "--scale",
            "l2",
            "--coding",
            "elias",
            "--seed",
            5,
            "--no-checksum",
        ],
        capsys,
    )
    assert code == 0 and "bits per coordinate" in err
    message = (tmp_path / "x.qsgd").read_bytes()
    assert message == qsgd_codec.encode(
        X, bits=4, bucket_size=64, scale="l2", coding="elias", seed=5, checksum=False
    )
    code, _, _ = run(["decode", tmp_path / "x.qsgd", "-o", tmp_path / "y.npy"], capsys)
    assert code == 0
    y = np.load(tmp_path / "y.npy")
    assert y.dtype == X.dtype and np.array_equal(y, qsgd_codec.decode(message))


def test_default_outputs_never_overwrite(npy, tmp_path, capsys):
    assert run(["encode", npy, "-q"], capsys)[0] == 0
    code, _, err = run(["encode", npy], capsys)  # x.qsgd exists now
    assert code == 2 and "exists" in err
    code, _, err = run(["decode", tmp_path / "x.qsgd"], capsys)  # would overwrite x.npy
    assert code == 2 and "exists" in err
    assert np.array_equal(np.load(npy), X)


def test_stdin_stdout_and_raw_output():
    message = qsgd_codec.encode(X, bits=8)
    proc = run_module(["decode", "-", "--raw"], stdin=message)
    assert proc.returncode == 0
    assert proc.stdout == qsgd_codec.decode(message).astype("<f4").tobytes()
    proc = run_module(["decode", "-", "-o", "-"], stdin=message)
    assert proc.returncode == 0 and proc.stdout.startswith(b"\x93NUMPY")


def test_raw_input(tmp_path, capsys):
    raw = tmp_path / "x.f32"
    raw.write_bytes(X.astype("<f4").tobytes())
    code, _, _ = run(
        ["encode", raw, "--raw", "float32", "--shape", 30, 7, "-o", tmp_path / "m", "-q"], capsys
    )
    assert code == 0 and (tmp_path / "m").read_bytes() == qsgd_codec.encode(X)
    code, _, err = run(
        ["encode", raw, "--raw", "float64", "--shape", 5, "-o", tmp_path / "n"], capsys
    )
    assert code == 2 and "reshape" in err
    raw.write_bytes(b"\x00" * 7)
    code, _, err = run(["encode", raw, "--raw", "float32", "-o", tmp_path / "n"], capsys)
    assert code == 2 and "whole number" in err


def test_bfloat16_files(tmp_path, capsys):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    xb = X.astype(ml_dtypes.bfloat16)
    path = tmp_path / "b.npy"
    np.save(path, xb)  # NumPy stores bfloat16 as void '<V2'
    code, _, err = run(["encode", path, "-o", tmp_path / "b.qsgd"], capsys)
    assert code == 2 and "--input-dtype bfloat16" in err
    code, _, _ = run(
        ["encode", path, "--input-dtype", "bfloat16", "-o", tmp_path / "b.qsgd", "-q"], capsys
    )
    assert code == 0
    message = (tmp_path / "b.qsgd").read_bytes()
    assert message == qsgd_codec.encode(xb)
    code, _, err = run(["decode", tmp_path / "b.qsgd", "-o", tmp_path / "f.npy"], capsys)
    assert code == 0 and "float32" in err
    expected = qsgd_codec.decode(message)
    assert np.array_equal(np.load(tmp_path / "f.npy"), expected.astype(np.float32))
    code, _, _ = run(
        ["decode", tmp_path / "b.qsgd", "-o", tmp_path / "u.npy", "--bfloat16-as", "uint16"], capsys
    )
    assert np.array_equal(np.load(tmp_path / "u.npy"), expected.view(np.uint16))


# ----------------------------------------------------------------------------- inspect


def test_inspect(tmp_path, capsys):
    path = tmp_path / "m.qsgd"
    path.write_bytes(qsgd_codec.encode(X, bits=4, coding="elias"))
    code, out, _ = run(["inspect", path], capsys)
    assert code == 0
    assert "bits_per_coordinate" in out and "elias" in out and "float32" in out
    code, out, _ = run(["inspect", path, "--json", "--check"], capsys)
    info = json.loads(out)
    assert info["shape"] == [30, 7] and info["levels"] == 7 and info["codes_valid"] is True
    assert info["message_bytes"] == path.stat().st_size
    path.write_bytes(qsgd_codec.encode(np.zeros(0, np.float32)))
    code, out, _ = run(["inspect", path, "--json"], capsys)
    assert code == 0 and json.loads(out)["bits_per_coordinate"] is None  # not NaN


def test_verify_rejects_a_broken_index(tmp_path, capsys):
    (tmp_path / "index.json").write_text('{"vectors": [{"nofile": 1}]}')
    code, _, err = run(["verify", "--vectors", tmp_path], capsys)
    assert code == 2 and "unreadable vector" in err
    (tmp_path / "index.json").write_text("[1, 2")
    code, _, err = run(["verify", "--vectors", tmp_path], capsys)
    assert code == 2 and "not a vectors index" in err


# ----------------------------------------------------------------------------- bad input


def bad_inputs(tmp_path):
    cases = {}
    (tmp_path / "text.npy").write_text("hello")
    cases["not-npy"] = (["encode", tmp_path / "text.npy"], "not a .npy file")
    good = tmp_path / "good.npy"
    np.save(good, X)
    (tmp_path / "trunc.npy").write_bytes(good.read_bytes()[:100])
    cases["truncated-npy"] = (["encode", tmp_path / "trunc.npy"], "corrupt")
    np.savez(tmp_path / "z.npz", x=X)
    cases["npz"] = (["encode", tmp_path / "z.npz"], "npz")
    np.save(tmp_path / "obj.npy", np.array([1, "a"], dtype=object), allow_pickle=True)
    cases["object-npy"] = (["encode", tmp_path / "obj.npy"], "corrupt or unsupported")
    np.save(tmp_path / "int.npy", np.arange(5))
    cases["int-dtype"] = (["encode", tmp_path / "int.npy"], "DTypeError")
    np.save(tmp_path / "nan.npy", np.array([1.0, np.nan]))
    cases["nan"] = (["encode", tmp_path / "nan.npy", "-o", tmp_path / "nan.q"], "NonFiniteError")
    cases["bits-1"] = (["encode", good, "--bits", 1, "-o", tmp_path / "o"], "ParameterError")
    cases["missing"] = (["decode", tmp_path / "nope.qsgd"], "no such file")
    cases["directory"] = (["inspect", tmp_path], "is a directory")
    message = bytearray(qsgd_codec.encode(X))
    message[100] ^= 1
    (tmp_path / "bad.qsgd").write_bytes(bytes(message))
    cases["checksum"] = (
        ["decode", tmp_path / "bad.qsgd", "-o", tmp_path / "o.npy"],
        "ChecksumError",
    )
    cases["inspect-corrupt"] = (["inspect", tmp_path / "bad.qsgd"], "ChecksumError")
    (tmp_path / "short.qsgd").write_bytes(bytes(message[:30]))
    cases["truncated"] = (["inspect", tmp_path / "short.qsgd"], "TruncatedError")
    (tmp_path / "ok.qsgd").write_bytes(qsgd_codec.encode(X))
    cases["limit"] = (
        ["decode", tmp_path / "ok.qsgd", "--max-elements", 10, "-o", tmp_path / "o.npy"],
        "LimitError",
    )
    cases["verify-no-vectors"] = (["verify", "--vectors", tmp_path], "no index.json")
    cases["bench-dtype"] = (["bench", "--dtype", "int32", "--size", 10], "DTypeError")
    cases["bench-bits"] = (["bench", "--bits", 30, "--size", 10], "ParameterError")
    return cases


@pytest.mark.parametrize(
    "case",
    [
        "not-npy",
        "truncated-npy",
        "npz",
        "object-npy",
        "int-dtype",
        "nan",
        "bits-1",
        "missing",
        "directory",
        "checksum",
        "inspect-corrupt",
        "truncated",
        "limit",
        "verify-no-vectors",
        "bench-dtype",
        "bench-bits",
    ],
)
def test_bad_input_exits_2_with_a_message(case, tmp_path, capsys):
    argv, needle = bad_inputs(tmp_path)[case]
    code, _, err = run(argv, capsys)
    assert code == 2, err
    assert needle in err
    assert len(err.strip().splitlines()) == 1


def test_error_class_is_the_first_stderr_line(tmp_path):
    proc = run_module(["decode", "-", "--raw"], stdin=b"\x89QSG\x02\x00" + bytes(60))
    assert proc.returncode == 2
    assert proc.stderr.decode().splitlines()[0].startswith("VersionError: ")


def test_usage_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        cli.main(["encode", "x.npy", "--bits", "four"])
    assert exc.value.code == 2
    capsys.readouterr()


def test_internal_errors_are_reported_without_traceback(npy, tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(cli.api, "encode", broken)
    code, _, err = run(["encode", npy, "-o", tmp_path / "o"], capsys)
    assert code == 3 and "internal error" in err and "boom" in err
    with pytest.raises(RuntimeError):
        cli.main(["--debug", "encode", str(npy), "-o", str(tmp_path / "o")])


# ----------------------------------------------------------------------------- verify


def test_verify_this_package(capsys):
    code, out, err = run(["verify"], capsys)
    assert code == 0, out
    assert " 0 failed" in out and "passed" in out and str(VECTORS) in err
    count = len(json.loads((VECTORS / "index.json").read_text())["vectors"])
    assert f"{count} passed" in out


def test_verify_finds_vectors_by_option_and_environment(tmp_path, monkeypatch, capsys):
    copy = tmp_path / "vec"
    shutil.copytree(VECTORS, copy / "v1")
    assert conformance.find_vectors(str(copy)) == copy / "v1"  # a folder holding v1/ is fine
    monkeypatch.setenv("QSGD_VECTORS", str(copy / "v1"))
    assert conformance.find_vectors() == copy / "v1"
    monkeypatch.setenv("QSGD_VECTORS", str(tmp_path / "missing"))
    with pytest.raises(conformance.VectorsError, match="QSGD_VECTORS"):
        conformance.find_vectors()


def test_verify_detects_a_wrong_vector(tmp_path, capsys):
    copy = tmp_path / "v1"
    shutil.copytree(VECTORS, copy)
    victim = copy / "valid" / "dense_f32_b4_max.json"
    record = json.loads(victim.read_text())
    record["decoded_hex"] = "00" * (len(record["decoded_hex"]) // 2)
    victim.write_text(json.dumps(record))
    victim = copy / "invalid" / "scale_nan.json"
    record = json.loads(victim.read_text())
    record["error"] = "LimitError"
    victim.write_text(json.dumps(record))
    code, out, _ = run(["verify", "--vectors", copy, "--json", tmp_path / "r.json"], capsys)
    assert code == 1
    assert "FAIL  valid/dense_f32_b4_max.json: decoded values differ" in out
    assert "FAIL  invalid/scale_nan.json: raised CorruptDataError" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["counts"]["FAIL"] == 2


SUBSET = [
    "dense_f32_b4",
    "elias_bf16",
    "dense_f32_n0",
    "over_caller_limit",
    "over_limit",
    "elias_gap_past_end",
    "checksum_mismatch",
    "major_2",
    "minor_3",
]


@pytest.mark.slow
def test_verify_external_decoder_is_this_cli(capsys):
    decoder = f"{sys.executable} -m qsgd_codec decode --raw -"
    code, out, _ = run(
        ["verify", "--decoder", decoder, "--select", *SUBSET, "-v", "--require-error-class"], capsys
    )
    assert code == 0, out
    assert "rejected: LimitError" in out and " 0 failed" in out
    assert out.count("ok ") >= len(SUBSET)


def write_decoder(tmp_path, body):
    path = tmp_path / "decoder.py"
    path.write_text("import os, sys\nmessage = sys.stdin.buffer.read()\n" + textwrap.dedent(body))
    return f"{sys.executable} {path}"


@pytest.mark.parametrize(
    "body,needle",
    [
        # accepts everything and prints nothing: valid vectors differ, invalid ones are accepted
        ("sys.exit(0)\n", "accepted a message that must raise"),
        # rejects everything: valid vectors fail
        ("sys.stderr.write('no\\n'); sys.exit(1)\n", "rejected a valid message"),
        # dies on a signal: a crash is never a rejection
        ("import signal; os.kill(os.getpid(), signal.SIGKILL)\n", "crashed"),
        # names the wrong class
        ("sys.stderr.write('ChecksumError: nope\\n'); sys.exit(2)\n", "expected"),
    ],
)
def test_verify_external_decoder_failures(tmp_path, capsys, body, needle):
    decoder = write_decoder(tmp_path, body)
    code, out, _ = run(
        ["verify", "--decoder", decoder, "--select", "dense_f32_b4", "scale_nan", "major_2"], capsys
    )
    assert code == 1 and needle in out


def test_verify_external_protocol_details(tmp_path, capsys):
    # the limit arrives in QSGD_MAX_ELEMENTS; an unnamed rejection passes unless required
    decoder = write_decoder(
        tmp_path,
        """
        limit = int(os.environ["QSGD_MAX_ELEMENTS"])
        sys.stderr.write(f"{limit}\\n")
        sys.exit(1 if limit == 10 else 0)
    """,
    )
    code, out, _ = run(
        ["verify", "--decoder", decoder, "--select", "over_caller_limit", "-v"], capsys
    )
    assert code == 0 and "error class not named" in out
    code, out, _ = run(
        ["verify", "--decoder", decoder, "--select", "over_caller_limit", "--require-error-class"],
        capsys,
    )
    assert code == 1
    slow = write_decoder(tmp_path, "import time; time.sleep(30)\n")
    code, out, _ = run(
        ["verify", "--decoder", slow, "--select", "major_2", "--timeout", "0.5"], capsys
    )
    assert code == 1 and "timed out" in out
    code, _, err = run(["verify", "--decoder", str(tmp_path / "no-such-decoder")], capsys)
    assert code == 2 and "not found" in err


# ----------------------------------------------------------------------------- bench, warmup


@pytest.mark.slow
def test_bench(tmp_path, capsys):
    code, out, err = run(
        [
            "bench",
            "--size",
            5000,
            "--repeat",
            2,
            "--bits",
            4,
            "--text-progress",
            "--json",
            tmp_path / "b.json",
        ],
        capsys,
    )
    assert code == 0
    assert "encode" in out and "decode" in out and "copy" in out
    assert "[####" in err and "6/6" in err  # the text progress bar
    result = json.loads((tmp_path / "b.json").read_text())
    assert result["elements"] == 5000 and result["params"]["levels"] == 7
    assert set(result["mb_per_s"]) == {"copy", "encode", "decode"}
    assert all(v > 0 for v in result["mb_per_s"].values())


@pytest.mark.slow
def test_bench_with_tqdm(capsys):
    pytest.importorskip("tqdm")
    code, out, _ = run(["bench", "--size", 2000, "--repeat", 1], capsys)
    assert code == 0 and "MB/s" in out


def test_warmup(monkeypatch, capsys):
    if hasattr(qsgd_codec, "warmup"):
        code, out, _ = run(["warmup"], capsys)
        assert code == 0 and "kernels ready" in out
    monkeypatch.delattr(qsgd_codec, "warmup", raising=False)
    code, _, err = run(["warmup"], capsys)
    assert code == 1 and "warmup() is not available" in err


def test_version_and_module_entry():
    proc = run_module(["--version"])
    assert proc.returncode == 0 and qsgd_codec.__version__ in proc.stdout.decode()
    script = Path(sys.executable).with_name("qsgd")
    if script.exists():
        proc = subprocess.run([str(script), "--version"], capture_output=True, timeout=60)
        assert proc.returncode == 0 and b"wire format 1.0" in proc.stdout
