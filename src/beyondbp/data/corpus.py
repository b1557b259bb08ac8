"""Text corpora for next-token prediction (task ``lm``): a user's ``.txt`` file or a named corpus.

The text becomes token ids with a :class:`Vocabulary` (``char``: the distinct characters of the training
part, plus one id for characters it lacks; ``byte``: the 256 byte values of its UTF-8 encoding; ``bpe``: a
byte-level BPE of ``bpe_size`` tokens trained on the training part with the ``tokenizers`` package, Sennrich
et al. 2016, which the ``hf`` extra installs), is split
in the order of the text (the last :data:`TEST_FRACTION` is the test part; a validation part, where a
search needs one, is the end of the training part: :func:`~.dataset.validation_split`), and each part is
cut into non-overlapping chunks of ``context`` tokens: sample ``i`` is ``ids[iT : (i+1)T]`` with targets
``ids[iT+1 : (i+1)T+1]``, the next token at every position. A chunk is the same sample every epoch, so
F³'s delayed error per token is revisited.

Named corpora (each also under ``--data-dir``): ``fortunes``, the English fortune-cookie files of Debian's
``fortunes`` package (``make data`` installs it; 2.5 MB of quotations, jokes and poems, 114 distinct byte
values), chosen because a fresh Debian machine gets it offline from the package registry, like
Fashion-MNIST, and it is about the size of tiny-shakespeare; ``tiny-shakespeare`` (1.1 MB, Karpathy's
char-rnn) and ``wikitext-103`` (Merity et al. 2016; its own train/test files) with ``--download``.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from ..errors import BeyondBPError, DataFormatError, DataNotFoundError
from .dataset import Dataset, DataSplit
from .files import download as fetch
from .files import folders, locate_or_fetch
from .registry import DATASETS

TEST_FRACTION = 0.1
#: Tokens per sample of a named corpus when no context is given.
DEFAULT_CONTEXT = 128
TOKENIZERS = ("char", "byte", "bpe")
#: The fewest training chunks a corpus must give.
MIN_CHUNKS = 4
FORTUNES_DIR = Path("/usr/share/games/fortunes")
SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
WIKITEXT_URL = "https://wikitext.smerity.com/wikitext-103-raw-v1.zip"
UNKNOWN = "\ufffd"


@dataclass(frozen=True)
class Vocabulary:
    """Token ids of text: ``byte`` level (ids are the UTF-8 bytes), ``char`` level (``symbols[i]`` is token ``i``;
    id 0 is :data:`UNKNOWN`, which every character outside ``symbols`` becomes) or ``bpe`` (``bpe`` holds the
    trained tokenizer as JSON)."""

    level: str
    symbols: tuple[str, ...] = ()
    bpe: str = ""

    @classmethod
    def of(cls, text: str, level: str, bpe_size: int = 1024) -> Vocabulary:
        """The vocabulary of ``level`` for a training text."""
        if level not in TOKENIZERS:
            raise BeyondBPError(f"unknown tokenizer '{level}'; known: {', '.join(TOKENIZERS)}")
        if level == "bpe":
            return cls(level, bpe=train_bpe(text, bpe_size).to_str())
        return cls(level, (UNKNOWN, *sorted(set(text) - {UNKNOWN})) if level == "char" else ())

    @cached_property
    def tokenizer(self):
        from tokenizers import Tokenizer

        return Tokenizer.from_str(self.bpe)

    def __len__(self) -> int:
        if self.level == "bpe":
            return self.tokenizer.get_vocab_size()
        return 256 if self.level == "byte" else len(self.symbols)

    def encode(self, text: str) -> np.ndarray:
        if self.level == "bpe":
            return np.asarray(self.tokenizer.encode(text).ids, dtype=np.int64)
        if self.level == "byte":
            return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)
        index = {symbol: i for i, symbol in enumerate(self.symbols)}
        return np.fromiter((index.get(c, 0) for c in text), dtype=np.int64, count=len(text))

    def decode(self, ids: Sequence[int]) -> str:
        if self.level == "bpe":
            return self.tokenizer.decode([int(i) for i in ids])
        if self.level == "byte":
            return bytes(int(i) for i in ids).decode("utf-8", errors="replace")
        return "".join(self.symbols[int(i)] for i in ids)


def characters_per_token(vocabulary: Vocabulary, targets: torch.Tensor) -> float:
    """How many characters the target tokens ``targets`` spell, per token (padding, a negative id, left out):
    1 for char level, the bytes per character's inverse for byte level, above 1 for BPE. A loss in bits per
    token divided by it is in bits per character, comparable across tokenizers."""
    ids = targets[targets >= 0].tolist()
    return len(vocabulary.decode(ids)) / max(len(ids), 1)


def train_bpe(text: str, size: int):
    """A byte-level BPE tokenizer of ``size`` tokens trained on ``text`` (every byte stays a token: no unknowns)."""
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    except ImportError:
        raise BeyondBPError("tokenizer bpe needs the tokenizers package: pip install 'beyondbp[hf]'") from None
    if size < 257:
        raise BeyondBPError(f"a byte-level BPE needs at least 257 tokens (the 256 bytes and one merge), got {size}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator([text], trainer)
    return tokenizer


def chunks(ids: np.ndarray, context: int, num_classes: int) -> Dataset:
    """Non-overlapping samples of ``context`` tokens with the next token as the target at every position."""
    count = (len(ids) - 1) // context
    x = torch.as_tensor(ids[: count * context].reshape(count, context))
    t = torch.as_tensor(ids[1: count * context + 1].reshape(count, context))
    return Dataset(x, t, num_classes)


def corpus_split(name: str, train_text: str, test_text: str, context: int, tokenizer: str,
                 bpe_size: int = 1024) -> DataSplit:
    """The ``lm`` split of a training and a test text (vocabulary from the training text)."""
    if context < 1:
        raise BeyondBPError(f"context must be at least 1 token, got {context}")
    vocabulary = Vocabulary.of(train_text, tokenizer, bpe_size)
    train, test = (chunks(vocabulary.encode(text), context, len(vocabulary)) for text in (train_text, test_text))
    if len(train) < MIN_CHUNKS or len(test) < 1:
        raise DataFormatError(f"corpus {name} is too short for samples of {context} tokens: its training part gives "
                              f"{len(train)} and its test part {len(test)} (needs at least {MIN_CHUNKS} and 1); use "
                              f"a shorter --context or a longer text")
    return DataSplit(name, "lm", train, test, vocabulary=vocabulary)


def text_split(name: str, text: str, context: int, tokenizer: str, bpe_size: int = 1024) -> DataSplit:
    """One text split in its order: the last :data:`TEST_FRACTION` is the test part."""
    cut = int(len(text) * (1 - TEST_FRACTION))
    return corpus_split(name, text[:cut], text[cut:], context, tokenizer, bpe_size)


def read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except OSError as error:
        raise DataNotFoundError(f"cannot read {path}: {error}") from None


def load_text_file(path: Path | str, context: int | None, tokenizer: str = "char", bpe_size: int = 1024) -> DataSplit:
    """A user's ``.txt`` corpus (``--data FILE.txt --task lm --context T``)."""
    path = Path(path)
    if context is None:
        raise BeyondBPError(f"{path} is a text corpus for next-token prediction: give --context TOKENS (the tokens "
                            f"per sample, e.g. 128)")
    if not path.is_file():
        raise DataNotFoundError(f"data file {path} does not exist")
    return text_split(path.stem, read_text(path), context, tokenizer, bpe_size).from_source(str(path))


