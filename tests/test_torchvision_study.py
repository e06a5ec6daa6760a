"""A torchvision model with the default space: groups derived from the model, trials that differ
in which layers run int8 (read from ONNX Runtime's optimized graph), and report labels that say
exactly that."""

from __future__ import annotations

import onnx
import pandas as pd
import pytest
from optuna.trial import TrialState

from search.config import load_profile, load_space
from search.core.ort_ops import INTEGER_WEIGHT_INPUT
from search.report import collect
from search.report.quantization import ran_summary
from search.study import StudySpec, run_study
from tests.conftest import DATA
from tests.test_cases import checkpoint, stripes

pytestmark = pytest.mark.slow


def _int8_groups(opt_graph: str, groups: dict[str, list[str]]) -> set[str]:
    """Groups with a layer whose weight an integer kernel reads, found from the graph alone."""
    graph = onnx.load(opt_graph, load_external_data=False).graph
    weights = {
        n.input[INTEGER_WEIGHT_INPUT[n.op_type]].removesuffix("_quantized")
        for n in graph.node
        if n.op_type in INTEGER_WEIGHT_INPUT
    }
    found = set()
    for group, patterns in groups.items():
        if any(w == p or w.startswith(p + ".") for w in weights for p in patterns):
            found.add(group)
    return found


def _one_prune_ratio(space):
    """The default space with one global prune ratio: this test is about precision groups, and
    per-group prune scales add dimensions that change what TPE picks for the reusing trial (with
    them its first pick repeated trial 0's all-int8 plan, an uncounted trial)."""
    return space.model_copy(update={"prune": space.prune.model_copy(update={"groups": {}})})


def test_resnet18_trials_differ_in_what_ran_int8_and_the_report_says_so(tmp_path):
    spec = StudySpec(
        task="imagefolder",
        task_options={
            "model": "resnet18",
            "weights": str(checkpoint("resnet18", tmp_path / "resnet18.pt")),
            "data": str(stripes(tmp_path / "imgs", per_class=12, size=32)),
            "image_size": 32,
        },
        space=_one_prune_ratio(load_space("default")),
        profile=load_profile(str(DATA / "tiny_cpu.yaml")),
        study_name="tv",
        results_dir=tmp_path / "results",
        seed=1,
    )
    # Five: the warm start's four recipes share the seeded plan; the fifth gives trial 0's
    # student another plan.
    study = run_study(spec, trials=5, progress=False)
    model = study.user_attrs["model"]
    groups = model["groups"]
    assert model["groups_source"] == "derived"
    assert list(groups)[0] == "conv1" and list(groups)[-1] == "fc" and len(groups) == 5
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 5, [t.user_attrs.get("fail_reason") for t in study.trials]
    ran = {}
    for t in done:
        rec = t.user_attrs["record"]
        assert set(rec["ran"]) == set(groups)  # every searched precision acts on real layers
        if rec["quantize"]["quantized"]:
            int8 = {g for g, label in rec["ran"].items() if label == "int8"}
            assert int8 == _int8_groups(rec["kernels"]["optimized_graph"], groups)
        ran[t.number] = tuple(sorted(rec["ran"].items()))
    assert len(set(ran.values())) >= 2, ran  # the trials differ in which layers ran int8
    table = collect(study).set_index("trial")
    for t in done:
        label = table.loc[t.number, "precision"]
        assert isinstance(label, str) and not pd.isna(label)
        assert label.startswith(ran_summary(t.user_attrs["record"]["ran"]))
