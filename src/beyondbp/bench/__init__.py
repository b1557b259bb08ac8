"""Benchmark suites: every method side by side with backprop, on equal terms.

``beyondbp bench SUITE`` runs ``benchmarks/suites/SUITE.toml`` (learning-rate selection on
a validation split, then the seeds on the test set) and writes
``benchmarks/results/SUITE.csv``, ``SUITE.md`` and plots; ``beyondbp results`` turns all
result files into ``benchmarks/RESULTS.md``.
"""

from .suite import Suite, load_suite
from .runner import run_suite
from .report import write_results_md

__all__ = ["Suite", "load_suite", "run_suite", "write_results_md"]
