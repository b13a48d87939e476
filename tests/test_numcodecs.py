"""The numcodecs codec (codec_id "qsgd") and the Zarr v3 array-to-bytes codec.

QSGD is lossy: the decoded values are the quantized values.  So besides numcodecs' own
approximate round-trip checker, every buffer type is checked for the exact bytes and values
that qsgd_codec.encode/decode give for the same flat array.
"""

import array
import json

import numpy as np
import pytest

numcodecs = pytest.importorskip("numcodecs")
from numcodecs.tests.common import check_config, check_encode_decode  # noqa: E402

import qsgd_codec  # noqa: E402
from qsgd_codec.errors import DTypeError, ParameterError, QSGDError  # noqa: E402
from qsgd_codec.numcodecs_codec import QSGD  # noqa: E402

RNG = np.random.default_rng(0)
ARRAYS = [
    RNG.standard_normal(1000).astype(np.float32),
    RNG.standard_normal((100, 10)).astype(np.float64),
    np.asfortranarray(RNG.standard_normal((100, 10)).astype(np.float32)),
    RNG.standard_normal((10, 10, 10)).astype(np.float16),
    np.zeros(0, np.float32),
]
CODECS = [
    QSGD(),
    QSGD(bits=4, bucket_size=128, seed=7),
    QSGD(levels=8, bucket_size=64, scale="l2", coding="elias", seed=2**64 - 1),
    QSGD(bits=2, coding="elias", checksum=False),
]


def reference(codec, arr):
    """What the codec must produce: qsgd_codec on the flat array in memory order."""
    flat = arr.reshape(-1, order="A")
    data = qsgd_codec.encode(
        flat,
        levels=codec.levels,
        bucket_size=codec.bucket_size,
        scale=codec.scale,
        coding=codec.coding,
        seed=codec.seed,
        checksum=codec.checksum,
    )
    return data, qsgd_codec.decode(data)


def test_registered_through_entry_point():
    codec = numcodecs.get_codec({"id": "qsgd", "levels": 7, "seed": 3})
    assert type(codec) is QSGD and codec == QSGD(bits=4, seed=3)


@pytest.mark.parametrize("codec", CODECS, ids=repr)
@pytest.mark.parametrize("arr", ARRAYS, ids=lambda a: f"{a.dtype}{list(a.shape)}")
def test_every_buffer_type_exact(codec, arr):
    data, values = reference(codec, arr)
    raw = arr.tobytes(order="A")
    typed = QSGD.from_config({**codec.get_config(), "dtype": arr.dtype.name})
    # encode: ndarray (own dtype), and raw buffers read as the configured dtype
    assert codec.encode(arr) == data
    for buf in (
        raw,
        bytearray(raw),
        array.array("b", raw),
        np.frombuffer(raw, np.uint8),
        memoryview(raw),
    ):
        assert typed.encode(buf) == data
    # decode: from every buffer type
    for buf in (
        data,
        bytearray(data),
        array.array("b", data),
        np.frombuffer(data, np.uint8),
        memoryview(data),
    ):
        out = codec.decode(buf)
        assert out.dtype == values.dtype and np.array_equal(out, values, equal_nan=False)
    # decode into out=: ndarray of the right dtype (any memory order), bytearray, array.array
    out = np.empty_like(arr)
    assert codec.decode(data, out=out) is out
    assert np.array_equal(out.reshape(-1, order="A"), values)
    out = bytearray(arr.nbytes)
    codec.decode(data, out=out)
    assert bytes(out) == values.tobytes()
    out = array.array("b", bytes(arr.nbytes))
    codec.decode(data, out=out)
    assert out.tobytes() == values.tobytes()
    with pytest.raises(ValueError):
        codec.decode(data, out=bytearray(arr.nbytes + 1))
    if arr.dtype.itemsize > 1:  # an out of the other byte order gets values, not raw bytes
        out = np.empty(arr.shape, arr.dtype.newbyteorder())
        codec.decode(data, out=out)
        assert np.array_equal(out.reshape(-1), values)


@pytest.mark.parametrize("arr", ARRAYS[:3], ids=lambda a: f"{a.dtype}{list(a.shape)}")
def test_numcodecs_checker_with_fine_levels(arr):
    # numcodecs' own checker compares with the input to `precision` decimals; with s = 2^24-1
    # levels the quantization error is below 1e-6 of each bucket's max
    codec = QSGD(levels=2**24 - 1, dtype=arr.dtype.name)
    check_encode_decode(arr, codec, precision=5)


def test_quantization_error_bound():
    x = ARRAYS[0]
    codec = QSGD(bits=4, bucket_size=100)
    y = codec.decode(codec.encode(x))
    bound = np.repeat(np.abs(x).reshape(-1, 100).max(axis=1), 100) / 7
    err = np.abs(y - x)
    assert np.all(err <= bound * (1 + 1e-6)) and err.max() > 0


