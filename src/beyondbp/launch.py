"""Launching one run on N processes of this machine with ``torchrun`` (data-parallel training, or stages).

:func:`launch` writes the run's settings to ``OUT/launch.json`` and starts ``python -m
beyondbp.quiet_torchrun --standalone --nproc-per-node N -m beyondbp.worker OUT`` (torchrun without its own
failure report); every process
reads the settings back and trains its rank (:mod:`beyondbp.worker`); rank 0 writes
the outputs, whose summary :func:`launch` returns. ``beyondbp train --nproc N`` and suites
whose runs set ``nproc`` go through here; ``torchrun ... -m beyondbp train`` works directly.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .build import SUMMARY_NAME
from .errors import BeyondBPError, DivergenceError

SPEC_NAME = "launch.json"
ERROR_NAME = "launch-error.json"  # rank 0's (or the first failing stage's) error, for the launcher to raise


def launch(config, out_dir: Path | str | None, resume: bool = False, progress: bool = True,
           align_every: int = 0, validation: tuple[float, int] | None = None) -> dict[str, Any]:
    """Train ``config`` on ``config.nproc`` processes; the summary written by rank 0."""
    if out_dir is None:
        out_dir = Path(tempfile.mkdtemp(prefix="beyondbp-"))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = {"config": dataclasses.asdict(config), "resume": resume, "progress": progress,
            "align_every": align_every, "validation": validation}
    (out_dir / SPEC_NAME).write_text(json.dumps(spec, indent=2) + "\n")
    processes = config.execution_options().processes
    command = [sys.executable, "-m", "beyondbp.quiet_torchrun", "--standalone", f"--nproc-per-node={processes}",
               "-m", "beyondbp.worker", str(out_dir)]
    environment = {"OMP_NUM_THREADS": "1", **os.environ}  # torchrun's choice, without its banner about it
    summary_path = out_dir / SUMMARY_NAME
    written_before = summary_path.stat().st_mtime_ns if summary_path.is_file() else None
    returncode = subprocess.run(command, stdout=subprocess.DEVNULL, env=environment).returncode
    error = out_dir / ERROR_NAME
    if error.is_file():
        report = json.loads(error.read_text())
        error.unlink()
        raise (DivergenceError if report["diverged"] else BeyondBPError)(report["message"])
    finished = summary_path.is_file() and summary_path.stat().st_mtime_ns != written_before
    if returncode != 0 and not finished:
        raise BeyondBPError(f"the {processes}-process run in {out_dir} failed (exit {returncode}); "
                            f"see the messages above")
    if returncode != 0:
        # Rank 0 writes the summary only after the last epoch, so the outputs are complete; a rank
        # can still abort in gloo's teardown as the processes exit (a known PyTorch issue).
        print(f"beyondbp: warning: the {processes}-process run in {out_dir} finished and wrote its outputs, "
              f"but a process exited with code {returncode} while shutting down", file=sys.stderr)
    return json.loads(summary_path.read_text())
