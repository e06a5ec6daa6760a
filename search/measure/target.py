"""Where a profile is measured: this machine (:class:`LocalTarget`), its agent
(:class:`~search.measure.agent.client.AgentClient`) or a runtime of its own on this machine
(:class:`~search.measure.runtimes.RuntimeTarget`); all answer ``measure(path, ...)``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from search.measure.agent.client import AgentClient
from search.measure.confirmation import time_files
from search.measure.measurement import Measurement, measure_onnx
from search.measure.runtime import available_providers, check_providers, describe_device
from search.measure.spec import MeasureSpec

DEFAULT_TOKEN_ENV = "SEARCH_AGENT_TOKEN"


class Target(Protocol):
    """What a study measures on: ``where`` and ``device`` describe it for messages; ``spec``
    is the profile's measure spec it runs."""

    where: str
    device: str
    spec: Any

    def measure(
        self,
        path: Path | str,
        *,
        eval_inputs: np.ndarray,
        latency_input: np.ndarray,
        reference: Path | str | None = None,
    ) -> Measurement:
        """Measure ``path``; with ``reference`` its latency is paired with that file's
        (:func:`~search.measure.measurement.measure_onnx`)."""
        ...

    def confirm(
        self,
        paths: Mapping[str, Path],
        *,
        reference: Path,
        latency_input: np.ndarray | None,
    ) -> dict[str, Any]:
        """Time ``paths`` interleaved with ``reference``
        (:func:`~search.measure.confirmation.time_files`)."""
        ...


class LocalTarget:
    """Measures on this machine, after checking it can run the spec as written; ``timing()``
    is held around the latency runs (see :func:`~search.measure.measurement.measure_onnx`)."""

    def __init__(
        self,
        spec: MeasureSpec,
        *,
        timing: Callable[[], contextlib.AbstractContextManager] | None = None,
    ) -> None:
        check_providers(spec)
        self.spec = spec
        self.timing = timing
        self.where = "here"
        self.device = describe_device()

    def measure(
        self,
        path: Path | str,
        *,
        eval_inputs: np.ndarray,
        latency_input: np.ndarray,
        reference: Path | str | None = None,
    ) -> Measurement:
        return measure_onnx(
            path,
            spec=self.spec,
            eval_inputs=eval_inputs,
            latency_input=latency_input,
            reference=reference,
            timing=self.timing,
        )

    def confirm(
        self,
        paths: Mapping[str, Path],
        *,
        reference: Path,
        latency_input: np.ndarray | None,
    ) -> dict[str, Any]:
        return time_files(
            paths,
            reference=reference,
            spec=self.spec,
            latency_input=latency_input,
            timing=self.timing,
        )


def open_target(
    spec: MeasureSpec,
    *,
    agent: str | None = None,
    runtime: str | None = None,
    token_env: str = DEFAULT_TOKEN_ENV,
    timeout: float = 900.0,
    timing: Callable[[], contextlib.AbstractContextManager] | None = None,
) -> Target:
    """Where ``spec`` is measured: the agent at URL ``agent`` (its token in ``$token_env``);
    else, when this onnxruntime lacks a provider ``spec`` needs and the profile names a
    ``runtime``, an agent started from that runtime here
    (:class:`~search.measure.runtimes.RuntimeTarget`); else this machine.

    Either way the providers and architecture are checked first, so a study that cannot be
    measured as the profile says stops with a :class:`ProviderError` (or :class:`AgentError`)
    before any trial. ``timing`` is held around latency runs on this machine (and around each
    request to a runtime's agent, which runs here too). Close what this returns with
    :func:`close_target`.
    """
    if agent:
        return AgentClient.connect(agent, spec=spec, token_env=token_env, timeout=timeout)
    if runtime is not None and any(p not in available_providers() for p in spec.required):
        from search.measure.runtimes import RuntimeTarget

        return RuntimeTarget(spec, runtime, timing=timing, timeout=timeout)
    return LocalTarget(spec, timing=timing)


def close_target(target: Target) -> None:
    """Stop what ``target`` started (a runtime's agent); nothing for the others."""
    close = getattr(target, "close", None)
    if callable(close):
        close()