def test_deterministic_and_seeded():
    x = ARRAYS[0]
    assert QSGD(seed=1).encode(x) == QSGD(seed=1).encode(x)
    assert QSGD(seed=1).encode(x) != QSGD(seed=2).encode(x)


def test_dtype_rules():
    x = ARRAYS[0]
    with pytest.raises(DTypeError, match="dtype"):
        QSGD().encode(x.tobytes())  # raw bytes need a configured dtype
    with pytest.raises(DTypeError):
        QSGD(dtype="float64").encode(x)  # typed array of another dtype
    with pytest.raises(ValueError):
        QSGD(dtype="float32").encode(b"\x00" * 7)  # not whole values
    with pytest.raises(DTypeError):
        QSGD(dtype="int32")
    with pytest.raises(TypeError):  # numcodecs: object arrays are TypeError
        QSGD().encode(np.array(["a", "b"], dtype=object))
    with pytest.raises(TypeError):
        QSGD().decode(QSGD().encode(x[:10]), out=np.empty(10, dtype=object))


def test_bfloat16_raw_buffers():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = ARRAYS[0].astype(ml_dtypes.bfloat16)
    codec = QSGD(bits=8, dtype="bfloat16")
    data = codec.encode(x.tobytes())
    assert data == codec.encode(x) == qsgd_codec.encode(x)
    assert codec.decode(data).dtype == x.dtype


def test_bad_parameters():
    for kwargs in (
        {"bits": 1},
        {"levels": 0},
        {"bucket_size": 0},
        {"scale": "median"},
        {"coding": "zstd"},
        {"seed": -1},
        {"max_buffer_size": 0},
    ):
        with pytest.raises(ParameterError):
            QSGD(**kwargs)


def test_corrupt_input_raises_qsgd_error():
    data = bytearray(QSGD().encode(ARRAYS[0]))
    data[70] ^= 0x10
    with pytest.raises(QSGDError):
        QSGD().decode(bytes(data))
    with pytest.raises(ValueError):
        QSGD().decode(b"not a message")


