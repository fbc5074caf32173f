"""The public contract the rest of jointcomp relies on."""

from __future__ import annotations

import ast
import dataclasses
import json
import pathlib

import numpy as np
import pytest

import jointcomp.codec as codec
from jointcomp.codec import (
    CODECS,
    AnsCoder,
    CodecError,
    Encoded,
    HuffmanCoder,
    RangeCoder,
    RawCoder,
    SparseCoder,
    TunstallCoder,
    decode,
    encode,
)


def test_names_and_types():
    assert CODECS == ("auto", "raw", "huffman", "tunstall", "ans", "range", "sparse")
    assert issubclass(CodecError, ValueError)
    enc = encode(np.arange(10))
    assert isinstance(enc, Encoded)
    with pytest.raises(dataclasses.FrozenInstanceError):
        enc.codec = "raw"


def test_library_imports_nothing_else_from_jointcomp():
    root = pathlib.Path(codec.__file__).parent
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                assert not (node.module or "").startswith("jointcomp"), path
            if isinstance(node, ast.ImportFrom) and node.level > 1:
                raise AssertionError(f"{path} imports outside the codec package")
            if isinstance(node, ast.Import):
                assert all(not a.name.startswith("jointcomp") for a in node.names), path


@pytest.mark.parametrize(
    "coder",
    [
        RawCoder(),
        HuffmanCoder(max_length=10),
        TunstallCoder(k=10, block_size=100),
        AnsCoder(),
        RangeCoder(precision=16),
        SparseCoder(),
    ],
)
def test_coder_objects(coder):
    rng = np.random.default_rng(3)
    x = np.where(rng.random(5000) < 0.7, 0, rng.integers(-50, 50, 5000)).astype(np.int32)
    enc = coder.encode(x)
    assert enc.codec == coder.name
    y = coder.decode(enc.data, enc.params, x.size, np.int32)
    np.testing.assert_array_equal(y, x)
    # the module-level decoder needs no coder options: everything is in data/params
    np.testing.assert_array_equal(decode(enc.codec, enc.data, enc.params, x.size, "int32"), x)


def test_options_reach_the_coder():
    rng = np.random.default_rng(4)
    x = np.minimum(rng.geometric(0.01, 20000), 5000)
    assert encode(x, "huffman", max_length=12).stats["max_code_len"] <= 12
    assert encode(x, "huffman", max_length=24).stats["max_code_len"] > 12
    assert encode(x[:3000] % 200, "tunstall", k=9).stats["k"] == 9
    auto = encode(x, "auto", candidates=("raw", "huffman"), huffman={"max_length": 12})
    assert set(auto.stats["auto_sizes"]) == {"raw", "huffman"}
    with pytest.raises(TypeError):
        encode(x, "auto", bogus=1)
    with pytest.raises(ValueError):
        encode(x, "lzma")
    with pytest.raises(TypeError):
        encode(np.array([0.5, 1.5]))
    with pytest.raises(TypeError):
        encode(np.array([True, False]))


def test_params_are_small_and_json():
    rng = np.random.default_rng(5)
    x = rng.integers(-(2**62), 2**62, 100, dtype=np.int64)
    for name in CODECS:
        enc = encode(x, name)
        text = json.dumps(enc.params)
        assert len(text) < 64
        assert 0 <= enc.side_bytes <= len(enc.data)


def test_tunstall_rejects_alphabets_beyond_its_dictionary():
    x = np.arange(300)
    with pytest.raises(ValueError):
        encode(x, "tunstall", k=8)
    assert encode(x, "tunstall", k=9).codec == "tunstall"
    assert encode(np.arange(5000), "auto").stats["auto_sizes"].get("tunstall") is None
