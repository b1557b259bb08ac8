"""The search for the sampler's parameters on the validation CRPS.

AutoPQ-default's (:func:`search_sampler`): a tree-structured Parzen estimator (Optuna's TPE sampler, seeded;
multivariate where a sampler has several parameters), at most ``trials`` trials (Meisenbacher et al. 2024:
σ in 0.01–3, at most 100 trials). It stops at the authors' plateau (the standard deviation of the best
``top`` scores at most ``std`` for ``patience`` trials in a row) for the faithful sampler, and otherwise
when the best has not improved for ``patience`` trials. AutoPQ-advanced's nested search gives each
candidate forecaster its own σ by the cheaper :func:`line_search_sigma`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..errors import BeyondBPError
from .samplers import PLATEAU, LatentSampler

SIGMA_RANGE = (0.01, 3.0)


def plateaued(values: list[float], streak: int) -> int:
    """The authors' plateau count after one more trial: ``streak + 1`` where the best ``top`` of ``values`` lie
    within ``std`` (their standard deviation), else 0. The search stops when it reaches ``patience``."""
    best = sorted(values)[: PLATEAU["top"]]
    return streak + 1 if len(best) == PLATEAU["top"] and np.std(best) <= PLATEAU["std"] else 0


def search_sampler(score: Callable[[dict[str, Any]], float], sampler: LatentSampler,
                   sigma_range: tuple[float, float] = SIGMA_RANGE, trials: int = 100, patience: int = 20,
                   seed: int = 0, progress: bool = True) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The parameters of ``sampler`` with the lowest ``score`` and every trial (``trial``, the parameters,
    ``crps``) in order."""
    import optuna

    low, high = sigma_range
    if not 0 < low < high:
        raise BeyondBPError(f"sigma range must satisfy 0 < low < high, got {low} to {high}")
    if trials < 1 or patience < 1:
        raise BeyondBPError(f"trials and patience must be at least 1, got {trials} and {patience}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed, multivariate=True))
    records: list[dict[str, Any]] = []
    best_trial, streak, parameters = 0, 0, {}
    bar = tqdm(total=trials, desc=f"{sampler.name} search", disable=None if progress else True, leave=False)
    with bar:
        for number in range(trials):
            trial = study.ask()
            chosen = sampler.suggest(trial, sigma_range)
            value = score(chosen)
            study.tell(trial, value)
            records.append({"sampler": sampler.name, "trial": number, **trial.params, "crps": value})
            if value <= study.best_value:
                best_trial, parameters = number, chosen
            bar.update()
            bar.set_postfix({"crps": f"{study.best_value:.4g}"})
            streak = plateaued([r["crps"] for r in records], streak)
            if streak >= PLATEAU["patience"] if sampler.plateau_stop else number - best_trial >= patience:
                break
    return parameters, records


def line_search_sigma(score: Callable[[float], float], sigma_range: tuple[float, float] = SIGMA_RANGE,
                      tolerance: float = 0.05) -> tuple[float, float]:
    """The σ with the lowest ``score(σ)`` by a bounded scalar search on ``log σ`` (Brent's method, scipy's
    ``minimize_scalar``), stopping when the bracket is narrower than ``tolerance`` in ``log σ``: about a
    dozen scores for σ in 0.01–3, where :func:`search_sigma` spends up to 100. For AutoPQ-advanced's nested
    search, where every candidate forecaster needs its own σ. Returns ``(σ, score)``; the CRPS as a
    function of σ is smooth (common random numbers) and in practice has one minimum."""
    from scipy.optimize import minimize_scalar

    low, high = sigma_range
    if not 0 < low < high:
        raise BeyondBPError(f"sigma range must satisfy 0 < low < high, got {low} to {high}")
    seen: dict[float, float] = {}

    def on_log_scale(log_sigma: float) -> float:
        seen[float(np.exp(log_sigma))] = value = score(float(np.exp(log_sigma)))
        return value

    minimize_scalar(on_log_scale, bounds=(np.log(low), np.log(high)), method="bounded",
                    options={"xatol": tolerance})
    sigma = min(seen, key=seen.get)
    return sigma, seen[sigma]
