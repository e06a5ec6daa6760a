"""Several ONNX files timed interleaved with one reference, wherever the profile measures.

The confirmation of a study's front (:mod:`search.study.confirm`) re-times its Pareto trials and
the float baseline side by side. The timing itself lives here, below the study, so that the agent
on a remote target runs exactly the same code as this machine does: :func:`time_files` is what
``LocalTarget.confirm`` calls and what the agent's ``POST /v1/confirm`` runs.

Example:
    >>> sorted(REQUIRED)
    ['latency_input', 'models', 'profile', 'reference']
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from search.measure.latency import cpu_timed, make_runner
from search.measure.load import wait_for_quiet
from search.measure.memory import child_env
from search.measure.paired import time_paired
from search.measure.pooled import pool_timings
from search.measure.runtime import create_session, describe_device
from search.measure.spec import MeasureSettings, MeasureSpec

if TYPE_CHECKING:
    import onnxruntime as ort

REFERENCE = "reference"
NAME = re.compile(r"^[0-9A-Za-z_.-]{1,64}$")
MAX_FILES = 64  # a front of more trials than this is re-timed in parts by the caller
REQUIRED = ("models", "reference", "latency_input", "profile")


def check_names(names: list[str]) -> None:
    """Raise ``ValueError`` unless ``names`` are 1-64 plain characters, not ``reference``, at
    most :data:`MAX_FILES`."""
    if not names or len(names) > MAX_FILES:
        raise ValueError(f"1 to {MAX_FILES} models are timed at once, not {len(names)}")
    bad = [n for n in names if not NAME.match(n) or n == REFERENCE]
    if bad:
        raise ValueError(f"model names must match {NAME.pattern} and not be '{REFERENCE}': {bad}")


def time_files(
    paths: Mapping[str, Path],
    *,
    reference: Path,
    spec: MeasureSpec,
    latency_input: np.ndarray | None,
    timing: Callable[[], contextlib.AbstractContextManager] | None = None,
    device_label: str = "",
) -> dict[str, Any]:
    """Time every file of ``paths`` (name -> ONNX file) and ``reference`` interleaved over the
    profile's ``confirm_rounds`` rounds of ``paired_runs`` runs, pairing each with the reference
    (:func:`~search.measure.paired.time_paired`), in each of ``confirm_processes`` fresh
    processes, pooled (:func:`~search.measure.pooled.pool_timings`); 0: once in this process.

    First it waits up to ``quiet_wait_s`` for a quiet window (:func:`wait_for_quiet`).
    ``latency_input`` is one input in the dtype the model takes (its first row is repeated to
    the spec's first batch size); None: a seeded standard-normal array of the reference's input
    shape (zeros for integer inputs). ``timing()`` is held around the wait and the runs (a
    study's host lock); ``device_label`` as in
    :func:`~search.measure.runtime.describe_device`.

    Returns:
        JSON-ready: ``clock`` (``cpu`` or ``wall``), ``rounds``, ``runs_per_round``, ``load``,
        ``reference_p50_ms`` (wall p50 of the reference over its runs in the window),
        ``device``, ``paired``: name -> :meth:`PairedLatency.to_dict`, ``processes`` (0: this
        process), ``contended`` (a window was busy) and ``quiet_wait`` (None: no wait); pooled
        results add ``per_process``.

    Raises:
        ValueError: bad names (:func:`check_names`); ProviderError: a session would not run on
        the profile's providers; RuntimeError: a fresh process failed (its stderr's last line).
    """
    check_names(list(paths))
    settings = spec.measure
    lock = timing() if timing is not None else contextlib.nullcontext()
    with lock:
        wait = _wait_for_quiet(settings)
        if settings.confirm_processes == 0:
            out = time_here(
                paths,
                reference=reference,
                spec=spec,
                latency_input=latency_input,
                device_label=device_label,
            )
            out.update(processes=0, contended=bool(out["load"].get("busy")))
        else:
            request = {
                "paths": {n: str(p) for n, p in paths.items()},
                "reference": str(reference),
                "spec": spec.to_json(),
                "device_label": device_label,
            }
            runs = range(settings.confirm_processes)
            out = pool_timings([_in_fresh_process(request, latency_input) for _ in runs])
    out["quiet_wait"] = wait
    return out


def _wait_for_quiet(settings: MeasureSettings) -> dict[str, Any] | None:
    """The wait for a quiet window, when ``quiet_wait_s`` asks for one (None: no wait)."""
    if settings.quiet_wait_s <= 0:
        return None
    quiet = wait_for_quiet(threshold=settings.busy_threshold, max_wait_s=settings.quiet_wait_s)
    return quiet.to_dict()


def time_here(
    paths: Mapping[str, Path],
    *,
    reference: Path,
    spec: MeasureSpec,
    latency_input: np.ndarray | None,
    device_label: str = "",
) -> dict[str, Any]:
    """:func:`time_files` in this process, once, without waiting or a lock (what each fresh
    process runs)."""
    sessions = {REFERENCE: create_session(reference, spec)}
    sessions.update({n: create_session(p, spec) for n, p in paths.items()})
    feed = _feed(sessions[REFERENCE], latency_input, spec.batch_sizes[0])
    runners = {n: make_runner(s, {s.get_inputs()[0].name: feed}) for n, s in sessions.items()}
    clock = "cpu" if cpu_timed(spec) else "wall"
    settings = spec.measure
    times, paired, load = time_paired(
        runners,
        reference=REFERENCE,
        settings=settings,
        clock=clock,
        rounds=settings.confirm_rounds,
    )
    return {
        "clock": clock,
        "rounds": next(iter(paired.values())).rounds if paired else 0,
        "runs_per_round": settings.paired_runs,
        "load": load.to_dict(),
        "reference_p50_ms": float(np.median(np.concatenate(times[REFERENCE].wall))),
        "device": describe_device(device_label),
        "paired": {n: p.to_dict() for n, p in paired.items()},
    }


def _in_fresh_process(
    request: dict[str, Any], latency_input: np.ndarray | None, timeout: float = 3600.0
) -> dict[str, Any]:
    """:func:`time_here` in a new interpreter (``python -m search.measure.confirmation``)."""
    with tempfile.TemporaryDirectory(prefix="search-confirm.") as tmp:
        feed = None
        if latency_input is not None:
            feed = str(Path(tmp) / "latency_input.npy")
            np.save(feed, np.asarray(latency_input), allow_pickle=False)  # int64 ids stay int64
        proc = subprocess.run(
            [sys.executable, "-m", "search.measure.confirmation"],
            input=json.dumps({**request, "latency_input": feed}),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=child_env(),
        )
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"confirmation in a fresh process failed: {tail[0]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _child(request: dict[str, Any]) -> dict[str, Any]:
    feed = request.get("latency_input")
    return time_here(
        {n: Path(p) for n, p in request["paths"].items()},
        reference=Path(request["reference"]),
        spec=MeasureSpec.from_json(request["spec"]),
        latency_input=None if feed is None else np.load(feed, allow_pickle=False),
        device_label=str(request.get("device_label", "")),
    )


def _feed(
    session: ort.InferenceSession, latency_input: np.ndarray | None, batch: int
) -> np.ndarray:
    if latency_input is not None:
        one = np.asarray(latency_input)[:1]  # in the dtype the model takes (int64 ids too)
    else:
        first = session.get_inputs()[0]
        dims = [d if isinstance(d, int) else 1 for d in first.shape]
        if first.type in _INTEGER:  # token ids: 0 is a valid id of any vocabulary
            one = np.zeros(dims, dtype=_INTEGER[first.type])[:1]
        else:
            one = np.random.default_rng(0).standard_normal(dims).astype(np.float32)[:1]
    return np.repeat(one, batch, axis=0)


_INTEGER = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}


if __name__ == "__main__":
    print(json.dumps(_child(json.loads(sys.stdin.read()))))
