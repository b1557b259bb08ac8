#!/usr/bin/env bash
# The figures the documentation shows that no suite writes (suite plots come from benchmarks/results):
# DFA's alignment with backprop per layer, for how-to/diagnostics.md. Run from anywhere: docs/make_plots.sh
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
.venv/bin/beyondbp train --method dfa --dataset digits --hidden 256,256 --epochs 10 --align-every 1 --seed 1 \
    --no-progress --out "$work/dfa"
mkdir -p docs/img
cp "$work/dfa/alignment.png" docs/img/alignment-dfa.png
echo "wrote docs/img/alignment-dfa.png"