@pytest.mark.parametrize("max_buffer_size", [4, 64, 1024])
def test_max_buffer_size(max_buffer_size):
    codec = QSGD(bits=4)
    codec.max_buffer_size = max_buffer_size
    # up to the limit: fine
    codec.encode(np.zeros(max_buffer_size // 4, dtype=np.float32))
    small = codec.encode(np.ones(max_buffer_size // 8, dtype=np.float64))
    if len(small) <= max_buffer_size:
        assert codec.decode(small).nbytes <= max_buffer_size
    else:  # the message itself is over the limit
        with pytest.raises(ValueError):
            codec.decode(small)
    # over it: ValueError on encode (input size) and on decode (input or output size)
    for buf in (
        np.zeros(max_buffer_size // 4 + 1, np.float32),
        np.zeros(max_buffer_size // 8 + 1, np.float64),
        bytes(b"x" * (max_buffer_size + 1)),
        np.zeros(max_buffer_size + 1, np.int8),
    ):
        with pytest.raises(ValueError):
            codec.encode(buf)
        with pytest.raises(ValueError):
            codec.decode(buf)


def test_max_buffer_size_bounds_the_output():
    # a small message (elias coding of zeros) that decodes to more than the limit
    codec = QSGD(max_buffer_size=1024)
    bomb = qsgd_codec.encode(np.zeros(1 << 20, np.float32), coding="elias", bucket_size=1 << 20)
    assert len(bomb) <= 1024
    with pytest.raises(ValueError, match="decodes to"):
        codec.decode(bomb)
    with pytest.raises(ValueError, match="decodes to"):
        codec.decode(bomb, out=np.empty(1 << 20, np.float32))
    fits = qsgd_codec.encode(np.zeros(256, np.float32), coding="elias", bucket_size=256)
    assert codec.decode(fits).nbytes == 1024


def test_max_buffer_size_in_config():
    codec = QSGD(max_buffer_size=100)
    assert codec.get_config()["max_buffer_size"] == 100
    assert "max_buffer_size" not in QSGD().get_config()
    with pytest.raises(ValueError):
        codec.encode(np.zeros(26, np.float32))


@pytest.mark.parametrize(
    "codec", CODECS + [QSGD(dtype="float16"), QSGD(max_buffer_size=10)], ids=repr
)
def test_config_json_roundtrip_equality_and_repr(codec):
    check_config(codec)  # through JSON and numcodecs.get_codec
    config = codec.get_config()
    assert json.loads(json.dumps(config)) == config and config["id"] == "qsgd"
    assert QSGD.from_config(config) == codec
    text = repr(codec)
    assert eval(text, {"QSGD": QSGD}) == codec and repr(eval(text, {"QSGD": QSGD})) == text
    assert hash(QSGD.from_config(config)) == hash(codec)


def test_equality_by_config():
    assert QSGD(bits=8) == QSGD(levels=127) == QSGD()
    assert QSGD(seed=1) != QSGD(seed=2)
    assert QSGD(checksum=False) != QSGD()
    assert QSGD() != numcodecs.Zlib()
    assert QSGD() != "qsgd"


# ----------------------------------------------------------------------------- zarr

zarr = pytest.importorskip("zarr")


def chunk_values(block, codec_kwargs):
    data = qsgd_codec.encode(block, **codec_kwargs)
    return qsgd_codec.decode(data)


@pytest.mark.parametrize("coding", ["dense", "elias"])
def test_zarr_v3_serializer_end_to_end(tmp_path, coding):
    from qsgd_codec.numcodecs_codec import ZarrQSGD

    data = np.random.default_rng(1).standard_normal((90, 40)).astype(np.float32)
    kwargs = dict(levels=7, bucket_size=64, coding=coding, seed=5)
    codec = ZarrQSGD(**kwargs)
    z = zarr.create_array(
        tmp_path / "a.zarr",
        shape=data.shape,
        chunks=(30, 20),
        dtype="float32",
        serializer=codec,
        compressors=None,
    )
    z[:] = data
    meta = json.loads((tmp_path / "a.zarr" / "zarr.json").read_text())
    assert meta["codecs"] == [
        {"name": "qsgd", "configuration": {**codec.to_dict()["configuration"]}}
    ]
    assert meta["codecs"][0]["configuration"]["levels"] == 7
    back = zarr.open_array(tmp_path / "a.zarr", mode="r")
    assert back.metadata.codecs[0] == codec
    stored = back[:]
    assert stored.dtype == np.float32
    for i in range(0, 90, 30):
        for j in range(0, 40, 20):
            block = data[i : i + 30, j : j + 20]
            assert np.array_equal(
                stored[i : i + 30, j : j + 20], chunk_values(np.ascontiguousarray(block), kwargs)
            )
    # every chunk file is one QSGD message
    chunk = (tmp_path / "a.zarr" / "c" / "0" / "0").read_bytes()
    info = qsgd_codec.inspect(chunk)
    assert info["shape"] == (30, 20) and info["coding"] == coding


def test_zarr_v3_with_compressor_and_partial_chunks():
    from qsgd_codec.numcodecs_codec import ZarrQSGD

    data = np.random.default_rng(2).standard_normal(1000)
    z = zarr.create_array(
        zarr.storage.MemoryStore(),
        shape=data.shape,
        chunks=(300,),
        dtype="float64",
        serializer=ZarrQSGD(bits=8),
    )
    z[:] = data
    stored = z[:]
    assert np.abs(stored - data).max() <= np.abs(data).max() / 127
    assert np.array_equal(stored[:300], chunk_values(data[:300], {"bits": 8}))


def test_zarr_v3_codec_config_and_validation():
    from qsgd_codec.numcodecs_codec import ZarrQSGD

    codec = ZarrQSGD(bits=4, scale="l2")
    d = codec.to_dict()
    assert d["name"] == "qsgd" and json.loads(json.dumps(d)) == d
    assert ZarrQSGD.from_dict(d) == codec
    assert ZarrQSGD.from_dict({"name": "qsgd"}) == ZarrQSGD()
    assert zarr.registry.get_codec_class("qsgd") is ZarrQSGD
    with pytest.raises(ParameterError):
        ZarrQSGD(levels=0)
    with pytest.raises(ValueError, match="float"):
        zarr.create_array(
            zarr.storage.MemoryStore(),
            shape=(10,),
            chunks=(5,),
            dtype="int32",
            serializer=ZarrQSGD(),
        )


def test_zarr_v2_compressor_end_to_end(tmp_path):
    data = np.random.default_rng(3).standard_normal((60, 50)).astype(np.float32)
    codec = QSGD(bits=4, bucket_size=100, seed=9)
    z = zarr.create_array(
        tmp_path / "v2.zarr",
        shape=data.shape,
        chunks=(30, 25),
        dtype="float32",
        compressors=codec,
        zarr_format=2,
    )
    z[:] = data
    meta = json.loads((tmp_path / "v2.zarr" / ".zarray").read_text())
    assert meta["compressor"] == codec.get_config()
    back = zarr.open_array(tmp_path / "v2.zarr", mode="r")
    stored = back[:]
    for i in (0, 30):
        for j in (0, 25):
            block = np.ascontiguousarray(data[i : i + 30, j : j + 25])
            assert np.array_equal(
                stored[i : i + 30, j : j + 25], codec.decode(codec.encode(block)).reshape(30, 25)
            )
