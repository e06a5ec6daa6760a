"""Rerun an exported trial anywhere: ``reproduce.py`` and the whole study's command.

A study stores its task, options, space and profile as the user typed them, relative paths
included, and (since 0.2) the folder they were typed in (the ``sources`` attribute's ``cwd``).
An export resolves every path against that folder, copies a task file given as
``file.py:function`` into the export (``task/``), and notes the data and weights the trial read
with their digests (``inputs`` in ``trial.json``). ``reproduce.py`` then runs from any folder:
it checks every input before anything is created (a missing file or a changed weights file is
one line and exit 2, no study), and the trial is enqueued only after the study has loaded its
task (:func:`search.study.run_study`'s ``enqueue``), so a failed rerun leaves no study behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shlex
import shutil
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from search.core.hashing import sha256_file
from search.errors import SearchError

# Task options the run command takes as flags; others come only from a task YAML file.
_FLAG_OPTIONS = ("model", "weights", "data")
# Task options that name files or folders on disk (resolved against the study's folder).
PATH_OPTIONS = ("weights", "data")
# The folder of an export that holds a copy of the study's task file.
TASK_FOLDER = "task"


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

    def spec_source(self, task: str | None = None) -> str:
        """Python source of the :class:`~search.study.StudySpec` with these arguments
        (``task``: Python source of the task argument, default its repr)."""
        return (
            "StudySpec(\n"
            f"    task={task or repr(self.task)},\n"
            f"    task_options={self.task_options!r},\n"
            f"    space=load_space({self.space!r}),\n"
            f"    profile=load_profile({self.profile!r}),\n"
            f"    study_name={self.study!r},\n"
            '    results_dir=Path("results"),\n'
            f"    seed={self.seed!r},\n"
            ")"
        )

    def task_file(self) -> Path | None:
        """The user's task file of a ``file.py:function`` task, else None."""
        path, sep, _ = self.task.rpartition(":")
        return Path(path) if sep and path.endswith(".py") else None

    def resolved(self, base: Path) -> RunArguments:
        """These arguments with every relative path made absolute against ``base`` (the
        folder the study's command was run in): the task file, data and weights, and space and
        profile files given by path."""

        def absolute(text: str) -> str:
            return text if Path(text).is_absolute() else str((base / text).resolve())

        task = self.task
        if (file := self.task_file()) is not None:
            task = f"{absolute(str(file))}:{self.task.rpartition(':')[2]}"
        options = {
            k: absolute(v) if k in PATH_OPTIONS and isinstance(v, str) and v else v
            for k, v in self.task_options.items()
        }
        space = absolute(self.space) if _is_path(self.space) else self.space
        profile = absolute(self.profile) if _is_path(self.profile) else self.profile
        return dataclasses.replace(
            self, task=task, task_options=options, space=space, profile=profile
        )


def _is_path(ref: str) -> bool:
    return "/" in ref or ref.endswith((".yaml", ".yml"))


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
        return str(settings.get(kind, default)) if builtin else path

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


def study_arguments(study: optuna.Study) -> RunArguments:
    """The study's arguments with paths resolved against the folder it was created from (the
    folder this process runs in, for studies made before 0.2 recorded it)."""
    sources = study.user_attrs.get("sources") or {}
    args = run_arguments(study.user_attrs.get("settings") or {}, study.study_name, sources)
    return args.resolved(Path(sources.get("cwd") or Path.cwd()))


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


def study_command(study: optuna.Study) -> str:
    """The ``python -m search run`` command that reruns the whole study as a new study
    (``<name>-rerun``: the study's own name would resume it instead)."""
    args = study_arguments(study)
    return dataclasses.replace(args, study=f"{study.study_name}-rerun").command()


def _digest(path: Path) -> str | None:
    """SHA-256 of a file; of a folder's file names and sizes (cheap: a data folder can be
    large); None when it does not exist."""
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        return None
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            h.update(f"{p.relative_to(path)}:{p.stat().st_size};".encode())
    return h.hexdigest()


def inputs(args: RunArguments) -> dict[str, dict[str, Any]]:
    """The files the study's task read, by role (``task_file``, ``data``, ``weights``):
    ``{path, sha256}`` (the digest of a folder covers its file names and sizes)."""
    found: dict[str, dict[str, Any]] = {}
    if (file := args.task_file()) is not None:
        found["task_file"] = {"path": str(file), "sha256": _digest(file)}
    for key in PATH_OPTIONS:
        value = args.task_options.get(key)
        if isinstance(value, str) and value:
            found[key] = {"path": value, "sha256": _digest(Path(value))}
    return found


def copy_task_file(args: RunArguments, out: Path) -> Path | None:
    """Copy the study's task file into ``out/task/`` (None when the task is no file, or the
    file is gone)."""
    file = args.task_file()
    if file is None or not file.is_file():
        return None
    dest = out / TASK_FOLDER / file.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(file, dest)
    return dest


def _doc(text: str) -> str:
    """``text`` safe inside a triple-quoted docstring: a study's settings come from its storage,
    which may have been made elsewhere, and must not be able to end the string."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def reproduce_script(study: optuna.Study, t: FrozenTrial, *, task_copy: Path | None = None) -> str:
    """A Python script that reruns ``t``'s parameters as the only trial of a new study.

    Importing the script builds ``SPEC`` (task, options, space and profile as the study had
    them, paths absolute; the task file from ``task/`` beside the script when ``task_copy``)
    and runs nothing; running it checks ``INPUTS``, then creates the study and runs the trial.
    """
    whole = study_arguments(study)
    args = dataclasses.replace(whole, study=f"{study.study_name}-trial{t.number}")
    task, read = None, inputs(args)
    if task_copy is not None and args.task_file() is not None:
        # The original file (its sibling modules import as before); the copy once it is gone.
        function = args.task.rpartition(":")[2]
        copy = f"HERE / {TASK_FOLDER!r} / {task_copy.name!r}"
        task = f'str(ORIGINAL if ORIGINAL.is_file() else {copy}) + ":{function}"'
        read.pop("task_file", None)
    name, command = _doc(repr(study.study_name)), _doc(study_command(study))
    return f'''"""Rerun trial {t.number} of study {name} as the only trial of a new study.

Run it from any folder with the Python that has the search package installed (the project's
.venv): python reproduce.py. Results go to ./results/{_doc(args.study)}/.
The whole study again, as a new study: {command}
"""

import sys
from pathlib import Path

from search import SearchError, StudySpec, load_profile, load_space, run_study

HERE = Path(__file__).resolve().parent
ORIGINAL = Path({str(args.task_file() or "")!r})
INPUTS = {read!r}
PARAMS = {t.params!r}
SPEC = {args.spec_source(task)}


def check_inputs() -> None:
    """Every file the trial read is still there (weights and task file unchanged)."""
    import hashlib

    for role, info in INPUTS.items():
        path = Path(info["path"])
        if not path.exists():
            raise SearchError(f"{{role}} {{path}} is gone; restore it to reproduce this trial")
        if path.is_file() and info.get("sha256"):
            if hashlib.sha256(path.read_bytes()).hexdigest() != info["sha256"]:
                raise SearchError(f"{{role}} {{path}} changed since the trial; restore it")


if __name__ == "__main__":
    try:
        check_inputs()
        # Enqueued once the study has loaded its task: a task that fails leaves no study.
        run_study(SPEC, trials=1, enqueue=[PARAMS])
    except SearchError as e:
        print(f"error: {{e}}", file=sys.stderr)
        sys.exit(2)
'''
