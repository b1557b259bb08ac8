"""Workers that belong to their search: a local worker dies with the process that started it, and a trial left
running by a worker that is gone is reclaimed at the next start, so that a restarted search meets its budget
exactly.

Each trial records its worker (``pid`` and ``host``). At a start, a running trial of this host whose process no
longer exists is marked failed (it does not count against the budget; the sampler proposes the trials that replace
it); trials of other hosts are left to the storage's heartbeat (a worker elsewhere cannot be checked directly). Its
settings are not queued to run again: Optuna's queue of waiting trials is not safe for workers that share a SQLite
study (two can take the same queued trial, and the second one's result is refused). The study counts what it
reclaimed (user attribute ``reclaimed``), which the report shows.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys

WORKER = "worker"
RECLAIMED = "reclaimed"
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> None:
    """Ask the kernel to end this process when its parent ends (Linux; elsewhere nothing happens), and end now
    if the parent is already gone."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent ended before the request
        os.kill(os.getpid(), signal.SIGTERM)


def marking_sampler(seed: int):
    """Optuna's TPE sampler, recording in each trial it is asked for which process runs it (``pid`` and
    ``host``), as soon as the trial exists: a worker killed between creating a trial and starting it still
    leaves its mark, so the trial can be reclaimed."""
    import optuna

    class MarkingSampler(optuna.samplers.TPESampler):
        def before_trial(self, study, trial) -> None:
            study._storage.set_trial_user_attr(trial._trial_id, WORKER,
                                               {"pid": os.getpid(), "host": socket.gethostname()})
            super().before_trial(study, trial)

    return MarkingSampler(seed=seed)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def reclaim_stale_trials(study) -> int:
    """Mark failed every running trial of this host whose worker process is gone and add the count to the study's
    ``reclaimed``; returns the count."""
    from optuna.trial import TrialState

    host, count = socket.gethostname(), 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(WORKER)
        if worker is None or worker["host"] != host or alive(worker["pid"]):
            continue
        if study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
            count += 1
    if count:
        study.set_user_attr(RECLAIMED, study.user_attrs.get(RECLAIMED, 0) + count)
    return count
