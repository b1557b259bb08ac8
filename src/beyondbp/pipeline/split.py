"""How a sequence of blocks is cut into contiguous pipeline stages.

A pipeline runs as fast as its slowest stage, so the cut minimises the largest stage cost: by each
block's parameter count (the default: for fully connected blocks the arithmetic of the forward pass and
of the local weight gradient both grow with it), or by a measured time per block (``balance="time"``,
for blocks whose cost the parameters do not tell, such as attention). Exact for any number of blocks by
dynamic programming over cut positions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from torch import nn

from ..errors import BeyondBPError

BALANCES = ("parameters", "time")


def contiguous_split(costs: Sequence[float], stages: int) -> list[range]:
    """``stages`` contiguous ranges of block indices, each non-empty, minimising the largest sum of
    ``costs`` (ties: the earliest cuts)."""
    n = len(costs)
    if not 1 <= stages <= n:
        raise BeyondBPError(f"cannot cut {n} blocks into {stages} stages: every stage needs at least one block "
                            f"(a model of {n} blocks takes at most {n} stages)")
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + c)
    # best[k][j]: the smallest largest-stage cost of blocks 0..j-1 in k stages; cut[k][j]: where the last begins
    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(stages + 1)]
    cut = [[0] * (n + 1) for _ in range(stages + 1)]
    best[0][0] = 0.0
    for k in range(1, stages + 1):
        for j in range(k, n + 1):
            for i in range(k - 1, j):
                value = max(best[k - 1][i], prefix[j] - prefix[i])
                if value < best[k][j]:
                    best[k][j], cut[k][j] = value, i
    bounds, j = [], n
    for k in range(stages, 0, -1):
        bounds.append(range(cut[k][j], j))
        j = cut[k][j]
    return bounds[::-1]


def parameter_costs(blocks: Sequence[nn.Module]) -> list[float]:
    return [float(sum(p.numel() for p in block.parameters())) for block in blocks]


def timed_costs(run_block: Callable[[int], None], count: int, repeats: int = 3) -> list[float]:
    """Seconds per block: the fastest of ``repeats`` calls of ``run_block(i)`` after one warm-up call."""
    costs = []
    for i in range(count):
        run_block(i)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            run_block(i)
            times.append(time.perf_counter() - started)
        costs.append(min(times))
    return costs


def describe(bounds: Sequence[range], costs: Sequence[float], unit: str) -> str:
    """One line per stage: its blocks and its share of the cost."""
    total = sum(costs) or 1.0
    lines = []
    for j, r in enumerate(bounds):
        share = sum(costs[i] for i in r) / total
        lines.append(f"stage {j}: blocks {r.start}-{r.stop - 1} ({share:.0%} of the {unit})")
    return "; ".join(lines)
