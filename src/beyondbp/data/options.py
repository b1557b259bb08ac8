"""The data section of a run's configuration: a named data set or the user's own file."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import BeyondBPError
from ..options import Section, option, setting
from . import load_dataset
from .augment import AUGMENTATIONS, CropFlip, make_augmentation
from .corpus import CORPORA, DEFAULT_CONTEXT, TOKENIZERS, load_text_file
from .dataset import DataSplit
from .registry import DATASETS
from .user_files import TASKS, load_user_file

GROUP = "data"


@dataclass
class DataOptions(Section):
    """Where a run's data comes from."""

    dataset: str = option("digits", GROUP, "data set; see 'beyondbp list'")
    data: str | None = option(None, GROUP, "your own data file instead: .npz (arrays x, y; optional x_test, y_test), "
                                           ".csv (with --target) or .txt (a corpus: --task lm)", metavar="PATH")
    target: str | None = option(None, GROUP, "--data FILE.csv: the target column", metavar="COLUMN")
    drop_missing: bool = option(False, GROUP, "--data FILE.csv: drop the rows with a missing cell (the run's first "
                                              "line says how many) instead of refusing the table")
    task: str | None = option(None, GROUP, "--data: force the task (default: classification for integer or string "
                                           "targets; lm, next-token prediction, for .txt)", choices=(*TASKS, "lm"))
    context: int | None = option(None, GROUP, "task lm: tokens per sample (the chunks the text is cut into; "
                                              f"default {DEFAULT_CONTEXT} for a named corpus)", metavar="TOKENS")
    tokenizer: str = option("char", GROUP, "task lm: token ids of the text: char (its characters), byte (UTF-8 "
                                           "bytes) or bpe (byte-level BPE trained on the training part)",
                            choices=TOKENIZERS)
    bpe_size: int = option(1024, GROUP, "tokenizer bpe: tokens in its vocabulary")
    data_dir: str | None = option(None, GROUP, "where data files are (also $BEYONDBP_DATA)")
    train_samples: int | None = option(None, GROUP, "train on N samples of the training set: a seeded draw (the "
                                                    "first N chunks of a corpus); the test set stays whole",
                                       metavar="N")
    download: bool = option(False, GROUP, "download missing data files")
    augment: str | None = option(None, GROUP, "training images augmented each step: crop-flip (random crop after "
                                              "padding, horizontal flip; seeded)", choices=AUGMENTATIONS)
    crop_padding: int = option(4, GROUP, "crop-flip: pixels of zero padding before the crop")

    @property
    def corpus(self) -> bool:
        """Whether the data is a text for next-token prediction (a named corpus or a .txt file)."""
        return self.dataset in CORPORA if self.data is None else Path(self.data).suffix == ".txt"

    def check(self) -> None:
        super().check()
        if self.data is None:
            DATASETS.get(self.dataset)
            if self.target is not None or self.drop_missing or (self.task is not None and
                                                                not (self.corpus and self.task == "lm")):
                raise BeyondBPError(f"a target column, a task and dropping rows apply to a data file "
                                    f"({setting('data', 'PATH')}) only")
        elif self.corpus and self.task not in (None, "lm"):
            raise BeyondBPError(f"{self.data} is a text: its task is lm (next-token prediction), not {self.task}")
        elif self.corpus and self.context is None:
            raise BeyondBPError(f"{self.data} is a text corpus for task lm: give {setting('context', 'TOKENS')} (the "
                                f"tokens per sample, e.g. 128)")
        elif self.task == "lm" and not self.corpus:
            raise BeyondBPError(f"task lm reads a text corpus (.txt), not {self.data}")
        if self.context is not None and not self.corpus:
            raise BeyondBPError(f"{setting('context', 'TOKENS')} applies to a text corpus (task lm: "
                                f"{', '.join(CORPORA)} or --data FILE.txt)")
        if self.context is not None and self.context < 1:
            raise BeyondBPError(f"{setting('context', 'TOKENS')} must be at least 1, got {self.context}")
        if self.crop_padding < 0:
            raise BeyondBPError(f"{setting('crop_padding')} must be at least 0, got {self.crop_padding}")
        if self.train_samples is not None and self.train_samples < 2:
            raise BeyondBPError(f"{setting('train_samples', 'N')} must be at least 2, got {self.train_samples}")

    def augmentation(self, data: DataSplit) -> CropFlip | None:
        """The training set's augmentation (None without one), checked against the data's samples."""
        augmentation = make_augmentation(self.augment, self.crop_padding)
        if augmentation is not None:
            augmentation.check(data.train.input_shape)
        return augmentation

    def origin(self, data: DataSplit) -> str:
        """Where the data came from, in one line; says so when ``data_dir`` was given but the files were found
        elsewhere (or the data set needs no files)."""
        line = f"data {data.name}: {data.source or 'source not recorded'}"
        if self.data_dir is not None and self.data is None:
            given = Path(self.data_dir).expanduser().resolve()
            paths = [part.split(" (")[0] for part in data.source.split(", ")]  # without a note on the samples
            found = [Path(part).resolve() for part in paths if part.startswith(("/", "."))]
            if not any(folder == given or given in folder.parents for folder in found):
                line += f" (not from {setting('data_dir', self.data_dir)})"
        return line

    def load(self) -> DataSplit:
        """The data: the user's file (``data``) or the named data set (``train_samples`` of its training set)."""
        if self.data is not None and self.corpus:
            data = load_text_file(self.data, self.context, self.tokenizer, self.bpe_size)
        elif self.data is not None:
            data = load_user_file(self.data, self.target, self.task, split_seed=0, drop_missing=self.drop_missing)
        else:
            data = load_dataset(self.dataset, self.data_dir, self.download, context=self.context,
                                tokenizer=self.tokenizer, bpe_size=self.bpe_size)
        return data if self.train_samples is None else training_subset(data, self.train_samples)


def training_subset(data: DataSplit, samples: int) -> DataSplit:
    """``samples`` of the training set: a draw seeded by 0 (in its order), or a corpus's first chunks; the source
    says how many of how many."""
    total = len(data.train)
    if samples > total:
        raise BeyondBPError(f"{setting('train_samples', samples)}: {data.name}'s training set holds {total} samples")
    rows = torch.arange(samples) if data.task == "lm" else torch.randperm(
        total, generator=torch.Generator().manual_seed(0))[:samples].sort().values
    return dataclasses.replace(data, train=data.train.rows(rows),
                               source=f"{data.source} ({samples} of its {total} training samples)")
