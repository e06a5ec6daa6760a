"""The training device: where the teacher, its logits, distillation and BatchNorm recalibration
run (``--train-device auto|cpu|cuda[:N]``).

Only torch training and inference move; exporting, quantizing and measuring stay with ONNX
Runtime on the hardware profile's providers, so a workstation GPU can train while the profile
measures on this CPU or on a remote target through the agent. On CUDA, training uses automatic
mixed precision (``torch.autocast`` with float16 and a ``torch.amp.GradScaler``); on the CPU it
runs in float32 as before.

The device chosen for a study is set once with :func:`use` and read by the training functions
through :func:`current`: task factories (``make_task(*, seed, cache_dir)``) train teachers
without a device argument of their own.

Example:
    >>> resolve("cpu").type
    'cpu'
"""

from __future__ import annotations

import argparse
import functools
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Concatenate, ParamSpec, Protocol, TypeVar

from search.errors import SearchError

if TYPE_CHECKING:
    import torch

CHOICES = "auto, cpu, cuda or cuda:N"
_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
T = TypeVar("T")
P = ParamSpec("P")


class _OnDevice(Protocol):
    """What :func:`on_spec_device` reads of a spec (a ``StudySpec``, which core may not import)."""

    @property
    def train_device(self) -> str: ...


S = TypeVar("S", bound=_OnDevice)
_current: list[torch.device] = []  # the device set by use(); empty means the CPU
_said: set[str] = set()  # fallback notes already given in this process


class DeviceError(SearchError):
    """The training device asked for does not exist on this machine."""


def check_name(name: str) -> None:
    """Refuse a name that is not ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (no torch needed).

    Raises:
        DeviceError: with a one-line message naming the allowed values.
    """
    if not _PATTERN.match(name):
        raise DeviceError(f"--train-device must be {CHOICES}, but got {name!r}")


def add_argument(parser: argparse.ArgumentParser) -> None:
    """``--train-device`` on a command's parser; a malformed name is an argparse error (exit
    2). Whether the device exists is checked by :func:`resolve` when the study starts, before
    any work."""

    def checked(name: str) -> str:
        try:
            check_name(name)
        except DeviceError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return name

    parser.add_argument(
        "--train-device",
        default="auto",
        type=checked,
        metavar="DEVICE",
        help="where torch trains the teacher and distills students: auto (CUDA when torch "
        "sees it, else the CPU), cpu, cuda or cuda:N; measuring follows --hw (default: auto)",
    )


def resolve(name: str, *, say: Callable[[str], object] = print) -> torch.device:
    """The ``torch.device`` for ``name``, checked against what torch sees on this machine.

    ``auto`` is the first CUDA device when torch sees one, else the CPU; the fallback is said
    once per process through ``say`` (a one-argument print function).

    Raises:
        DeviceError: ``name`` is malformed, or names a CUDA device torch does not see (no CUDA
            build, no driver, or an index beyond the device count).
    """
    import torch

    check_name(name)
    if name == "cpu":
        return torch.device("cpu")
    cuda = torch.cuda.is_available()
    if name == "auto":
        if cuda:
            return torch.device("cuda", 0)
        note = "training on the CPU: torch sees no CUDA device (--train-device auto)"
        if note not in _said:
            _said.add(note)
            say(note)
        return torch.device("cpu")
    if not cuda:
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA device"
        raise DeviceError(
            f"--train-device {name}: torch sees no CUDA device here ({why}); "
            "use --train-device cpu or auto"
        )
    device = torch.device(name)
    index = device.index or 0
    if index >= torch.cuda.device_count():
        raise DeviceError(
            f"--train-device {name}: only {torch.cuda.device_count()} CUDA device(s) here "
            f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})"
        )
    return torch.device("cuda", index)


def on_spec_device(run: Callable[Concatenate[S, P], T]) -> Callable[Concatenate[S, P], T]:
    """Decorate ``run(spec, ...)`` to train on ``spec.train_device`` (:func:`resolve`, then
    :func:`use`): a CUDA device torch does not see raises :class:`DeviceError` before ``run``
    starts any work."""

    @functools.wraps(run)
    def wrapper(spec: S, *args: P.args, **kwargs: P.kwargs) -> T:
        with use(resolve(spec.train_device)):
            return run(spec, *args, **kwargs)

    return wrapper


@contextmanager
def use(device: torch.device) -> Iterator[torch.device]:
    """Train on ``device`` inside the block (what :func:`current` returns)."""
    _current.append(device)
    try:
        yield device
    finally:
        _current.pop()


def current() -> torch.device:
    """The device set by the innermost :func:`use`, else the CPU."""
    import torch

    return _current[-1] if _current else torch.device("cpu")


def describe(device: torch.device) -> str:
    """``cpu`` or ``cuda:0 (NVIDIA H100 80GB HBM3)``: what the trial record says it trained on."""
    if device.type != "cuda":
        return str(device)
    import torch

    return f"{device} ({torch.cuda.get_device_name(device)})"


def autocast(device: torch.device) -> AbstractContextManager[object]:
    """Mixed precision on CUDA (float16 autocast); nothing on other devices."""
    import torch

    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return nullcontext()


def grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    """A ``torch.amp.GradScaler`` that scales float16 losses on CUDA and is a no-op elsewhere."""
    import torch

    return torch.amp.GradScaler("cuda", enabled=device.type == "cuda")


@contextmanager
def moved(model: torch.nn.Module, device: torch.device) -> Iterator[torch.nn.Module]:
    """``model`` on ``device`` inside the block, back on its own device afterwards (pruning,
    export and the trial's artifacts work on the CPU copy)."""
    import torch

    home = next((p.device for p in model.parameters()), torch.device("cpu"))
    if home == device:
        yield model
        return
    model.to(device)
    try:
        yield model
    finally:
        model.to(home)
