"""Unlabeled text — a file or a folder of .txt files, and WordNet's glosses — tokenized with a
tokenizer folder built here from a tiny vocabulary (nothing is downloaded): three disjoint,
reproducible splits of dict samples that torch's default collate stacks."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from jointcomp.batches import as_batches, inputs_of, labels_of
from jointcomp.data import list_datasets, load_data
from jointcomp.data.text import TokenizedText, read_text_lines
from jointcomp.data.wordnet import WORDNET_ROOT, gloss_sentences, wordnet_sentences
from jointcomp.errors import DataError

from .conftest import IN_CI

pytest.importorskip(
    "transformers", reason="transformers is not installed (pip install -e '.[dev]')"
)

needs_wordnet = pytest.mark.skipif(
    not (Path(WORDNET_ROOT) / "data.noun").exists() and not IN_CI,
    reason="WordNet is not installed (apt-get install wordnet-base)",
)
WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "on",
    "mat",
    "ran",
    "far",
    "away",
    "and",
    "big",
    "small",
    "red",
    "blue",
    "line",
    "number",
]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    """A BERT WordPiece tokenizer folder, as a model folder holds it, from a 36-token vocab."""
    from transformers import BertTokenizerFast

    root = tmp_path_factory.mktemp("tok")
    vocab = root / "vocab"
    vocab.mkdir()
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = SPECIAL + WORDS + letters + [f"##{c}" for c in letters] + [str(d) for d in range(10)]
    (vocab / "vocab.txt").write_text("\n".join(tokens) + "\n")
    folder = root / "model"
    BertTokenizerFast.from_pretrained(str(vocab)).save_pretrained(str(folder))
    return folder


def write_lines(path: Path, n: int, prefix: str = "line") -> Path:
    path.write_text("".join(f"the {prefix} number {i}\n" for i in range(n)))
    return path


def texts(ds: Dataset) -> list[str]:
    assert isinstance(ds, TokenizedText)
    return list(ds.texts)


# ----------------------------------------------------------------------------- text files


def test_builtin_names():
    assert {"text", "wordnet", "image-folder"} <= set(list_datasets())


def test_text_file_three_disjoint_reproducible_splits(tmp_path, tokenizer_dir):
    f = write_lines(tmp_path / "a.txt", 100)
    b = load_data("text", root=f, tokenizer=tokenizer_dir, max_length=12, test_split=0.2)
    assert (b.name, b.num_classes, b.input_shape, b.labeled) == ("text", None, (12,), False)
    assert (len(b.train), len(b.val), len(b.test)) == (72, 8, 20)
    train, val, test = set(texts(b.train)), set(texts(b.val)), set(texts(b.test))
    assert not (train & val or train & test or val & test)
    assert train | val | test == set(read_text_lines(f))
    assert b.info["examples"] == 100 and b.info["max_length"] == 12

    again = load_data("text", root=f, tokenizer=tokenizer_dir, max_length=12, test_split=0.2)
    assert [texts(d) for d in (again.train, again.val, again.test)] == [
        texts(d) for d in (b.train, b.val, b.test)
    ]
    assert all(torch.equal(again.train.encoded[k], b.train.encoded[k]) for k in b.train.encoded)
    other = load_data(
        "text", root=f, tokenizer=tokenizer_dir, max_length=12, test_split=0.2, seed=3
    )
    assert texts(other.test) == texts(b.test)  # the held-out examples never move
    assert texts(other.val) != texts(b.val)

    short = load_data(
        "text", root=f, tokenizer=tokenizer_dir, max_length=12, test_split=0.2, limit=10
    )
    assert texts(short.train) == texts(b.train)[:10]  # limit: train only, its first N
    assert texts(short.val) == texts(b.val) and texts(short.test) == texts(b.test)


def test_samples_are_padded_int64_dicts_and_collate(tmp_path, tokenizer_dir):
    f = tmp_path / "t.txt"
    f.write_text("the cat sat\n\n   \nthe big red dog ran far far far away and away\n" * 3)
    b = load_data("text", root=f, tokenizer=tokenizer_dir, max_length=8, test_split=0.3)
    sample = b.train[0]
    assert set(sample) == {"input_ids", "attention_mask", "token_type_ids"}
    assert all(v.dtype == torch.int64 and v.shape == (8,) for v in sample.values())
    everything = {t: b.train[i] for i, t in enumerate(texts(b.train))}
    everything.update({t: b.test[i] for i, t in enumerate(texts(b.test))})
    short = everything["the cat sat"]
    ids = [2, *(5 + WORDS.index(w) for w in ("the", "cat", "sat")), 3, 0, 0, 0]
    assert short["input_ids"].tolist() == ids  # [CLS] the cat sat [SEP] [PAD]...
    assert short["attention_mask"].tolist() == [1] * 5 + [0] * 3
    long = everything["the big red dog ran far far far away and away"]
    assert long["attention_mask"].tolist() == [1] * 8 and long["input_ids"][-1] == 3  # truncated

    batch = next(iter(DataLoader(b.train, batch_size=3)))
    assert set(batch) == set(sample) and batch["input_ids"].shape == (3, 8)
    assert labels_of(batch) is None and set(inputs_of(batch)) == set(sample)
    data = as_batches(b.train, batch_size=2)
    calib = data.calibration(2)
    assert len(calib) == 2 and calib[0]["input_ids"].shape == (2, 8)
    example = data.example()
    assert {k: tuple(v.shape) for k, v in example.items()} == {k: (1, 8) for k in sample}


def test_text_folder_reads_every_txt_file_in_path_order(tmp_path, tokenizer_dir):
    root = tmp_path / "corpus"
    (root / "b").mkdir(parents=True)
    (root / "b" / "z.txt").write_text("the dog\n")
    (root / "a.txt").write_text("the cat\n\nthe mat\n")
    (root / "notes.md").write_text("not read\n")
    assert read_text_lines(root) == ["the cat", "the mat", "the dog"]
    b = load_data("text", root=root, tokenizer=tokenizer_dir, val_split=0.4, test_split=0.4)
    assert sorted(texts(b.train) + texts(b.val) + texts(b.test)) == [
        "the cat",
        "the dog",
        "the mat",
    ]
    assert b.input_shape == (128,)  # the default max_length


def test_sentence_transformers_folder_with_its_tokenizer_in_a_module_folder(
    tmp_path, tokenizer_dir
):
    model = tmp_path / "st"
    (model / "0_Transformer").mkdir(parents=True)
    for f in tokenizer_dir.iterdir():
        (model / "0_Transformer" / f.name).write_bytes(f.read_bytes())
    (model / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "0_Transformer",
                 "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling",
                 "type": "sentence_transformers.models.Pooling"},
            ]
        )
    )  # fmt: skip
    f = write_lines(tmp_path / "a.txt", 10)
    b = load_data("text", root=f, tokenizer=model, max_length=6, test_split=0.2)
    assert b.train[0]["input_ids"][0] == 2


def test_user_loader_of_unlabeled_dict_samples(tmp_path, monkeypatch, tokenizer_dir):
    (tmp_path / "jc_user_text.py").write_text(
        textwrap.dedent("""
        import torch
        from jointcomp.data.text import TokenizedText

        def make(n, length=5):
            ids = torch.arange(n * length, dtype=torch.int32).reshape(n, length)
            return TokenizedText([str(i) for i in range(n)],
                                 {"input_ids": ids, "attention_mask": torch.ones_like(ids)})

        def pair(tokenizer, max_length=5):
            pair.got = (tokenizer, max_length)
            return make(20, max_length), make(6, max_length)

        def zero():
            return {"train": torch.utils.data.TensorDataset(torch.zeros(8, 3),
                                                            torch.zeros(8, dtype=torch.long)),
                    "test": torch.utils.data.TensorDataset(torch.zeros(2, 3),
                                                           torch.zeros(2, dtype=torch.long)),
                    "num_classes": 0}

        def plain():
            return torch.zeros(10, 4), torch.zeros(3, 4)
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    b = load_data("jc_user_text:pair", tokenizer=str(tokenizer_dir), max_length=7)
    import jc_user_text

    assert jc_user_text.pair.got == (str(tokenizer_dir), 7)
    assert (b.num_classes, b.input_shape, len(b.test)) == (None, (7,), 6)
    assert load_data("jc_user_text:zero").num_classes is None  # 0: unlabeled, said so
    plain = load_data("jc_user_text:plain")
    assert (plain.num_classes, plain.input_shape) == (None, (4,))
    with pytest.raises(DataError, match=r"takes no image_size argument"):
        load_data("jc_user_text:pair", tokenizer="x", image_size=8)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"test_split": 0.2}, r"text needs data.tokenizer"),
        ({"tokenizer": "TOK"}, r"no official test split: set data.test_split"),
        ({"tokenizer": "TOK", "test_split": 0.2, "max_length": 1}, r"max_length must be at"),
        ({"tokenizer": "TOK", "test_split": 0.2, "max_length": 2.5}, r"max_length must be"),
        ({"tokenizer": "bert-base-uncased", "test_split": 0.2}, r"is not a folder.*never a hub"),
        ({"tokenizer": "EMPTY", "test_split": 0.2}, r"holds no tokenizer files"),
        ({"tokenizer": "TOK", "test_split": 0.2, "image_size": 8}, r"image_size does not apply"),
    ],
)
def test_text_errors(tmp_path, tokenizer_dir, kwargs, pattern):
    f = write_lines(tmp_path / "a.txt", 10)
    (tmp_path / "empty").mkdir()
    swap = {"TOK": str(tokenizer_dir), "EMPTY": str(tmp_path / "empty")}
    kwargs = {k: swap.get(v, v) if isinstance(v, str) else v for k, v in kwargs.items()}
    with pytest.raises(DataError, match=pattern):
        load_data("text", root=f, **kwargs)


