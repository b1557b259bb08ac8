"""One process of a launched run (:mod:`beyondbp.launch`): ``python -m beyondbp.worker OUT`` under torchrun
reads ``OUT/launch.json`` and trains its rank or stage; the first error is left in ``OUT/launch-error.json``
for the launcher to raise."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

from .config import RunConfig
from .data import validation_split
from .distributed import launched_rank
from .errors import BeyondBPError, DivergenceError, show_warnings_in_one_line
from .experiment import run
from .launch import ERROR_NAME, SPEC_NAME
from .train import TrainingWarning


def main(out_dir: str) -> int:
    """One rank of a launched run: read ``OUT/launch.json`` and train."""
    out = Path(out_dir)
    spec = json.loads((out / SPEC_NAME).read_text())
    config = RunConfig(**spec["config"])
    show_warnings_in_one_line()
    if config.stages == 1 and launched_rank() != 0:  # rank 0 speaks for the data-parallel ranks
        warnings.simplefilter("ignore", TrainingWarning)
    try:
        data = config.data_options().load()
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
