"""Export one trial: the exact ONNX file that was measured, a PyTorch checkpoint, its record.

What lands in the output folder:

- the measured ONNX file, byte for byte (``model.q.onnx`` for a quantized trial, else
  ``model.onnx``), plus the float ``model.onnx`` beside it when the measured file is another;
- ``model.pt2``: the float compressed model as a ``torch.export`` program, as the trial wrote
  it (:mod:`search.trial.programs`). It loads with torch alone
  (``torch.export.load(path).module()``), for inference or fine-tuning: no study, no ``search``
  package, no model class;
- ``trial.json``: configuration, measurements, profile, package versions, reproduction steps;
- ``reproduce.py`` and ``README.md``.

Export loads nothing that could run code: it copies the files, reads the ONNX graph's input
(protobuf) and the study (JSON in the storage). Trials written before ``model.pt2`` existed kept a
pickled ``model.pt``; export does not load it (a pickle can run code) and ships no program.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import shlex
import shutil
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.core.hashing import sha256_file
from search.core.paths import MODEL_ONNX, PROGRAM, TRIAL_JSON, StudyPaths
from search.distributed.storage import redact_text
from search.errors import SearchError
from search.export.program import program_source
from search.export.readme import readme
from search.record import TrialRecord, baseline_of, confirmed_figures

PACKAGES = ("search", "torch", "torch-pruning", "onnx", "onnxruntime", "optuna", "numpy")


class ExportError(SearchError):
    """A trial cannot be exported (not completed, artifacts missing or changed)."""


def find_trial(study: optuna.Study, number: int) -> FrozenTrial:
    """The completed trial ``number`` of ``study``, or an :class:`ExportError` saying why not."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if number not in trials:
        raise ExportError(
            f"study {study.study_name!r} has no trial {number} (trials 0-{len(trials) - 1})"
        )
    t = trials[number]
    if t.state != TrialState.COMPLETE or TrialRecord.of(t) is None:
        reason = t.user_attrs.get("fail_reason") or t.state.name.lower()
        raise ExportError(
            f"trial {number} did not complete ({reason}); export a completed trial, "
            "e.g. --pick knee"
        )
    return t


def artifact_dir(
    trial: FrozenTrial,
    *,
    study_dir: Path,
    study: optuna.Study | None = None,
    artifacts: str | None = None,
) -> Path:
    """Where the trial's files are: the recorded folder, else ``<study_dir>/artifacts/<n>``,
    else downloaded there from the study's artifact store (``artifacts`` overrides where this
    machine reaches it; see :mod:`search.distributed.artifacts`)."""
    rec = _record(trial)
    local = StudyPaths.of(study_dir).trial_dir(trial.number)
    # The record holds the path as the run saw it, which may be relative to another directory.
    for cand in (Path(rec.artifacts), local):
        if str(cand) not in ("", ".") and (cand / MODEL_ONNX).is_file():
            return cand
    if study is not None and trial.user_attrs.get("files"):
        from search.distributed.artifacts import fetch_trial

        return fetch_trial(study, trial, local, override=artifacts)
    where = f" on host {trial.user_attrs['host']}" if trial.user_attrs.get("host") else ""
    raise ExportError(
        f"trial {trial.number}: no artifacts at {local} (it ran{where}, in "
        f"{rec.artifacts or '?'}, and kept no copy in an artifact store); pass "
        "--results-dir where the study's artifacts/ folder lives"
    )


def export_trial(
    study: optuna.Study,
    *,
    number: int,
    out_dir: Path,
    study_dir: Path,
    command: str = "",
    force: bool = False,
    artifacts: str | None = None,
) -> dict[str, Path]:
    """Write trial ``number``'s files into ``out_dir`` (see the module docstring).

    Args:
        study: The loaded study.
        number: The trial number.
        out_dir: The folder to write; created if missing.
        study_dir: ``results/<study>``, where the trial's artifacts live.
        command: The command line that ran this export, recorded in ``trial.json``.
        force: Write into ``out_dir`` even when it holds files (export's own are replaced).
        artifacts: Where this machine reaches the study's artifact store, when it is not
            where the study recorded it.

    Returns:
        The written files by role: ``measured``, ``float_onnx`` (a quantized trial's),
        ``checkpoint`` (a trial's program), ``json``, ``reproduce``, ``readme``.

    Raises:
        ExportError: the trial is not complete, its files are missing or changed.
        SearchError: ``out_dir`` holds files and ``force`` is not set, or it is, holds or
            lies in the trial's artifacts or the study's folders.
    """
    from search.core.checks import check_out_dir, check_out_not_source

    out = Path(out_dir)
    check_out_dir(out, force=force, study_dir=Path(study_dir))
    t = find_trial(study, number)
    rec = _record(t)
    src = artifact_dir(t, study_dir=Path(study_dir), study=study, artifacts=artifacts)
    check_out_not_source(out, src, what=f"trial {number}'s own artifacts folder")
    measured_src = measured_source(src, rec, number=number)
    program = program_source(src, rec, number=number)  # checked before anything is written
    out.mkdir(parents=True, exist_ok=True)
    paths = {"measured": out / measured_src.name}
    shutil.copy2(measured_src, paths["measured"])
    if measured_src.name != MODEL_ONNX:
        paths["float_onnx"] = out / MODEL_ONNX
        shutil.copy2(src / MODEL_ONNX, paths["float_onnx"])
    input_info = onnx_input(src / MODEL_ONNX)
    if program is not None:  # copied, never loaded (see search.trial.programs)
        paths["checkpoint"] = out / PROGRAM
        shutil.copy2(program, paths["checkpoint"])
    paths["reproduce"] = out / "reproduce.py"
    paths["reproduce"].write_text(reproduce_script(study, t))
    info = trial_info(study, t, input_info=input_info, files=paths, command=command)
    paths["json"] = out / TRIAL_JSON
    paths["json"].write_text(json.dumps(info, indent=2, default=str))
    paths["readme"] = out / "README.md"
    paths["readme"].write_text(readme(info, rec, baseline_of(study)))
    return paths


