"""The torch-pruning internals our guards and repairs replace or rely on are the ones they were
checked against; the patches hold only inside the block.

When a torch-pruning release changes any of these functions, this test fails on purpose: re-run
the checks of the repairs (tests/compress/test_prune_faults.py, test_group_lossless.py and the
zoo benchmark), then update the digests below and the pin in pyproject.toml.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect

import pytest
import torch_pruning as tp

from search.compress.prune.patches import PATCHED, guarded_torch_pruning

# The library functions the repairs call or whose behaviour they assume.
USED = (
    ("torch_pruning.dependency.shape_infer", "infer_in_channels_recursively"),
    ("torch_pruning.dependency.shape_infer", "infer_out_channels_recursively"),
    ("torch_pruning.dependency.index_mapping", "update_index_mapping"),
    ("torch_pruning.dependency.graph", "DependencyGraph._detect_unwrapped_parameters"),
    ("torch_pruning.pruner.algorithms.base_pruner", "BasePruner.step"),
    ("torch_pruning.pruner.algorithms.base_pruner", "BasePruner._prune"),
    ("torch_pruning.pruner.algorithms.base_pruner", "BasePruner._get_channel_groups"),
)
# sha256 of the source of each, torch-pruning 1.6.0 (= 1.6.1: the same code).
_IM, _GR = "torch_pruning.dependency.index_mapping", "torch_pruning.dependency.graph"
_SI, _BP = "torch_pruning.dependency.shape_infer", "torch_pruning.pruner.algorithms.base_pruner"
CHECKED = {
    (_IM, "update_concat_index_mapping"): "85d0106aa53f5783",
    (_IM, "update_split_index_mapping"): "a00a30c44d0a2966",
    (_IM, "update_reshape_index_mapping"): "26114b1b6c49ebf2",
    (_IM, "update_unbind_index_mapping"): "eea8964c5d52dae2",
    (_IM, "update_expand_index_mapping"): "9479a14016ee0f48",
    (_IM, "update_slice_index_mapping"): "f3df12cddbb63bac",
    (_IM, "_FlattenIndexMapping.__call__"): "76cbf7256f4cda7e",
    (_IM, "update_index_mapping"): "dbadfad5a25ee156",
    (_GR, "DependencyGraph.build_dependency"): "884b30d48392c771",
    (_GR, "DependencyGraph.get_all_groups"): "323d921e01e364f7",
    (_GR, "DependencyGraph._detect_unwrapped_parameters"): "279ffd9d5575a427",
    (_SI, "infer_in_channels_recursively"): "a896722bf2d643be",
    (_SI, "infer_out_channels_recursively"): "f6e13d95acd1784a",
    (_BP, "BasePruner.step"): "c83679501c0b018e",
    (_BP, "BasePruner._prune"): "d2f3a3dca73e20b7",
    (_BP, "BasePruner._get_channel_groups"): "6ac17db1a7fde51b",
}


def _resolve(module: str, name: str):
    obj = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _digest(obj) -> str:
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16]


def test_every_patched_and_used_internal_is_pinned():
    assert set(CHECKED) == set(PATCHED) | set(USED)


@pytest.mark.parametrize("key", sorted(CHECKED), ids=lambda k: k[1])
def test_the_internal_is_the_one_the_repairs_were_checked_against(key):
    got = _digest(_resolve(*key))
    assert got == CHECKED[key], (
        f"torch-pruning {tp.__version__} changed {key[0]}.{key[1]}: the guards and repairs in "
        "search/compress/prune/patches.py, tp_graph.py and tp_modules.py were checked against "
        "1.6.0/1.6.1; re-run their checks before updating this digest"
    )


def test_version_is_in_the_pinned_range():
    major, minor = (int(p) for p in tp.__version__.split(".")[:2])
    assert (major, minor) == (1, 6), tp.__version__


def test_patches_hold_inside_the_block_only_even_after_an_error():
    before = {key: _resolve(*key) for key in PATCHED}
    with pytest.raises(RuntimeError, match="inside"), guarded_torch_pruning():
        inside = {key: _resolve(*key) for key in PATCHED}
        assert all(inside[k] is not before[k] for k in PATCHED)
        raise RuntimeError("inside")
    assert {key: _resolve(*key) for key in PATCHED} == before
