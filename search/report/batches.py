"""A front per batch size: where a profile lists several batch sizes (``batch_sizes: [1, 32]``),
only the first is the latency objective, but every trial measured them all. The trade-off at
another batch size can differ (int8 pays off more at batch 32 on the CPU provider), so the report
shows the Pareto set of (metric up, p50 at that batch size down) over the completed trials,
with the speedup over the baseline at the same batch size.

These latencies are as measured in each trial's own window (not paired with the baseline: only
the first batch size is), so on a busy machine they carry its load; trials marked busy say so.

Example:
    >>> import pandas as pd
    >>> pareto_mask(pd.DataFrame({"accuracy": [0.9, 0.8, 0.95], "p50": [2.0, 1.0, 3.0]}))
    [True, True, True]
"""

from __future__ import annotations

import optuna
import pandas as pd
from optuna.trial import TrialState

from search.record import TrialRecord, baseline_of

COLUMNS = ["trial", "accuracy", "p50", "speedup", "busy"]


def pareto_mask(df: pd.DataFrame) -> list[bool]:
    """Which rows no other row beats on both ``accuracy`` (higher) and ``p50`` (lower)."""
    acc, lat = list(df.accuracy), list(df.p50)
    return [
        not any(
            (acc[j] >= acc[i] and lat[j] <= lat[i]) and (acc[j] > acc[i] or lat[j] < lat[i])
            for j in range(len(df))
        )
        for i in range(len(df))
    ]


def batch_fronts(study: optuna.Study) -> dict[int, pd.DataFrame]:
    """Batch size -> its front (:data:`COLUMNS`, fastest first), for every batch size after the
    first that the trials measured; ``{}`` for a profile with one batch size."""
    baseline = baseline_of(study)
    base = {}
    if baseline is not None:
        for s in (baseline.measurement.get("latency") or [])[1:]:
            base[int(s["batch_size"])] = float(s["p50_ms"])
    rows: dict[int, list[dict[str, object]]] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        rec = TrialRecord.of(t)
        if rec is None:
            continue
        for s in (rec.measurement.get("latency") or [])[1:]:
            batch, p50 = int(s["batch_size"]), float(s["p50_ms"])
            speedup = base[batch] / p50 if batch in base and p50 > 0 else None
            rows.setdefault(batch, []).append(
                {
                    "trial": t.number,
                    "accuracy": rec.accuracy,
                    "p50": p50,
                    "speedup": speedup,
                    "busy": bool(rec.busy),
                }  # fmt: skip
            )
    fronts = {}
    for batch, found in sorted(rows.items()):
        df = pd.DataFrame(found, columns=COLUMNS)
        fronts[batch] = df[pareto_mask(df)].sort_values("p50").reset_index(drop=True)
    return fronts