def onnx_input(onnx_path: Path) -> dict[str, Any]:
    """Name, shape (``"batch"`` for a dynamic dimension) and dtype of the first ONNX input."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    inp = model.graph.input[0]
    dims = [d.dim_param or d.dim_value or "batch" for d in inp.type.tensor_type.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)
    return {"name": inp.name, "shape": dims, "dtype": str(dtype)}


def _record(t: FrozenTrial) -> TrialRecord:
    rec = TrialRecord.of(t)
    if rec is None:
        raise ExportError(f"trial {t.number} has no record; export a completed trial")
    return rec


def measured_source(src: Path, rec: TrialRecord, *, number: int) -> Path:
    """The ONNX file the trial was measured on, in ``src``, as large as it was then.

    Raises:
        ExportError: the file is missing or its size changed after measurement.
    """
    measured = src / Path(rec.measured_file or MODEL_ONNX).name
    if not measured.is_file():
        raise ExportError(f"trial {number}: the measured file {measured} is missing")
    expected = rec.measurement.get("size_bytes")
    if expected is not None and measured.stat().st_size != expected:
        raise ExportError(
            f"trial {number}: {measured} has {measured.stat().st_size} bytes but the "
            f"measured file had {expected}; it changed after measurement, rerun the trial"
        )
    return measured


def versions() -> dict[str, str]:
    """Python and the versions of the packages a trial's files depend on."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def trial_info(
    study: optuna.Study,
    t: FrozenTrial,
    *,
    input_info: dict[str, Any],
    files: dict[str, Path],
    command: str,
) -> dict[str, Any]:
    """The JSON-ready description of an exported trial."""
    rec = _record(t)
    settings = study.user_attrs.get("settings") or {}
    stored = rec.to_json()
    metrics = {k: v for k, v in stored.items() if k not in ("config", "artifacts", "onnx")}
    baseline = baseline_of(study)
    base = baseline.to_json() if baseline is not None else {}
    return {
        "study": study.study_name,
        "trial": t.number,
        "metric": study.user_attrs.get("metric", "accuracy"),
        "config": rec.config or t.user_attrs.get("config"),
        "params": t.params,
        "measurements": metrics,
        "baseline": {k: v for k, v in base.items() if k != "measurement"},
        "confirmed": confirmed_figures(study, t.number),
        "measured_file": files["measured"].name,
        "input": input_info,
        "profile": _profile(settings),
        "settings": settings,
        "files": {
            p.name: {"role": role, "bytes": p.stat().st_size, "sha256": sha256_file(p)}
            for role, p in files.items()
            if p.is_file()
        },
        "versions": versions(),
        "reproduce": {
            "command": "python reproduce.py",
            "study_command": study_command(
                settings, study.study_name, study.user_attrs.get("sources")
            ),
            "note": "With the same seed on CPU the accuracy repeats; latency is measured again "
            "and varies from run to run",
        },
        "exported_with": redact_text(command or " ".join(sys.argv)),  # no storage password
    }


def _profile(settings: dict[str, Any]) -> dict[str, Any]:
    from search.config import load_profile

    name = settings.get("profile")
    if not name:
        return {}
    try:
        # The study stores the profile's name only: this is the profile file as it is now.
        return {**load_profile(name).model_dump(), "note": "read at export time"}
    except SearchError:
        # The study stores only the profile's name; a profile given as a path may have moved.
        return {"name": name, "note": "profile file not found; only its name is stored"}


