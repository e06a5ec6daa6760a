"""The study's first trials: the pipeline an engineer builds by hand, one per prune ratio.

Without this a study starts with random trials, and on a budget of 15-50 trials the sampler
spends a third of it before it learns where the front is. A warm start enqueues, for each ratio
of ``search.study.warm_start``, one trial that does what a user does with two tools in a row:
torch-pruning at that prune ratio, distillation with the largest epoch budget of the space and
middle-of-the-road settings (AdamW's lr at the geometric middle of its range, temperature and
KD weight at :class:`~search.compress.distill.DistillConfig`'s defaults), no low-rank, and the
sensitivity pass's precision plan (every group that loses at most ``tolerance`` at the lowest
precision, MinMax calibration). They are the benchmark's ``sequential`` recipes, so the search
starts at the bar it must clear, and the sampler models the front from there (warm-starting a
Bayesian optimiser with known-good configurations: Feurer et al., "Initializing Bayesian
Hyperparameter Optimization via Meta-Learning", AAAI 2015; here the configurations are the
hand-built recipes, not meta-learned ones).

Where the space searches the channel ranking (``prune.importance``), the hand pipeline ranks by
L2 and one more trial follows per other ranking, at the smallest warm-start ratio: the sampler
then starts with an observation of each ranking where it is most likely to keep the metric (on
the segmentation example every L2-pruned student collapsed while LAMP at 0.3 kept the teacher's
mIoU; a study of 12 trials whose warm start was L2 only never sampled LAMP).

Only searched parameters are fixed (a fixed range or single choice is no parameter); a ratio
outside the space's ``prune.ratio`` range is left out. Parameters not named here (the low-rank
kind and rank, which do nothing without low-rank) are the sampler's.

Example:
    >>> from search.config import load_space
    >>> space = load_space("default")
    >>> [(p["prune_ratio"], p["prune_importance"]) for p in warm_start_params(space, {})]
    [(0.3, 'l2'), (0.5, 'l2'), (0.7, 'l2'), (0.3, 'lamp')]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

    from search.config import Space


def warm_start_params(
    space: Space, seed: Mapping[str, Any], choices: Mapping[str, list[str]] | None = None
) -> list[dict[str, Any]]:
    """Optuna params of the warm-start trials of ``space``, in order; ``seed`` is the
    sensitivity pass's precision plan (:func:`search.compress.quantize.sensitivity.seed_params`),
    and ``choices`` the quantization choices the profile leaves (``QuantizeSpace.choices``).
    Each step says what the hand-built pipeline fixes of it (``Step.hand_pipeline``).

    Without ratios (``warm_start: []``) or with a fixed prune ratio this is the one seeded
    trial, ``[seed]`` (nothing when ``seed`` is empty too).
    """
    shared: dict[str, Any] = {}
    for step in space.steps:
        if step.hand_pipeline is not None:
            shared.update(step.hand_pipeline(space.section(step.name), choices))
    shared.update(seed)
    r = space.prune.ratio
    ratios = [x for x in space.search.warm_start if r.low <= x <= r.high]
    if r.low == r.high or not ratios:
        return [dict(seed)] if seed else []
    hand = [{"prune_ratio": x, **shared} for x in ratios]
    others = [i for i in space.prune.importance if i != space.prune.hand_importance]
    smallest = min((x for x in ratios if x > 0), default=None)
    if smallest is None:
        return hand
    return hand + [{"prune_ratio": smallest, **shared, "prune_importance": i} for i in others]


def enqueued(study: optuna.Study) -> list[dict[str, Any]]:
    """The warm-start params ``study`` enqueued (a study from before warm starts: its one seed)."""
    attrs = study.user_attrs
    if "warm_start" in attrs:
        return list(attrs["warm_start"])
    seed = attrs.get("quantize_seed")
    return [seed] if seed else []
