"""Task registry: built-in names, ``module:function`` or ``file.py:function`` for a user's own
factory, or a task YAML file naming one of those plus its options.

Importing this package is cheap (no torch): the command line lists the built-in tasks in its help.
``Task``, ``accuracy`` and ``stack`` load :mod:`search.tasks.base` (and torch) on first use.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from search.core.errors import at_user, first_line
from search.errors import SearchError, TaskError

if TYPE_CHECKING:
    from search.tasks.base import Task

BUILTIN = {
    "digits": "search.tasks.digits:make_task",
    "vision": "search.tasks.vision:make_task",
    "imagefolder": "search.tasks.vision:make_imagefolder_task",
    "cifar10": "search.tasks.vision:make_cifar10_task",
    "distorted_digits": "search.tasks.distorted_digits:make_task",
    "shapes_detection": "search.tasks.shapes_detection:make_task",
    "shapes_segmentation": "search.tasks.shapes_segmentation:make_task",
    "tokens": "search.tasks.tokens:make_task",
    "detection": "search.tasks.dense_data:make_detection_task",
    "segmentation": "search.tasks.dense_data:make_segmentation_task",
    "mobilenet_digits": "search.tasks.mobilenet_digits:make_task",
}

_FROM_BASE = ("Task", "accuracy", "stack")
_FROM_OUTPUTS = ("Outputs",)

__all__ = [
    "BUILTIN",
    "Outputs",
    "Task",
    "accuracy",
    "check_options",
    "load_task",
    "read_task_file",
    "resolve_factory",
    "stack",
    "task_and_options",
    "task_slug",
]


def __getattr__(name: str) -> Any:
    if name in _FROM_BASE:
        return getattr(importlib.import_module("search.tasks.base"), name)
    if name in _FROM_OUTPUTS:
        return getattr(importlib.import_module("search.tasks.outputs"), name)
    raise AttributeError(f"module 'search.tasks' has no attribute {name!r}")


_TASK_FILES: set[str] = set()  # module names this process gave to task files it loaded


def _replaceable(module: ModuleType, path: Path) -> bool:
    """Whether ``module`` (already in ``sys.modules`` under ``path``'s stem) may be replaced by
    the task file ``path``: it is that file, or another task file loaded here (an API user may
    run studies on two ``task.py`` files), never a library's module."""
    where: str = getattr(module, "__file__", None) or ""  # built-in modules have none
    same = bool(where) and Path(where).resolve() == path.resolve()
    return same or module.__name__ in _TASK_FILES


def _import(module_name: str, spec: str) -> Any:
    if module_name.endswith(".py"):
        path = Path(module_name).expanduser()
        if not path.is_file():
            raise TaskError(f"task {spec!r}: file {path} does not exist")
        if path.stem in sys.modules and not _replaceable(sys.modules[path.stem], path):
            raise TaskError(
                f"task {spec!r}: the file name {path.name} shadows the module {path.stem!r} "
                "that is already imported; rename the file"
            )
        mod_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(mod_spec)  # type: ignore[arg-type]
        sys.modules[path.stem] = module
        try:
            mod_spec.loader.exec_module(module)  # type: ignore[union-attr]
        except BaseException:
            del sys.modules[path.stem]  # a half-imported module must not be found next time
            raise
        _TASK_FILES.add(path.stem)
        return module
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        # The `search` console script does not put the working directory on the path, but
        # `--task my_module:make_task` means the user's module next to them.
        sys.path.insert(0, str(Path.cwd()))
    return importlib.import_module(module_name)


def resolve_factory(spec: str) -> Callable[..., Task]:
    """Find the factory for a built-in task name or a ``module:function`` spec."""
    target = BUILTIN.get(spec, spec)
    if ":" not in target:
        known = ", ".join(sorted(BUILTIN))
        raise TaskError(
            f"unknown task {spec!r}: choose one of {known} or pass module:function "
            "naming your own task factory"
        )
    module_name, func_name = target.rsplit(":", 1)
    try:
        module = _import(module_name, spec)
    except TaskError:
        raise
    except ImportError as e:
        raise TaskError(f"task {spec!r}: cannot import module {module_name!r}: {e}") from None
    except SyntaxError as e:
        where = f"{Path(e.filename or module_name).name}:{e.lineno}"
        raise TaskError(
            f"task {spec!r}: cannot import {module_name}: SyntaxError at {where}: {e.msg}"
        ) from None
    except Exception as e:  # noqa: BLE001 - the user's module failed while it was imported
        raise TaskError(f"task {spec!r}: importing {module_name} failed {at_user(e)}") from None
    factory = getattr(module, func_name, None)
    if not callable(factory):
        raise TaskError(f"task {spec!r}: module {module_name!r} has no function {func_name!r}")
    return factory


FLAGS = {
    "model": "--model",
    "weights": "--weights",
    "data": "--data",
    "image_size": "--image-size",
}
_GIVEN = ("seed", "cache_dir")  # what load_task passes to every factory


def _missing(spec: str, name: str) -> TaskError:
    """The error for a required option of the factory that nobody gave: which flag to pass,
    or for an option without a flag, the task YAML file to write it in."""
    if name in FLAGS:
        return TaskError(f"task {spec!r} needs option {name!r}: pass {FLAGS[name]}")
    return TaskError(
        f"task {spec!r} needs option {name!r}, which has no flag: write it in a task YAML file "
        f"(task: {spec}, {name}: ...) and pass that file as --task"
    )


def check_options(factory: Callable[..., Task], spec: str, options: dict[str, Any]) -> None:
    """Refuse options the factory does not take (a factory with ``**options`` takes all) and
    required options that are not given, naming the flag (``--data``) or the task YAML key
    that gives them.

    Raises:
        TaskError: an option the factory does not take, a required one missing, or a factory
            that cannot be called as ``factory(seed=..., cache_dir=..., **options)``.
    """
    sig = inspect.signature(factory)
    params = sig.parameters.values()
    keyword = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    for p in params:
        if p.kind in keyword and p.default is p.empty and p.name not in (*_GIVEN, *options):
            raise _missing(spec, p.name)
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        accepted = {p.name for p in params} - set(_GIVEN)
        extra = sorted(set(options) - accepted)
        if extra:
            raise TaskError(
                f"task {spec!r} takes no option(s) {', '.join(extra)}; its factory accepts "
                f"{', '.join(sorted(accepted)) or 'none'}"
            )
    try:
        sig.bind(**dict.fromkeys(_GIVEN), **options)
    except TypeError as e:
        raise TaskError(
            f"task {spec!r}: its factory cannot be called as "
            f"{getattr(factory, '__name__', 'factory')}(seed=..., cache_dir=..., <options>): "
            f"{first_line(e)}"
        ) from None


def load_task(
    spec: str, *, seed: int, cache_dir: Path, options: dict[str, Any] | None = None
) -> Task:
    """Call the task factory; ``options`` (model, weights, data, ...) go to it as keywords.
    The task comes back checked, with the model the study compresses
    (:func:`search.tasks.checks.prepare`).

    Raises:
        TaskError: an unknown or failing factory, or an unusable task (one line).
    """
    from search.tasks.base import Task
    from search.tasks.checks import prepare

    options = dict(options or {})
    factory = resolve_factory(spec)
    check_options(factory, spec, options)
    try:
        task = factory(seed=seed, cache_dir=cache_dir, **options)
    except SearchError:
        raise
    except Exception as e:  # noqa: BLE001 - a user's factory failing is the user's to fix
        raise TaskError(f"task {spec!r} failed to load {at_user(e)}") from None
    if not isinstance(task, Task):
        raise TaskError(f"task {spec!r}: the factory returned {type(task).__name__}, not a Task")
    return prepare(task, spec)


PATH_OPTIONS = ("weights", "data")


def read_task_file(path: Path) -> tuple[str, dict[str, Any]]:
    """A task YAML file: ``task`` (built-in name or factory, default ``vision``) and options.

    Relative ``weights`` and ``data`` paths are taken relative to the file, so the file can
    travel with the data it describes.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise TaskError(f"task file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise TaskError(f"task file {path} is not valid YAML: {first_line(e)}") from None
    if not isinstance(raw, dict):
        raise TaskError(f"task file {path} must be a mapping of keys (task, model, data, ...)")
    spec = str(raw.pop("task", "vision"))
    if spec.split(":", 1)[0].endswith(".py") and not Path(spec.split(":", 1)[0]).is_absolute():
        spec = str(path.parent / spec)
    for key in PATH_OPTIONS:
        value = raw.get(key)
        if isinstance(value, str) and not Path(value).expanduser().is_absolute():
            raw[key] = str(path.parent / value)
    return spec, raw


def task_and_options(
    task: str | None,
    *,
    model: str | None,
    weights: str | None,
    data: str | None,
    image_size: int | None = None,
) -> tuple[str, dict[str, Any]]:
    """The task spec and factory options from ``--task`` (or its YAML file) and the
    ``--model``/``--weights``/``--data``/``--image-size`` flags, which override the file's;
    checked against the factory's signature (the task itself is not loaded).

    Raises:
        TaskError: an unknown task, an unreadable task file, an option the factory does not
            take, an image size below 1.
    """
    spec = task or ("vision" if data else "digits")
    options: dict[str, Any] = {}
    if spec.endswith((".yaml", ".yml")):
        spec, options = read_task_file(Path(spec))
    if image_size is not None and image_size < 1:
        raise TaskError(f"--image-size must be a positive number of pixels, got {image_size}")
    flags = {"model": model, "weights": weights, "data": data, "image_size": image_size}
    options.update({k: v for k, v in flags.items() if v is not None})
    check_options(resolve_factory(spec), spec, options)
    return spec, options


def task_slug(spec: str, options: dict[str, Any] | None = None) -> str:
    """A task spec as part of a study or folder name: ``digits``, ``vision-resnet18``,
    ``my_task`` for ``path/my_task.py:make_task``, ``pkg-mod-make`` for ``pkg.mod:make``."""
    base = Path(spec.split(":", 1)[0]).stem if ".py:" in spec else spec
    model = (options or {}).get("model")
    slug = f"{base}-{model}" if isinstance(model, str) and model else base
    return slug.replace(":", "-").replace("/", "-").replace(".", "-")
