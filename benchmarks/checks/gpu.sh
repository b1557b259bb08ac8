#!/bin/bash
# The prepared GPU check: on a machine with one CUDA GPU and python3 with torch (no network needed), from the
# repository root:   bash benchmarks/checks/gpu.sh OUT      (under 8 minutes on one H200)
# Writes OUT/gpu.csv (samples/s and peak memory of bp, f3, dfa, fg:k4 on ResNet-20 and the MLP), OUT/loop.csv
# (bench loop: the Trainer against a plain PyTorch loop) and OUT/pytest.txt (the CUDA tests). Commit the CSVs
# under benchmarks/results/gpu-DATE/ with the machine they name.
set -u
OUT=${1:-runs/gpu}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
status=0
"$PYTHON" benchmarks/checks/gpu.py "$OUT" || status=1
"$PYTHON" -m beyondbp bench loop --device auto --samples 8192 --rounds 3 --out "$OUT" || status=1
"$PYTHON" -m pytest -q -p no:cacheprovider -m cuda tests > "$OUT/pytest.txt" 2>&1 || status=1
tail -3 "$OUT/pytest.txt"
exit $status
