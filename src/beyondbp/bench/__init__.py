"""Benchmark suites: every method side by side with backprop, on equal terms.

``beyondbp bench SUITE`` runs ``benchmarks/suites/SUITE.toml`` (learning-rate selection on
a validation split, then the seeds on the test set) and writes
``benchmarks/results/SUITE.csv``, ``SUITE.md`` and plots; ``beyondbp results`` turns all
result files into ``benchmarks/RESULTS.md``.
"""

from .report import write_results_md
from .runner import run_suite
from .suite import Suite, load_suite

__all__ = ["Suite", "load_suite", "run_suite", "write_results_md"]
