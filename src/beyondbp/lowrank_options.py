"""The low-rank section of a run's configuration: OIALR (:mod:`.lowrank`) or AB-training (:mod:`.ab_training`)."""

from __future__ import annotations

from dataclasses import dataclass

from .ab_training import SYNC_MODES, ABTraining
from .distributed import DataParallel
from .errors import BeyondBPError
from .lowrank import OIALR
from .methods import Method
from .options import Section, option, setting

#: Low-rank training schemes for ``--lowrank``.
LOWRANK = ("oialr", "ab")
GROUP = "low-rank training"


@dataclass
class LowRankOptions(Section):
    """Which low-rank scheme trains the run, and its schedule."""

    lowrank: str | None = option(None, GROUP, "oialr (OIALR) or ab (AB-training, data-parallel with --nproc >= 2)",
                                 choices=LOWRANK)
    oialr_start: int = option(1000, GROUP, "oialr: full-rank steps first")
    oialr_every: int = option(250, GROUP, "oialr: steps between re-orthogonalisation and cut")
    oialr_cutoff: float = option(0.15, GROUP, "oialr: cut singular values below this fraction of the largest")
    ab_start: int = option(500, GROUP, "ab: full-rank warm-up steps")
    ab_sync_every: int = option(100, GROUP, "ab: steps the A and B groups train apart before synchronising")
    ab_full_steps: int = option(10, GROUP, "ab: full-rank steps after each synchronisation")
    ab_rank: float = option(0.25, GROUP, "ab: rank of A B as a fraction of the full rank")
    ab_sync: str = option("products", GROUP, "ab: products (average of A B over ranks) or factors (A of the A group "
                                             "times B of the B group)", choices=SYNC_MODES)

    def check(self) -> None:
        super().check()
        if self.lowrank == "ab":
            ABTraining.check(self.ab_start, self.ab_sync_every, self.ab_full_steps, self.ab_rank, self.ab_sync)
        elif self.lowrank == "oialr":
            self.schedule(None)

    def check_method(self, method: Method) -> None:
        """The scheme trains ``method``'s estimates, or says why not."""
        if self.lowrank is not None:
            {"ab": ABTraining, "oialr": OIALR}[self.lowrank].check_method(method)

    def schedule(self, parallel: DataParallel | None) -> OIALR | ABTraining | None:
        """The scheme's schedule for this process (AB-training needs the data-parallel ranks)."""
        if self.lowrank == "ab":
            if parallel is None:
                raise BeyondBPError(f"{setting('lowrank', 'ab')} needs data-parallel training on at least 2 processes "
                                    f"({setting('nproc', 2)})")
            return ABTraining(parallel, start=self.ab_start, sync_every=self.ab_sync_every,
                              full_steps=self.ab_full_steps, rank=self.ab_rank, sync=self.ab_sync)
        if self.lowrank == "oialr":
            return OIALR(start=self.oialr_start, every=self.oialr_every, cutoff=self.oialr_cutoff)
        return None
