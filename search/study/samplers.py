"""The Optuna samplers a study can use (``search.sampler`` in the space file), built in one place.

- ``tpe``: multi-objective TPE (``multivariate=True``), random for ``startup_trials`` first.
- ``gp``: Gaussian-process Bayesian optimisation (:class:`optuna.samplers.GPSampler`): log
  expected hypervolume improvement for several objectives, the profile's budgets as constraints
  (set per trial with ``Trial.set_constraint``), random search for the first ``startup_trials``.
  It needs ``torch`` and ``scipy`` (both are dependencies of this package). Parameters that exist
  only in some trials (low-rank ``kind``/``rank_ratio`` when ``apply`` is searched) fall outside
  the GP's intersection space and are sampled at random, as Optuna documents.
- ``nsga2``: the genetic algorithm NSGA-II (its population needs far more trials than a budget
  of 15-50 gives it; kept for comparison).
- ``random``: uniform random search, the baseline every other sampler must beat.

OptunaHub's ``AutoSampler`` is not offered: ``optunahub.load_module`` downloads the sampler's
code from GitHub when the study starts, and nothing this tool runs may download (or run
downloaded) code at run time. ``optunahub`` is not a dependency either.

Example:
    >>> from search.config import SearchSettings
    >>> type(build_sampler(SearchSettings(sampler="gp"), seed=0, n_existing=0)).__name__
    'GPSampler'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import optuna

if TYPE_CHECKING:
    from search.config import SearchSettings

SAMPLERS = ("tpe", "gp", "nsga2", "random")


def build_sampler(
    settings: SearchSettings, *, seed: int, n_existing: int
) -> optuna.samplers.BaseSampler:
    """The sampler ``settings.sampler`` names, seeded with ``seed + n_existing``.

    The study builds one per trial with ``n_existing`` the trial's number: a resumed study or a
    second worker does not replay the same random suggestions, and a study run by one worker
    repeats with its seed. The samplers keep no state between trials that matters: they read
    the finished trials from the storage (GPSampler's cached kernel parameters only speed up
    its next fit).

    Raises:
        ValueError: for a name not in :data:`SAMPLERS` (the space's schema rejects it first).
    """
    s = seed + n_existing
    name = settings.sampler
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=s)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=s)
    if name == "gp":
        return optuna.samplers.GPSampler(
            seed=s,
            n_startup_trials=settings.startup_trials,
            # Conditional low-rank parameters are sampled at random by design; one warning per
            # parameter per trial would bury the trial lines.
            warn_independent_sampling=False,
        )
    if name == "tpe":
        return optuna.samplers.TPESampler(
            seed=s, n_startup_trials=settings.startup_trials, multivariate=True
        )
    raise ValueError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}")