def test_text_file_errors(tmp_path, tokenizer_dir):
    def load(root):
        return load_data("text", root=root, tokenizer=tokenizer_dir, test_split=0.2)

    with pytest.raises(DataError, match=r"text needs data.root"):
        load(None)
    with pytest.raises(DataError, match=r"does not exist"):
        load(tmp_path / "missing.txt")
    (tmp_path / "blank.txt").write_text("\n  \n")
    with pytest.raises(DataError, match=r"holds no non-empty lines"):
        load(tmp_path / "blank.txt")
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9\n")
    with pytest.raises(DataError, match=r"latin1.txt is not UTF-8"):
        load(tmp_path / "latin1.txt")
    (tmp_path / "dir").mkdir()
    with pytest.raises(DataError, match=r"no .txt files"):
        load(tmp_path / "dir")
    (tmp_path / "one.txt").write_text("the cat\n")
    with pytest.raises(DataError, match=r"too few"):
        load(tmp_path / "one.txt")
    with pytest.raises(DataError, match=r"tokenizer, max_length do not apply to dataset 'digits'"):
        load_data("digits", test_split=0.2, tokenizer=tokenizer_dir, max_length=8)


def test_max_length_beyond_the_tokenizers_model_max_length(tmp_path, tokenizer_dir):
    folder = tmp_path / "tok"
    folder.mkdir()
    for f in tokenizer_dir.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 16}))
    f = write_lines(tmp_path / "a.txt", 10)
    with pytest.raises(DataError, match=r"max_length 32 exceeds the tokenizer's model_max_length"):
        load_data("text", root=f, tokenizer=folder, max_length=32, test_split=0.2)
    assert load_data("text", root=f, tokenizer=folder, max_length=16, test_split=0.2)