def fortune_files(folder: Path) -> list[Path]:
    """The fortune files of a folder: every regular file but the ``.dat`` indexes and ``.u8`` links, sorted."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.is_symlink() and p.suffix not in (".dat", ".u8"))


@DATASETS.register("fortunes", "English fortune cookies of Debian's 'fortunes' package, 2.5 MB of text for next-token "
                               "prediction (task lm; make data installs it)")
def fortunes(data_dir=None, download: bool = False, split_seed: int = 0, context: int | None = None,
             tokenizer: str = "char", bpe_size: int = 1024) -> DataSplit:
    folders_tried = [Path(data_dir) / "fortunes", Path(data_dir)] if data_dir else []
    for folder in [*folders_tried, FORTUNES_DIR]:
        files = fortune_files(folder) if folder.is_dir() else []
        if any(p.name == "literature" for p in files):
            text = "".join(read_text(p) for p in files)
            split = text_split("fortunes", text, context or DEFAULT_CONTEXT, tokenizer, bpe_size)
            return split.from_source(str(folder))
    raise DataNotFoundError(f"data set 'fortunes': no fortune files (e.g. 'literature') in "
                            f"{', '.join(map(str, [*folders_tried, FORTUNES_DIR]))}; install the Debian package "
                            f"'fortunes' (make data does, as root) or pass --data-dir DIR")


@DATASETS.register("tiny-shakespeare", "Shakespeare's plays, 1.1 MB of text (Karpathy's char-rnn) for next-token "
                                       "prediction (task lm; --download)")
def tiny_shakespeare(data_dir=None, download: bool = False, split_seed: int = 0, context: int | None = None,
                     tokenizer: str = "char", bpe_size: int = 1024) -> DataSplit:
    files = locate_or_fetch("tiny-shakespeare", ("input.txt",), data_dir, "pass --download to fetch it, or --data-dir "
                            "DIR holding input.txt", download, lambda folder: fetch([SHAKESPEARE_URL], folder))
    return text_split("tiny-shakespeare", read_text(files["input.txt"]), context or DEFAULT_CONTEXT, tokenizer,
                      bpe_size).from_source(folders(files))


WIKITEXT_FILES = ("wiki.train.raw", "wiki.test.raw")


def _fetch_wikitext(folder: Path) -> None:
    fetch([WIKITEXT_URL], folder)
    with zipfile.ZipFile(folder / WIKITEXT_URL.rsplit("/", 1)[-1]) as archive:
        archive.extractall(folder)


@DATASETS.register("wikitext-103", "WikiText-103 (Merity et al. 2016), raw text, its own train and test articles, "
                                   "for next-token prediction (task lm; --download, 190 MB zip)")
def wikitext_103(data_dir=None, download: bool = False, split_seed: int = 0, context: int | None = None,
                 tokenizer: str = "char", bpe_size: int = 1024) -> DataSplit:
    files = locate_or_fetch("wikitext-103", WIKITEXT_FILES, data_dir, "pass --download to fetch it, or --data-dir DIR "
                            "holding wikitext-103-raw/", download, _fetch_wikitext, subdirs=("", "wikitext-103-raw"))
    train, test = (read_text(files[f]) for f in WIKITEXT_FILES)
    split = corpus_split("wikitext-103", train, test, context or DEFAULT_CONTEXT, tokenizer, bpe_size)
    return split.from_source(folders(files))


#: The named corpora: data sets of task ``lm`` that take ``context``, ``tokenizer`` and ``bpe_size``.
CORPORA = ("fortunes", "tiny-shakespeare", "wikitext-103")
