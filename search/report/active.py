"""Which of a trial's searched parameters acted, from what its record says.

Optuna suggests every parameter of the space in every trial (a fixed set keeps multivariate
TPE modelling them jointly), but some change nothing: low-rank's kind and ratio with low-rank
off, the calibration of a plan with no integer group, the precision of a group that had no
layers in the measured graph. The report shows only those that acted: in ``trials.csv`` the
others are empty cells, and the figures leave them out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from optuna.trial import FrozenTrial

from search.config import TrialConfig
from search.errors import SearchError
from search.record import TrialRecord

PRECISION = "precision_"


def acted(t: FrozenTrial, rec: TrialRecord | None) -> dict[str, Any]:
    """The trial's Optuna parameters that acted, by name.

    Each step's part of the recorded config says which of its parameters did
    (:meth:`~search.config.TrialConfig.active`); a group's precision is dropped too when the
    trial was quantized and the audit of the measured graph (``record.ran``) found no layer of
    that group. A trial without a readable config (failed before it had one, another version's
    steps) keeps all its parameters.
    """
    config = rec.config if rec is not None else t.user_attrs.get("config")
    if not isinstance(config, dict):
        return dict(t.params)
    try:
        active = TrialConfig.from_dict(config).active()
    except (TypeError, ValueError, SearchError):  # a config of another version's steps
        return dict(t.params)
    ran = rec.ran if rec is not None and (rec.quantize or {}).get("quantized") else {}
    return {
        k: v
        for k, v in t.params.items()
        if k in active and not (ran and k.startswith(PRECISION) and k[len(PRECISION) :] not in ran)
    }


def acted_config(config: Mapping[str, Any], params: Mapping[str, Any], acting: Mapping) -> dict:
    """``config`` (a trial's ``TrialConfig.to_dict()``) without what did not act: a step that
    was off (``apply: false``) keeps only ``apply``; a setting named by a parameter that was
    suggested (in ``params``) but did not act (not in ``acting``), as ``<key>`` or
    ``<step>_<key>``, is left out, and so is a group's entry of a per-group table whose
    parameter did not act (a group's precision, prune's scales at ratio 0); a table left
    empty goes too."""
    idle = {k for k in params if k not in acting}
    out: dict[str, Any] = {}
    for step, part in config.items():
        if not isinstance(part, Mapping):
            out[step] = part
            continue
        if part.get("apply") is False:
            out[step] = {"apply": False}
            continue
        kept: dict[str, Any] = {}
        for key, value in part.items():
            if key in idle or f"{step}_{key}" in idle:
                continue
            if isinstance(value, Mapping) and value:
                value = {g: v for g, v in value.items() if not _idle_group(step, key, g, idle)}
                if not value:
                    continue
            kept[key] = value
        out[step] = kept
    return out


def _idle_group(step: str, key: str, group: object, idle: set[str]) -> bool:
    """Whether a per-group entry's parameter (``<key>_<group>`` such as ``precision_fc``, or
    ``<step>_..._<group>`` such as ``prune_scale_fc``) was suggested but did not act."""
    return f"{key}_{group}" in idle or any(
        k.startswith(f"{step}_") and k.endswith(f"_{group}") for k in idle
    )
