"""Trials of a search run in rounds, so that a search gives the same trials however its threads are timed.

A round's trials are asked for and their settings proposed one after another, run together, and told in
trial order once all have ended. TPE's proposals then depend only on earlier rounds, and so do the median
pruner's decisions (it compares a trial with *finished* trials, and none finishes inside a round). With more
than one job, each trial trains in a process of its own (``spawn``; ``cores / jobs`` threads each): PyTorch's
random generator is one per process, so trials sharing a process would draw each other's initial weights,
feedback matrices, tangents and dropout masks. The process reports every epoch's score to the search, which
answers whether to stop (:class:`optuna.TrialPruned`).
"""

from __future__ import annotations

import multiprocessing
import os
import queue
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import torch

from .errors import BeyondBPError, DivergenceError, show_warnings_in_one_line

#: the data of a search, kept by each of its processes (sent once, when the process starts)
_DATA: Any = None


def run_rounds(study, propose: Callable, evaluate: Callable, count: int, jobs: int, finished: Callable,
               data: Any = None) -> None:
    """Run ``count`` trials of ``study``, ``jobs`` at a time: ``propose(trial)`` gives a trial's settings (in
    the calling process, in trial order); ``evaluate(number, settings, data, report)`` (picklable) trains trial
    ``number`` and returns its score, calling ``report(score, epoch)`` after each epoch. A trial that diverges
    fails, one that the pruner stops is pruned; any other error is raised once its round's trials are told."""
    from optuna.trial import TrialState

    if count <= 0:
        return
    if jobs == 1:
        def start(trial, settings):
            return outcome(lambda: evaluate(trial.number, settings, data, report_to(trial)))
    else:
        context = multiprocessing.get_context("spawn")  # no fork of a process whose thread pools are running
        processes = ProcessPoolExecutor(jobs, context, initializer=_start_process,
                                        initargs=(data, max(1, (os.cpu_count() or 1) // jobs)))
        manager = context.Manager()

        def start(trial, settings):
            reports, answers = manager.Queue(), manager.Queue()
            future = processes.submit(_evaluate_in_process, evaluate, trial.number, settings, reports, answers)
            return _serve(trial, future, reports, answers)

    try:
        with ThreadPoolExecutor(jobs) as threads:
            while count > 0:
                batch = [study.ask() for _ in range(min(jobs, count))]
                proposals = [(trial, propose(trial)) for trial in batch]
                outcomes = list(threads.map(lambda proposal: start(*proposal), proposals))
                for trial, (state, value) in zip(batch, outcomes):
                    study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
                    finished()
                errors = [value for _, value in outcomes if isinstance(value, BaseException)]
                if errors:
                    raise errors[0]
                count -= len(batch)
    finally:
        if jobs > 1:
            processes.shutdown(cancel_futures=True)
            manager.shutdown()


def report_to(trial) -> Callable[[float, int], None]:
    """A trial's ``report(score, epoch)``: the score goes to the search, and the pruner may stop the trial."""
    import optuna

    def report(score: float, epoch: int) -> None:
        trial.report(score, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"epoch {epoch}: {score:.4g}")

    return report


def outcome(evaluate: Callable[[], float]) -> tuple[Any, Any]:
    """A trial's state and its score (or the error that ended it)."""
    import optuna
    from optuna.trial import TrialState

    try:
        return TrialState.COMPLETE, evaluate()
    except optuna.TrialPruned:
        return TrialState.PRUNED, None
    except DivergenceError:
        return TrialState.FAIL, None
    except BaseException as error:  # told as failed, raised after the round
        return TrialState.FAIL, error


def _serve(trial, future, reports, answers) -> tuple[Any, Any]:
    """Relay a trial's reports from its process to the search and the pruner's answers back, until it ends."""
    from optuna.trial import TrialState

    while True:
        try:
            score, epoch = reports.get(timeout=0.5)
        except queue.Empty:
            if future.done():
                break
            continue
        trial.report(score, epoch)
        answers.put(trial.should_prune())
    try:
        return future.result()
    except Exception as error:  # the process died, or the outcome could not be sent back
        return TrialState.FAIL, BeyondBPError(f"trial {trial.number} ended with {type(error).__name__}: {error}")


def _start_process(data: Any, threads: int) -> None:
    global _DATA
    _DATA = data
    torch.set_num_threads(threads)
    show_warnings_in_one_line()


def _evaluate_in_process(evaluate: Callable, number: int, settings: dict[str, Any], reports, answers):
    import optuna

    def report(score: float, epoch: int) -> None:
        reports.put((score, epoch))
        if answers.get():
            raise optuna.TrialPruned(f"epoch {epoch}: {score:.4g}")

    return outcome(lambda: evaluate(number, settings, _DATA, report))
