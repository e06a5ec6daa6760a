"""Per-group prune scales in a study: the groups resolved against the model, the sensitivity pass
measured once, its scales in the warm start, each trial's group ratios recorded."""

from __future__ import annotations

import pytest
import yaml

from search.config import load_profile, load_space


def test_prune_groups_quantize_resolves_to_the_precision_groups_that_can_be_pruned(tmp_path):
    from search.config import SPACES_DIR
    from search.study.model_checks import check_model
    from tests.tiny_task import make_task

    data = yaml.safe_load((SPACES_DIR / "default.yaml").read_text())
    data["prune"]["groups"] = "quantize"
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    task = make_task(seed=0, cache_dir=tmp_path)
    checked = check_model(task, load_space(str(path)))
    prune, quantize = checked.space.prune, checked.space.quantize
    # Derived precision groups; the classifier is the output layer, so it gets no prune scale.
    assert "fc" in quantize.groups and "fc" not in prune.group_names
    assert prune.group_names and set(prune.group_names) < set(quantize.groups)
    assert all(prune.groups[g] == quantize.groups[g] for g in prune.group_names)


@pytest.mark.slow
def test_a_study_seeds_its_warm_start_from_the_pruning_sensitivity_pass(
    teacher_cache, tiny_space, tiny_profile, tmp_path
):
    from search.study import StudySpec, run_study

    data = yaml.safe_load(tiny_space.read_text())
    data["prune"]["groups"] = "quantize"
    data["search"]["warm_start"] = [0.4]
    path = tmp_path / "groups.yaml"
    path.write_text(yaml.safe_dump(data))
    spec = StudySpec(
        task="tests.tiny_task:make_task",
        space=load_space(str(path)),
        profile=load_profile(str(tiny_profile)),
        study_name="groups",
        results_dir=teacher_cache,
    )
    study = run_study(spec, trials=2, progress=False)
    sens, seed = study.user_attrs["prune_sensitivity"], study.user_attrs["prune_seed"]
    groups = list(sens["groups"])
    assert groups and set(seed) == {f"prune_scale_{g}" for g in groups}
    for row in sens["groups"].values():
        assert {"metric", "drop", "saved", "relative_latency"} <= set(row)
    (warm,) = study.user_attrs["warm_start"]
    assert warm["prune_ratio"] == 0.4 and all(warm[k] == v for k, v in seed.items())
    first = study.trials[0]
    record = first.user_attrs["record"]
    assert record["config"]["prune"]["scales"] == {g: seed[f"prune_scale_{g}"] for g in groups}
    ratios = record["steps"]["prune"]["group_ratios"]
    assert ratios == pytest.approx({g: min(0.4 * seed[f"prune_scale_{g}"], 0.9) for g in groups})
    assert all(f"prune_scale_{g}" in study.trials[1].params for g in groups)
