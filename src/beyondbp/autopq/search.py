"""AutoPQ-default's search: only the sampling spread σ, by a tree-structured Parzen estimator (Optuna's
TPE sampler, seeded) on the validation CRPS, at most ``trials`` trials, stopping early when the best value
has not improved for ``patience`` trials (Meisenbacher et al. 2024: σ in 0.01–3, at most 100 trials)."""

from __future__ import annotations

from collections.abc import Callable

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
