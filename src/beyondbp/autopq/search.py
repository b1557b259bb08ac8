"""The search for the sampling spread σ on the validation CRPS.

AutoPQ-default's (:func:`search_sigma`): a tree-structured Parzen estimator (Optuna's TPE sampler, seeded),
at most ``trials`` trials, stopping early when the best value has not improved for ``patience`` trials
(Meisenbacher et al. 2024: σ in 0.01–3, at most 100 trials). AutoPQ-advanced's nested search gives each
candidate forecaster its own σ by the cheaper :func:`line_search_sigma`."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from tqdm.auto import tqdm

from ..errors import BeyondBPError

SIGMA_RANGE = (0.01, 3.0)


def search_sigma(score: Callable[[float], float], trials: int = 100, sigma_range: tuple[float, float] = SIGMA_RANGE,
                 patience: int = 20, seed: int = 0, progress: bool = True) -> tuple[float, list[dict[str, float]]]:
    """The σ with the lowest ``score(σ)`` and every trial (``trial``, ``sigma``, ``crps``) in order."""
    import optuna

    low, high = sigma_range
    if not 0 < low < high:
        raise BeyondBPError(f"sigma range must satisfy 0 < low < high, got {low} to {high}")
    if trials < 1 or patience < 1:
        raise BeyondBPError(f"trials and patience must be at least 1, got {trials} and {patience}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
    records: list[dict[str, float]] = []
    best_trial = 0
    bar = tqdm(total=trials, desc="sigma search", disable=None if progress else True, leave=False)
    with bar:
        for number in range(trials):
            trial = study.ask()
            sigma = trial.suggest_float("sigma", low, high, log=True)
            value = score(sigma)
            study.tell(trial, value)
            records.append({"trial": number, "sigma": sigma, "crps": value})
            if value <= study.best_value:
                best_trial = number
            bar.update()
            bar.set_postfix({"best sigma": f"{study.best_params['sigma']:.3g}", "crps": f"{study.best_value:.4g}"})
            if number - best_trial >= patience:
                break
    return study.best_params["sigma"], records


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
