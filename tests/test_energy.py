"""Energy: the RAPL reader on a fake powercap tree, the labelled estimate where RAPL is missing, and the
joules that every training epoch records."""

from __future__ import annotations

import json

import pytest
import torch

import beyondbp as bb
from beyondbp.energy import EnergyMeter, rapl_counters


def zone(root, name, label, energy, wrap=1000):
    path = root / name
    path.mkdir()
    (path / "name").write_text(label + "\n")
    (path / "energy_uj").write_text(f"{energy}\n")
    (path / "max_energy_range_uj").write_text(f"{wrap}\n")
    return path


def test_rapl_sums_packages_and_dram_and_survives_a_wrap(tmp_path):
    package = zone(tmp_path, "intel-rapl:0", "package-0", 900)
    core = zone(tmp_path, "intel-rapl:0:0", "core", 100)  # inside the package: not added again
    dram = zone(tmp_path, "intel-rapl:0:2", "dram", 10)
    psys = zone(tmp_path, "intel-rapl:1", "psys", 5)  # overlaps the packages: left out
    assert len(rapl_counters(tmp_path)) == 2
    meter = EnergyMeter("cpu", rapl_root=tmp_path)
    assert meter.source.startswith("RAPL")
    (package / "energy_uj").write_text("100\n")  # wrapped at 1000: 900 -> 1000 -> 100 is 200 µJ
    (dram / "energy_uj").write_text("60\n")  # 50 µJ
    (core / "energy_uj").write_text("999\n")
    (psys / "energy_uj").write_text("999\n")
    assert meter.joules() == pytest.approx(250e-6)
    (package / "energy_uj").write_text("300\n")
    assert meter.joules() == pytest.approx(450e-6)


def test_unreadable_rapl_falls_back_to_a_labelled_estimate(tmp_path):
    zone(tmp_path, "intel-rapl:0", "package-0", 5)
    (tmp_path / "intel-rapl:0" / "energy_uj").unlink()  # as when only root may read it
    assert rapl_counters(tmp_path) == []
    meter = EnergyMeter("cpu", watts_per_core=7.0, rapl_root=tmp_path / "absent")
    assert meter.source.startswith("estimate (7 W per busy core")
    x = torch.randn(400, 400)
    for _ in range(200):
        x = torch.tanh(x @ x.T / 400)
    used = meter.joules()
    assert used > 0  # CPU time was spent, so the estimate grew
    with pytest.raises(ValueError, match="positive"):
        EnergyMeter("cpu", watts_per_core=0)


def test_every_epoch_records_its_cumulative_training_energy(tmp_path):
    summary = bb.run(bb.RunConfig(method="dfa", dataset="digits", epochs=2, hidden=(32,), watts_per_core=5.0),
                     out_dir=tmp_path, progress=False)
    assert summary["train_joules"] > 0 and summary["energy_source"]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()


    first, second = (json.loads(line) for line in lines)
    assert 0 < first["train_joules"] < second["train_joules"] == summary["train_joules"]
    with pytest.raises(bb.BeyondBPError, match="watts per core"):
        bb.run(bb.RunConfig(method="dfa", dataset="digits", watts_per_core=-1))