# Task options the run command takes as flags; others come only from a task YAML file.
_FLAG_OPTIONS = ("model", "weights", "data")


@dataclasses.dataclass(frozen=True)
class RunArguments:
    """What rebuilds the study a trial came from: one source for the ``python -m search run``
    command and for ``reproduce.py``, so the two cannot disagree.

    Attributes:
        task: Built-in task name, ``module:function`` or ``file.py:function``.
        task_options: The task factory's options (model, weights, data, ...).
        space, profile: Built-in name, or the path of the file the study was created from.
        seed: The study's seed.
        study: The study's name.
    """

    task: str
    task_options: dict[str, Any]
    space: str
    profile: str
    seed: int
    study: str

    def command(self) -> str:
        """The shell command; task options that are no flag are named in a comment."""
        words = ["python", "-m", "search", "run", "--task", self.task, "--space", self.space]
        words += ["--hw", self.profile, "--seed", str(self.seed), "--study", self.study]
        others = []
        for key, value in self.task_options.items():
            if key in _FLAG_OPTIONS:
                words += [f"--{key}", str(value)]
            else:
                others.append(f"{key}={value}")
        cmd = " ".join(shlex.quote(w) for w in words)
        if others:
            cmd += f"  # plus task options from its task YAML: {', '.join(others)}"
        return cmd

    def spec_source(self) -> str:
        """Python source of the :class:`~search.study.StudySpec` with these arguments."""
        return (
            "StudySpec(\n"
            f"    task={self.task!r},\n"
            f"    task_options={self.task_options!r},\n"
            f"    space=load_space({self.space!r}),\n"
            f"    profile=load_profile({self.profile!r}),\n"
            f"    study_name={self.study!r},\n"
            '    results_dir=Path("results"),\n'
            f"    seed={self.seed!r},\n"
            ")"
        )


def run_arguments(
    settings: dict[str, Any], name: str, sources: dict[str, str] | None = None
) -> RunArguments:
    """The arguments of the study ``name`` from its ``settings`` and ``sources`` attributes.

    ``sources`` holds the space and profile files the study was created from; a file outside
    the built-in folders is named by its path. The study stores task options as strings; the
    ones from a task YAML file (numbers, lists) are read back as YAML.
    """
    sources = sources or {}

    def ref(kind: str, default: str) -> str:
        path = sources.get(kind, "")
        builtin = Path(path).parent.name in ("spaces", "hw_profiles") if path else True
        return settings.get(kind, default) if builtin else path

    return RunArguments(
        task=str(settings.get("task", "digits")),
        task_options={
            k: v if k in _FLAG_OPTIONS else _yaml_value(v)
            for k, v in (settings.get("task_options") or {}).items()
        },
        space=ref("space", "default"),
        profile=ref("profile", "cpu"),
        seed=int(settings.get("seed", 0)),
        study=name,
    )


def _yaml_value(text: object) -> Any:
    from search.core.yaml_input import parse_yaml  # strict: the study may come from elsewhere

    if not isinstance(text, str):
        return text
    if text == "None":  # str(None): YAML would read it as the string "None"
        return None
    try:
        return parse_yaml(text, source="a task option")
    except SearchError:
        return text


def study_command(
    settings: dict[str, Any], name: str, sources: dict[str, str] | None = None
) -> str:
    """The ``python -m search run`` command of the study the trial came from."""
    return run_arguments(settings, name, sources).command()


def _doc(text: str) -> str:
    """``text`` safe inside a triple-quoted docstring: a study's settings come from its storage,
    which may have been made elsewhere, and must not be able to end the string."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def reproduce_script(study: optuna.Study, t: FrozenTrial) -> str:
    """A Python script that reruns ``t``'s parameters as the only trial of a new study.

    Importing the script builds ``SPEC`` (task, options, space and profile as the study had
    them) and runs nothing; running it creates the study and runs the one trial.
    """
    whole = run_arguments(
        study.user_attrs.get("settings") or {}, study.study_name, study.user_attrs.get("sources")
    )
    args = dataclasses.replace(whole, study=f"{study.study_name}-trial{t.number}")
    name, command = _doc(repr(study.study_name)), _doc(whole.command())
    return f'''"""Rerun trial {t.number} of study {name} as trial 0 of a new study.

Run from the repository root of the search project: python {{this folder}}/reproduce.py
The whole study: {command}
"""

from pathlib import Path

from search import StudySpec, load_profile, load_space, run_study
from search.study import open_study

SPEC = {args.spec_source()}
PARAMS = {t.params!r}

if __name__ == "__main__":
    # Enqueued parameters are used by the next trial instead of the sampler's suggestions.
    open_study(SPEC, create=True).enqueue_trial(PARAMS)
    run_study(SPEC, trials=1)
'''
