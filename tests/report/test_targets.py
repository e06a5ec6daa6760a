"""Several targets compared and a front per batch size, from data whose answers are worked out
by hand (the measuring side is tests/test_targets.py and the compare run in docs/targets.md)."""

from __future__ import annotations

import optuna
import pandas as pd
from optuna.trial import TrialState, create_trial

from search.report import build_report
from search.report.batches import batch_fronts, pareto_mask
from search.report.page import page
from search.report.targets import (
    differ_words,
    front_table,
    render_markdown,
    summary_lines,
    winners_differ,
)
from tests.report.conftest import BASE, hand_built, record


def test_pareto_mask_keeps_the_undominated_rows():
    df = pd.DataFrame({"accuracy": [0.9, 0.8, 0.95, 0.85], "p50": [2.0, 1.0, 3.0, 2.5]})
    assert pareto_mask(df) == [True, True, True, False]  # the last is beaten by the first


def _two_batches() -> optuna.Study:
    """Three trials measured at batch 1 and 32: at batch 1 all are on the front; at batch 32
    trial 1 is slower than trial 2 at a lower accuracy, so it drops off."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    base = {**BASE, "measurement": {"latency": [
        {"batch_size": 1, "p50_ms": 10.0}, {"batch_size": 32, "p50_ms": 200.0}]}}  # fmt: skip
    study.set_user_attr("baseline", base)
    for acc, lat1, lat32 in ((0.95, 5.0, 100.0), (0.90, 4.0, 90.0), (0.93, 6.0, 50.0)):
        rec = record(acc, lat1, 10.0, 0.3)
        rec["measurement"]["latency"].append({"batch_size": 32, "p50_ms": lat32})
        study.add_trial(
            create_trial(state=TrialState.COMPLETE, values=[acc, lat1], user_attrs={"record": rec})
        )
    return study


def test_a_front_per_further_batch_size():
    fronts = batch_fronts(_two_batches())
    assert list(fronts) == [32]
    front = fronts[32]
    assert list(front.trial) == [2, 0]  # fastest first; trial 1 is dominated at batch 32
    assert front.speedup.iloc[0] == 200.0 / 50.0
    assert batch_fronts(hand_built()) == {}  # one batch size: no extra front


def test_the_page_shows_the_front_at_each_further_batch_size():
    html = page(build_report(_two_batches()), figs={})
    assert "Pareto trials at batch 32" in html and "4.00x" in html


ROWS = [
    {"seed": 0, "measured_on": "cpu", "winner_of": "cpu", "trial": 3, "relative": 1.0,
     "ci": [1.0, 1.0], "speedup": 2.0, "speedup_ci": [1.9, 2.1], "accuracy": 0.9,
     "rounds": 60, "busy": False},
    {"seed": 0, "measured_on": "cpu", "winner_of": "openvino", "trial": 5, "relative": 1.3,
     "ci": [1.2, 1.4], "speedup": 2.0 / 1.3, "speedup_ci": None, "accuracy": 0.88,
     "rounds": 60, "busy": True},
    {"seed": 1, "measured_on": "cpu", "winner_of": "openvino", "trial": 2, "relative": 0.98,
     "ci": [0.95, 1.01], "speedup": 2.1, "speedup_ci": None, "accuracy": 0.9,
     "rounds": 60, "busy": False},
]  # fmt: skip


def test_summary_says_how_much_slower_the_other_winner_is_and_how_sure():
    (line,) = summary_lines(ROWS)
    assert line.startswith("on cpu, openvino's winner takes 1.14x the time of cpu's own winner")
    assert "slower in 1, faster in 0, not distinguishable in 1 of 2 seed(s)" in line
    assert "seed 0: 1.30 [1.20, 1.40]; seed 1: 0.98 [0.95, 1.01]" in line


def _one_winner(name: str, path, ratio: float) -> optuna.Study:
    study = optuna.create_study(study_name=name, directions=["maximize", "minimize"])
    rec = record(0.9, 1.0, 1.0, ratio, measured_onnx=str(path))
    study.add_trial(create_trial(state=TrialState.COMPLETE, values=[0.9, 1.0],
                                 user_attrs={"record": rec}))  # fmt: skip
    return study


def test_winners_differ_by_config_and_by_file(tmp_path):
    (tmp_path / "a.onnx").write_bytes(b"same")
    (tmp_path / "b.onnx").write_bytes(b"same")
    (tmp_path / "c.onnx").write_bytes(b"other weights")
    a = _one_winner("a", tmp_path / "a.onnx", 0.3)
    same = winners_differ({"cpu": a, "ov": _one_winner("b", tmp_path / "b.onnx", 0.3)},
                          {"cpu": 0, "ov": 0})  # fmt: skip
    assert same["same_config"] and same["same_file"]
    retrained = winners_differ({"cpu": a, "ov": _one_winner("c", tmp_path / "c.onnx", 0.3)},
                               {"cpu": 0, "ov": 0})  # fmt: skip
    assert retrained["same_config"] and not retrained["same_file"]
    assert differ_words(retrained).startswith("the same search parameters and sizes")
    other = winners_differ({"cpu": a, "ov": _one_winner("d", tmp_path / "c.onnx", 0.5)},
                           {"cpu": 0, "ov": 0})  # fmt: skip
    assert not other["same_config"] and not other["same_size"]
    assert differ_words(other).startswith("different configurations (cpu: 700 parameters")
    assert differ_words(same) == "identical files"


def test_the_markdown_has_each_front_the_cross_table_and_the_summary():
    study = hand_built(name="cpu-study")
    text = render_markdown(
        title="Targets compared",
        studies={"cpu/0": study},
        winners={"cpu/0": {"trial": 1, "reason": "the knee"}},
        rows=ROWS,
        notes=["seed 0: the winners are different configurations"],
    )
    assert "### cpu/0 (cpu-study)" in text
    assert len(front_table(study)) == 4  # the hand-built study's front (trials 0-3)
    assert "| 0 | cpu | openvino (5) | 1.300 [1.20, 1.40] | 1.54x  | 0.8800 | 60 | yes |" in text
    assert "## Summary" in text and "note: seed 0: the winners are different" in text
