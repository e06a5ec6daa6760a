"""The bad inputs of tests/test_bad_inputs.py: files each case needs, and a study to spoil.

Each case is ``(id, argv, needle)``: ``argv`` may hold ``{w}`` (the case's scratch folder, where
its files lie) and ``{data}`` (tests/data); ``needle`` is a piece of the one line expected.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import optuna
from optuna.trial import TrialState, create_trial

from tests.conftest import DATA

TINY = ["--space", f"{DATA}/tiny_space.yaml", "--hw", f"{DATA}/tiny_cpu.yaml"]
RUN = ["run", "--task", "tests.tiny_task:make_random_task", *TINY, "--results-dir", "{w}/res"]

PROFILE = "providers: [{name: CPUExecutionProvider}]\n"
# name -> text of a file the cases below refer to as {w}/<name>.
FILES: dict[str, str | bytes] = {
    "p_not_yaml.yaml": "providers: [unclosed\n",
    "p_list.yaml": "- CPUExecutionProvider\n",
    "p_unknown_key.yaml": PROFILE + "provders: []\n",
    "p_bad_provider.yaml": "providers: [{name: CUPExecutionProvider}]\n",
    "p_no_provider.yaml": "providers: []\n",
    "p_all_optional.yaml": "providers: [{name: CPUExecutionProvider, optional: true}]\n",
    "p_batch_zero.yaml": PROFILE + "batch_sizes: [0]\n",
    "p_batch_empty.yaml": PROFILE + "batch_sizes: []\n",
    "p_threads.yaml": PROFILE + "threads: {intra_op: -1}\n",
    "p_min_runs.yaml": PROFILE + "measure: {min_runs: 0}\n",
    "p_max_runs.yaml": PROFILE + "measure: {min_runs: 50, max_runs: 10}\n",
    "p_session_key.yaml": PROFILE + 'session_config: {session.disable_cpu_ep_falback: "1"}\n',
    "p_session_value.yaml": PROFILE + "session_config: {session.disable_prepacking: [1]}\n",
    "p_cpu_options.yaml": "providers: [{name: CPUExecutionProvider, options: {use_arena: 0}}]\n",
    "p_arch.yaml": PROFILE + "arch: riscv\n",
    "p_agent_url.yaml": PROFILE + "agent: ftp://target:21\n",
    "p_round_to.yaml": PROFILE + "round_to: 0\n",
    "p_budget.yaml": PROFILE + "budgets: {latency_ms: -1}\n",
    "p_precision.yaml": PROFILE + "precisions: {layer: [int3]}\n",
    "p_binary.yaml": b"\xff\xfe\x00garbage\x80\x81",
    "p_name_path.yaml": PROFILE + "name: ../../escaped\n",
    "s_not_yaml.yaml": "prune: [this is not a mapping\n",
    "s_unknown_key.yaml": "prune: {ratoi: 0.3}\n",
    "s_ratio.yaml": "prune: {ratio: {low: 0.2, high: 1.0}}\n",
    "s_epochs.yaml": "distill: {epochs: 0}\n",
    "s_sampler.yaml": "search: {sampler: bayes}\n",
    "s_unsupported.yaml": "quantize: {precisions: [fp16, int4]}\n",
    "s_no_precisions.yaml": "quantize: {precisions: []}\n",
    "s_trials.yaml": "search: {trials: 0}\n",
    "s_scalar.yaml": "42\n",
    "s_low_high.yaml": "prune: {ratio: {low: 0.5, high: 0.2}}\n",
    "t_syntax.py": "def make_task(*, seed, cache_dir)\n    return None\n",
    "t_raises.py": "raise RuntimeError('module-level failure on import')\n",
    "json.py": "def make_task(*, seed, cache_dir):\n    return None\n",
    "t_none.py": "def make_task(*, seed, cache_dir):\n    return None\n",
    "t_factory_raises.py": "def make_task(*, seed, cache_dir):\n    raise ValueError('no data')\n",
    "t_no_function.py": "x = 1\n",
    "task_not_yaml.yaml": "task: [digits\n",
    "task_list.yaml": "- digits\n",
    "task_unknown_option.yaml": "task: digits\nlimit: 5\n",
    "weights_garbage.pt": b"this is not a checkpoint",
    "a_file": "I am a file, not a folder\n",
    "token_empty": "\n",
    "token_two_lines": "first-long-token\nsecond-long-token\n",
}


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED_bad_inputs",))


def write_files(w: Path) -> None:
    """Every file of :data:`FILES` into ``w``, a CIFAR-10 folder whose first batch runs code
    when unpickled, a pickled module as weights, an empty folder and a world-readable one."""
    import numpy as np
    import torch

    for name, text in FILES.items():
        path = w / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    cifar = w / "cifar_evil"
    cifar.mkdir()
    good = {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 0, 1]}
    for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (cifar / f).write_bytes(pickle.dumps(_Evil() if f == "data_batch_1" else good))
    (w / "cifar_good").mkdir()
    for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (w / "cifar_good" / f).write_bytes(pickle.dumps(good))
    torch.save(_Evil(), w / "weights_evil.pt")
    torch.save(torch.nn.Linear(2, 2).state_dict(), w / "weights_linear.pt")
    (w / "cifar_partial").mkdir()
    (w / "cifar_partial" / "data_batch_1").write_bytes(pickle.dumps(good))
    torch.save(torch.nn.Linear(2, 2), w / "weights_module.pt")
    (w / "empty").mkdir()
    (w / "open_dir").mkdir(mode=0o755)
    (w / "open_dir").chmod(0o755)
    (w / "out_full").mkdir()
    (w / "out_full" / "README.md").write_text("my own notes - do not lose\n")


def make_study(root: Path) -> Path:
    """``root/studies/s/study.db``: a study with one completed trial whose artifacts are
    missing (0), one whose measured file changed (1), one failed (2). Returns its folder."""
    folder = root / "studies" / "s"
    (folder / "artifacts" / "1").mkdir(parents=True)
    (folder / "artifacts" / "1" / "model.onnx").write_bytes(b"changed after measurement")
    study = optuna.create_study(
        study_name="s",
        storage=f"sqlite:///{folder / 'study.db'}",
        directions=["maximize", "minimize"],
    )
    for n in range(2):
        art = str(folder / "artifacts" / str(n))
        record = {"artifacts": art, "onnx": f"{art}/model.onnx", "measurement": {"size_bytes": 9}}
        study.add_trial(
            create_trial(
                state=TrialState.COMPLETE, values=[0.5, 1.0], user_attrs={"record": record}
            )
        )
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"fail_reason": "boom"}))
    return folder


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root``: symbolic links by their target, folders as ``dir``, files by
    their sha256."""
    import os

    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = f"link:{os.readlink(p)}"
        else:
            out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out