def test_missing_transformers_names_the_extra(tmp_path, tokenizer_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers: ImportError
    f = write_lines(tmp_path / "a.txt", 10)
    with pytest.raises(DataError, match=r"pip install 'jointcomp\[hf\]'"):
        load_data("text", root=f, tokenizer=tokenizer_dir, test_split=0.2)


# ----------------------------------------------------------------------------- wordnet

NOUNS = """\
  1 This software and database is being provided to you, the LICENSEE, by
  2 Princeton University under the following license.
00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | perceived or known; "an entity exists"
00001930 03 n 01 thing 0 000 | a separate entity; (of a thing; or not) an object; "an entity exists"
"""
VERBS = """\
  1 license line
00022686 29 v 01 stimulate 0 000 | cause to be alert; "Coffee and tea stimulate me"; "tea stimulates
"""
ADJS = "00039929 00 s 01 hands-off 0 001 & 00039592 a 0000 | not involving participation; \n"
ADVS = '00002950 02 r 01 just 6 000 | exactly at this moment; "we\'ve just finished";  \n'


def write_wordnet(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in (("noun", NOUNS), ("verb", VERBS), ("adj", ADJS), ("adv", ADVS)):
        (root / f"data.{name}").write_text(text)
    return root


def test_gloss_sentences():
    assert gloss_sentences(
        'lacking in energy or will; "Much benevolence may be traced"- George Meredith  '
    ) == ["lacking in energy or will", "Much benevolence may be traced"]
    assert gloss_sentences('toed; often used; "long-toed; "five-toed"  ') == [
        "toed",
        "often used",
        "long-toed",  # an unbalanced quote: still sentences, nothing lost or invented
        "five-toed",
    ]
    assert gloss_sentences('(of e.g. volcanos; rare) erupting; "active  volcanos"') == [
        "(of e.g. volcanos; rare) erupting",  # no split inside parentheses
        "active volcanos",
    ]
    assert gloss_sentences('":-( and :-) are emoticons"') == [":-( and :-) are emoticons"]
    assert gloss_sentences("; 123 ;") == []


def test_wordnet_sentences_from_fake_files_deduplicated_in_file_order(tmp_path):
    root = write_wordnet(tmp_path / "wn")
    assert wordnet_sentences(root) == [
        "perceived or known",
        "an entity exists",
        "a separate entity",
        "(of a thing; or not) an object",
        "cause to be alert",
        "Coffee and tea stimulate me",
        "tea stimulates",
        "not involving participation",
        "exactly at this moment",
        "we've just finished",
    ]


def test_wordnet_bundle_from_fake_files(tmp_path, tokenizer_dir):
    root = write_wordnet(tmp_path / "wn")
    b = load_data("wordnet", root=root, tokenizer=tokenizer_dir, max_length=10, test_split=0.2)
    assert (b.name, b.num_classes, b.input_shape, len(b.test)) == ("wordnet", None, (10,), 2)
    got = texts(b.train) + texts(b.val) + texts(b.test)
    assert sorted(got) == sorted(wordnet_sentences(root))


def test_wordnet_errors(tmp_path, tokenizer_dir):
    with pytest.raises(DataError, match=r"data.noun.*not found.*apt-get install wordnet-base"):
        load_data("wordnet", root=tmp_path, tokenizer=tokenizer_dir, test_split=0.1)
    root = write_wordnet(tmp_path / "wn")
    (root / "data.adv").write_text("00002950 02 r 01 just 6 000 no gloss here\n")
    with pytest.raises(DataError, match=r"data.adv line 1 has no gloss"):
        wordnet_sentences(root)


@needs_wordnet
def test_wordnet_from_the_debian_package(tokenizer_dir):
    sentences = wordnet_sentences()
    # WordNet 3.0's 117,659 synset glosses as distinct definitions and examples: a change in
    # this count is a change in the parser
    assert len(sentences) == 181_464
    assert len(set(sentences)) == len(sentences)
    assert sentences[:2] == [
        "that which is perceived or known or inferred to have its own distinct existence "
        "(living or nonliving)",
        "an entity that has physical existence",
    ]
    b = load_data(
        "wordnet", tokenizer=tokenizer_dir, max_length=16, test_split=0.01, val_split=0.01,
        limit=64,
    )  # fmt: skip
    assert (len(b.train), len(b.val), len(b.test)) == (64, 1796, 1815)
    assert not set(texts(b.train)) & set(texts(b.test))
    assert b.info["examples"] == 181_464
