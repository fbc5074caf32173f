"""English text offline: the glosses of Debian's ``wordnet-base`` (WordNet 3.0) as sentences.

Each synset line of ``data.noun``, ``data.verb``, ``data.adj`` and ``data.adv`` ends in its
gloss after ``| ``: definitions separated by ``;`` and quoted usage examples, e.g.
``cause to be alert and energetic; "Coffee and tea stimulate me"``. Every definition and every
example becomes one sentence (an example's attribution, ``"..."- George Meredith``, is dropped);
sentences are deduplicated, keeping the first, in the order noun, verb, adj, adv and line order:
the same list on every machine with the package. They are tokenized like ``text``
(:mod:`jointcomp.data.text`).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from .bundle import DataBundle
from .text import text_bundle

WORDNET_ROOT = "/usr/share/wordnet"
POS_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
HINT = (
    "install Debian's package (apt-get install wordnet-base), which puts them in "
    f"{WORDNET_ROOT}, or pass data.root: a folder with WordNet 3.0's data.noun, data.verb, "
    "data.adj and data.adv"
)
_STRIP = " \t;"


def _clean(part: str) -> str:
    return " ".join(part.split()).strip(_STRIP)


def _definitions(outside: str) -> list[str]:
    """``outside`` (gloss text outside quotes) split at the ``;`` outside parentheses."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(outside):
        if c == "(":
            depth += 1
        elif c == ")":
            depth = max(0, depth - 1)
        elif c == ";" and depth == 0:
            parts.append(outside[start:i])
            start = i + 1
    parts.append(outside[start:])
    return parts


def gloss_sentences(gloss: str) -> list[str]:
    """The definitions and quoted examples of one gloss, in order, each as one sentence.

    A quote left open runs to the end of the gloss (WordNet has a few); text after a closing
    quote that starts with ``-`` is the example's attribution and is dropped; fragments without
    a letter are dropped.
    """
    out: list[str] = []
    outside: list[str] = []  # text since the last quote, outside quotes

    def flush() -> None:
        for part in _definitions("".join(outside)):
            part = _clean(part)
            if part.startswith("-"):  # an attribution: "..."- W.B.Yeats
                continue
            out.append(part)
        outside.clear()

    i = 0
    while i < len(gloss):
        c = gloss[i]
        if c != '"':
            outside.append(c)
            i += 1
            continue
        flush()
        end = gloss.find('"', i + 1)
        end = len(gloss) if end < 0 else end
        out.append(_clean(gloss[i + 1 : end]))
        i = end + 1
    flush()
    return [s for s in out if any(ch.isalpha() for ch in s)]


def read_glosses(path: Path) -> list[str]:
    """The gloss of every synset line of one ``data.*`` file (license lines skipped)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise DataError(f"wordnet: cannot read {path}: {e.strerror or e}") from e
    glosses = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("  "):  # the license header's lines
            continue
        _, bar, gloss = line.partition(" | ")
        if not bar:
            raise DataError(
                f"wordnet: {path} line {number} has no gloss ('| '): not a WordNet data file"
            )
        glosses.append(gloss)
    return glosses


def wordnet_sentences(root: str | Path | None = None) -> list[str]:
    """Every distinct definition and example sentence of WordNet, in a fixed order."""
    folder = Path(root if root is not None else WORDNET_ROOT).expanduser()
    missing = [str(folder / f) for f in POS_FILES if not (folder / f).is_file()]
    if missing:
        raise DataError(f"wordnet: {', '.join(missing)} not found. To get them: {HINT}")
    seen: dict[str, None] = {}
    for name in POS_FILES:
        for gloss in read_glosses(folder / name):
            for sentence in gloss_sentences(gloss):
                seen.setdefault(sentence, None)
    if not seen:
        raise DataError(f"wordnet: no glosses in {folder}'s data files. {HINT}")
    return list(seen)


def load_wordnet_bundle(
    root: str | Path | None,
    tokenizer: str | Path | None,
    max_length: int | None,
    val_split: float,
    seed: int,
    limit: int | None,
    test_split: float | None,
) -> DataBundle:
    """WordNet's sentences, tokenized with the tokenizer of a local model folder, unlabeled."""
    return text_bundle(
        "wordnet",
        lambda: wordnet_sentences(root),
        tokenizer,
        max_length,
        val_split,
        seed,
        limit,
        test_split,
    )
