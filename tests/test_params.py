"""EncodeParams: the one parameters object, validated once and passed through unchanged."""

import json

import numpy as np
import pytest

import qsgd_codec
from qsgd_codec import EncodeParams, ParameterError, wire

X = np.random.default_rng(3).standard_normal(3000).astype(np.float32)


def test_defaults_are_the_papers_setting():
    p = EncodeParams()
    assert (p.levels, p.bucket_size, p.scale, p.coding, p.seed, p.checksum) == (
        127,
        512,
        "max",
        "dense",
        0,
        True,
    )
    assert p == EncodeParams.from_options()


def test_equality_repr_and_dict_round_trip():
    p = EncodeParams.from_options(
        bits=4, bucket_size=128, scale="l2", coding="elias", seed=9, checksum=False
    )
    assert p == EncodeParams(7, 128, "l2", "elias", 9, False)
    assert hash(p) == hash(EncodeParams(7, 128, "l2", "elias", 9, False))
    assert eval(repr(p), {"EncodeParams": EncodeParams}) == p
    config = json.loads(json.dumps(p.to_dict()))
    assert config == {
        "levels": 7,
        "bucket_size": 128,
        "scale": "l2",
        "coding": "elias",
        "seed": 9,
        "checksum": False,
    }
    assert EncodeParams.from_dict(config) == p
    assert EncodeParams.from_dict({"bits": 4}) == EncodeParams(levels=7)
    assert p != EncodeParams(7, 128, "l2", "elias", 10, False)


def test_numpy_integers_are_normalised():
    p = EncodeParams(np.int64(7), np.int32(64), "max", "dense", np.uint64(2**63))
    assert type(p.levels) is int and type(p.bucket_size) is int and type(p.seed) is int
    assert p == EncodeParams(7, 64, "max", "dense", 2**63)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"levels": 0}, "levels must be in"),
        ({"levels": 1 << 24}, "levels must be in"),
        ({"levels": 2.0}, "levels must be an integer"),
        ({"bucket_size": 0}, "bucket_size must be in"),
        ({"scale": "median"}, "scale must be one of"),
        ({"coding": "zstd"}, "coding must be one of"),
        ({"seed": -1}, "seed must be in"),
        ({"seed": 1 << 64}, "seed must be in"),
        ({"seed": "1"}, "seed must be an integer"),
    ],
)
def test_construction_validates(kwargs, needle):
    with pytest.raises(ParameterError, match=needle):
        EncodeParams(**kwargs)


def test_from_dict_refuses_unknown_keys_and_non_dicts():
    with pytest.raises(ParameterError, match="unknown EncodeParams keys"):
        EncodeParams.from_dict({"levels": 7, "bucketsize": 4})
    with pytest.raises(ParameterError, match="takes a dict"):
        EncodeParams.from_dict([("levels", 7)])


def test_with_seed_checks_only_the_seed():
    p = EncodeParams(levels=7)
    assert p.with_seed(5) == EncodeParams(levels=7, seed=5)
    assert p.seed == 0
    with pytest.raises(ParameterError, match="seed must be in"):
        p.with_seed(-1)


def test_encode_with_params_equals_keywords():
    p = EncodeParams.from_options(bits=4, bucket_size=256, seed=3)
    assert qsgd_codec.encode(X, params=p) == qsgd_codec.encode(X, bits=4, bucket_size=256, seed=3)
    assert qsgd_codec.max_encoded_size(X.shape, params=p) == wire.encoded_size(X.shape, p)


def test_params_and_keywords_together_are_refused():
    with pytest.raises(ParameterError, match="either params= or encoder keywords"):
        qsgd_codec.encode(X, params=EncodeParams(), seed=1)
    with pytest.raises(ParameterError, match="must be a qsgd_codec.EncodeParams"):
        qsgd_codec.encode(X, params={"levels": 7})


def _refuse_validation(monkeypatch):
    def boom(self):
        raise AssertionError("EncodeParams validated again")

    monkeypatch.setattr(EncodeParams, "__post_init__", boom)


def test_encode_uses_params_without_validating_again(monkeypatch):
    p = EncodeParams(levels=7, seed=4)
    expected = qsgd_codec.encode(X, params=p)
    _refuse_validation(monkeypatch)
    assert qsgd_codec.encode(X, params=p) == expected
    assert qsgd_codec.encode(X, params=p.with_seed(4)) == expected


def test_numcodecs_codec_passes_its_params_through(monkeypatch):
    pytest.importorskip("numcodecs")
    from qsgd_codec.numcodecs_codec import QSGD

    p = EncodeParams(levels=7, bucket_size=128, seed=2)
    codec = QSGD(params=p)
    assert codec.params is p and codec == QSGD(levels=7, bucket_size=128, seed=2)
    expected = qsgd_codec.encode(X, params=p)
    _refuse_validation(monkeypatch)
    assert codec.encode(X) == expected


def test_ddp_state_keeps_one_params_object():
    pytest.importorskip("torch")
    from qsgd_codec.torch_ddp import QSGDState

    p = EncodeParams(levels=7, bucket_size=128, seed=2)
    state = QSGDState(params=p)
    assert state.params is p and (state.levels, state.bucket_size, state.seed) == (7, 128, 2)
    with pytest.raises(ParameterError, match="either params= or encoder keywords"):
        QSGDState(params=p, bits=4)
