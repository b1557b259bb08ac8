"""Launching one run on N processes of this machine with ``torchrun`` (data-parallel training, or stages).

:func:`launch` writes the run's settings to ``OUT/launch.json`` and starts ``python -m
torch.distributed.run --standalone --nproc-per-node N -m beyondbp.launch OUT``; every process
reads the settings back and trains its rank (see :mod:`beyondbp.distributed`); rank 0 writes
the outputs, whose summary :func:`launch` returns. ``beyondbp train --nproc N`` and suites
whose runs set ``nproc`` go through here; ``torchrun ... -m beyondbp train`` works directly.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

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
    processes = max(config.nproc, config.stages)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "beyondbp.launch", str(out_dir)]
    from .experiment import SUMMARY_NAME

    summary_path = out_dir / SUMMARY_NAME
    written_before = summary_path.stat().st_mtime_ns if summary_path.is_file() else None
    returncode = subprocess.run(command, stdout=subprocess.DEVNULL).returncode
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


def main(out_dir: str) -> int:
    """One rank of a launched run: read ``OUT/launch.json`` and train."""
    from .data import validation_split
    from .distributed import launched_rank
    from .experiment import RunConfig, run

    out = Path(out_dir)
    spec = json.loads((out / SPEC_NAME).read_text())
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["config"].items()}
    config = RunConfig(**options)
    try:
        data = config.load_data()
        if spec["validation"]:
            data = validation_split(data, *spec["validation"])
        run(config, out, resume=spec["resume"], progress=spec["progress"], data=data,
            align_every=spec["align_every"])
    except BeyondBPError as error:
        if launched_rank() == 0 or config.stages > 1:  # a stage fails where its own part went wrong
            report = {"message": str(error), "diverged": isinstance(error, DivergenceError)}
            try:
                with open(out / ERROR_NAME, "x") as f:  # the first error is the cause; later ones follow from it
                    f.write(json.dumps(report) + "\n")
            except FileExistsError:
                pass
        return error.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
