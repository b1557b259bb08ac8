"""The options of direct feedback (:mod:`.direct`): one section for every preset, one more for F³'s delayed
signal. Each value is checked here, when the section is built; what depends on the preset's signal (an
execution or a decay the signal cannot have) is checked by :class:`~.direct.DirectFeedback`."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import BeyondBPError
from ..options import option
from .feedback_init import FeedbackMatrixOptions
from .points import PointOptions
from .signals import BUFFER_INITS, SIGNALS, check_decay

DEFAULT_F3_SIGNAL = "delayed_error_one_hot"
BUFFER_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
EXECUTIONS = ("auto", "autograd", "forward")
TOKEN_FEEDBACK = ("read-out", "shared", "per-token")
FEEDBACK_FROM = ("output", "head-input")
#: Parameter kinds that ``feedback_exclude`` can keep out of direct feedback.
EXCLUDABLE = ("bias", "norm")

GROUP = "direct feedback (dfa, drtp, f3, shallow)"


@dataclass
class DirectOptions(FeedbackMatrixOptions, PointOptions):
    """Options of every direct-feedback preset (dfa, drtp, f3, shallow); see :class:`~.direct.DirectFeedback`."""

    batch_mean: bool = option(False, GROUP, "divide the injected direct-feedback gradient by the batch size "
                                            "(matters for SGD)", flat="feedback_batch_mean")
    token_feedback: str = option("read-out", GROUP, "direct feedback on token sequences and feature maps: one C x "
                                                    "width (channels) matrix whose projection the positions the "
                                                    "read-out uses share (read-out: the class token, or all; maps "
                                                    "behind a global average pool), every position shares "
                                                    "(shared), or one per position (per-token)",
                                 choices=TOKEN_FEEDBACK)
    execution: str = option("auto", GROUP, "'forward' updates each block as the forward pass reaches it (signals "
                                           "known in advance), 'autograd' does one backward at the end; auto picks "
                                           "forward where possible", choices=EXECUTIONS)
    unlocked: bool = option(False, GROUP, "with forward execution: step each block's optimizer as soon as its "
                                          "gradient exists")
    feedback_from: str = option("output", GROUP, "the signal projected: output (over the C outputs) or "
                                                 "head-input (carried back through the head, everything after the "
                                                 "last point, to its input; Launay et al. 2020's transformers)",
                                choices=FEEDBACK_FROM)
    center_signal: bool = option(False, GROUP, "remove each sample's mean over classes from the signal (not in the "
                                               "papers)")
    feedback_exclude: tuple[str, ...] = option((), GROUP, "parameter kinds of hidden blocks kept out of the "
                                                          "feedback, at their initialisation: bias, norm (not in the "
                                                          "papers)", metavar="KINDS")

    def check(self) -> None:
        super().check()
        unknown = sorted(set(self.feedback_exclude) - set(EXCLUDABLE))
        if unknown:
            raise BeyondBPError(f"cannot exclude '{unknown[0]}' from direct feedback; known: {', '.join(EXCLUDABLE)}")


@dataclass
class F3Options(DirectOptions):
    """F³'s options: its signal and how the delayed buffer is read (Flügel et al. 2023)."""

    signal: str | None = option(None, "f3", f"f3's signal (default {DEFAULT_F3_SIGNAL}); see 'beyondbp list'")
    buffer_init: str = option("target", "f3", "what a sample's delayed signal reads before its first visit (target: "
                                              "the paper, epoch 1 is DRTP; class_mean: the mean error written so far "
                                              "for its class)", choices=tuple(BUFFER_INITS))
    signal_decay: float = option(1.0, "f3", "read a delayed signal as decay ** age x value, its age in epochs, and "
                                            "weigh class means by it (1: the paper, no decay; not in the papers)")
    buffer_dtype: str = option("float32", "f3", "the delayed buffer's number type: float16 or bfloat16 halve its "
                                                "bytes", choices=tuple(BUFFER_DTYPES))
    buffer_rank: int = option(0, "f3", "store each delayed error projected to this many dimensions by a fixed random "
                                       "matrix, which the feedback matrices then act on (0: the full error)")

    def check(self) -> None:
        super().check()
        if self.signal is not None:
            SIGNALS.get(self.signal)
        check_decay(self.signal_decay)
        if self.buffer_rank < 0:
            raise BeyondBPError(f"buffer_rank must be at least 0 (0: the full error), got {self.buffer_rank}")
