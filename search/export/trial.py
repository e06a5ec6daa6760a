"""Export one trial: the exact ONNX file that was measured, its torch.export program, its record.

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

import json
import platform
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
from search.export.reproduce import (
    copy_task_file,
    inputs,
    reproduce_script,
    study_arguments,
    study_command,
)
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
        The written files by role: ``measured``, ``float_onnx`` (when the measured file is
        quantized), ``checkpoint`` (when the trial has a program), ``json``, ``reproduce``,
        ``readme``.

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
    paths = _copy_models(src, out, measured=measured_src, program=program)
    input_info = onnx_input(src / MODEL_ONNX)
    task_copy = copy_task_file(study_arguments(study), out)
    if task_copy is not None:
        paths["task_file"] = task_copy
    paths["reproduce"] = out / "reproduce.py"
    paths["reproduce"].write_text(reproduce_script(study, t, task_copy=task_copy))
    info = trial_info(study, t, input_info=input_info, files=paths, command=command)
    paths["json"] = out / TRIAL_JSON
    paths["json"].write_text(json.dumps(info, indent=2, default=str))
    paths["readme"] = out / "README.md"
    from search.export.readme import readme

    paths["readme"].write_text(readme(info, rec, baseline_of(study)))
    return paths


def _copy_models(src: Path, out: Path, *, measured: Path, program: Path | None) -> dict[str, Path]:
    """Copy the measured file, the float ONNX file behind a quantized one, and the program
    (copied, never loaded: see :mod:`search.trial.programs`) into ``out``; paths by role."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"measured": out / measured.name}
    shutil.copy2(measured, paths["measured"])
    if measured.name != MODEL_ONNX:
        paths["float_onnx"] = out / MODEL_ONNX
        shutil.copy2(src / MODEL_ONNX, paths["float_onnx"])
    if program is not None:
        paths["checkpoint"] = out / PROGRAM
        shutil.copy2(program, paths["checkpoint"])
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
            "study_command": study_command(study),
            "inputs": inputs(study_arguments(study)),
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
