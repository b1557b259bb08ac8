"""``torchrun`` without its own failure report: ``python -m beyondbp.quiet_torchrun ARGS`` takes torchrun's
arguments and starts the same processes; when one fails, it exits with that process's exit code instead of
printing torchrun's ``ChildFailedError`` traceback and summary (and its log lines about it). The failing
process has already said what went wrong (a beyondbp error is reported by the launcher in one line,
:mod:`beyondbp.launch`; a bug's traceback by the process itself)."""

from __future__ import annotations

import logging
import sys

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import get_args_parser, run


def main(argv: list[str] | None = None) -> int:
    for name in ("torch.distributed.run", "torch.distributed.elastic"):  # its log of the failure, too
        logging.getLogger(name).setLevel(logging.CRITICAL)
    args = get_args_parser().parse_args(argv)
    try:
        run(args)
    except ChildFailedError as error:
        codes = [failure.exitcode for failure in error.failures.values() if failure.exitcode]
        return codes[0] if codes else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
