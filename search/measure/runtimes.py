"""Targets whose ONNX Runtime build cannot live beside this one: a runtime of their own, and a
measurement agent started there for the length of a study.

``onnxruntime-openvino`` *is* the ``onnxruntime`` module (it replaces the standard wheel), and
Qualcomm's QNN simulator is best kept apart from the main environment (a 243 MB plugin that
prints on stdout), so ``./setup.sh --target NAME`` makes a venv of their own under
``.runtimes/NAME`` (numpy, onnx, pyyaml, the provider's onnxruntime build and this checkout on
its path; no torch). A study whose profile names ``runtime: NAME`` and whose own onnxruntime lacks
the provider starts ``python -m search agent`` from that venv on a free loopback port with a
fresh random token (:class:`RuntimeTarget`), measures through it exactly as through a remote
agent, and stops it at the end: the user starts nothing by hand. The agent dies with this
process (``PR_SET_PDEATHSIG``), so a killed study leaves none behind.

Example:
    >>> runtime_python("openvino")  # doctest: +SKIP
    PosixPath('/home/me/search/.runtimes/openvino/bin/python')
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from search.errors import AgentError, ProviderError
from search.measure.agent.client import AgentClient
from search.measure.measurement import Measurement
from search.measure.runtime import check_providers
from search.measure.spec import MeasureSpec

ROOT = Path(__file__).resolve().parents[2]
# Runtime name -> the provider it brings.
RUNTIMES = {"openvino": "OpenVINOExecutionProvider", "qnn": "QnnHtpExecutionProvider"}
START_TIMEOUT_S = 120.0  # importing onnxruntime-openvino on a loaded 2-core machine takes ~10 s


def runtimes_dir() -> Path:
    """Where runtimes live: ``$SEARCH_RUNTIMES`` or ``.runtimes`` in this checkout."""
    return Path(os.environ.get("SEARCH_RUNTIMES") or ROOT / ".runtimes")


def runtime_python(name: str) -> Path:
    """The interpreter of runtime ``name`` (it may not exist yet)."""
    return runtimes_dir() / name / "bin" / "python"


# Loaded before any fork: the child only calls into it (no allocation between fork and exec).
_LIBC = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: the agent ends with the study


class RuntimeTarget:
    """Measures through an agent started from runtime ``name`` on this machine, holding
    ``timing()`` around each request as a local target does; :meth:`close` stops the agent.

    Raises:
        ProviderError: the runtime is not installed (one line naming ``./setup.sh --target``),
            or it lacks a provider the spec needs.
        AgentError: the agent did not start (its last line of output says why).
    """

    def __init__(
        self,
        spec: MeasureSpec,
        name: str,
        *,
        timing: Callable[[], contextlib.AbstractContextManager] | None = None,
        timeout: float = 900.0,
    ) -> None:
        python = runtime_python(name)
        provider = RUNTIMES[name]
        if not python.is_file():
            raise ProviderError(
                f"hardware profile '{spec.name}' measures on {provider}, which runs in a runtime "
                f"of its own that is not installed: run ./setup.sh --target {name} (it makes "
                f"{python.parent.parent}), or measure through an agent with --agent URL"
            )
        self.spec, self.timing, self.name = spec, timing, name
        self.where = f"in the {name} runtime ({python.parent.parent})"
        self._tmp = tempfile.TemporaryDirectory(prefix=f"search-{name}-agent-")
        self._log = Path(self._tmp.name) / "agent.log"
        token = secrets.token_urlsafe(32)
        with self._log.open("wb") as log:
            self._proc = subprocess.Popen(
                [
                    str(python),
                    "-m",
                    "search",
                    "agent",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--describe",
                    f"{name} runtime on this machine",
                ],  # fmt: skip
                env={**os.environ, "SEARCH_AGENT_TOKEN": token},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                preexec_fn=_die_with_parent,  # only prctl, between fork and exec
            )
        try:
            url = self._wait_for_url()
            self.client = AgentClient(url, token=token, timeout=timeout)
            info = self.client.info()
            check_providers(
                spec,
                info["providers"],
                arch=info["arch"],
                where=self.where,
                version=info["onnxruntime"],
            )
        except BaseException:
            self.close()
            raise
        self.client.spec = spec
        self.device = self.client.device = info["device"]
        self.info = info

    def _wait_for_url(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            text = self._log.read_text(errors="replace")
            for line in text.splitlines():
                if line.startswith("agent listening on "):
                    return line.split()[3]
            if self._proc.poll() is not None:
                tail = (text.strip().splitlines() or ["no output"])[-1]
                raise AgentError(f"the {self.name} runtime's agent did not start: {tail[:300]}")
            time.sleep(0.1)
        raise AgentError(f"the {self.name} runtime's agent did not start in {START_TIMEOUT_S} s")

    @property
    def spec(self) -> MeasureSpec:
        """The measure spec the agent runs; setting it also sets the client's (a confirmation
        with more processes or rounds replaces it for its duration)."""
        return self._spec

    @spec.setter
    def spec(self, value: MeasureSpec) -> None:
        self._spec = value
        if getattr(self, "client", None) is not None:
            self.client.spec = value

    @contextlib.contextmanager
    def _held(self) -> Iterator[None]:
        with self.timing() if self.timing is not None else contextlib.nullcontext():
            yield

    def measure(
        self,
        path: Path | str,
        *,
        eval_inputs: np.ndarray,
        latency_input: np.ndarray,
        reference: Path | str | None = None,
    ) -> Measurement:
        with self._held():
            m = self.client.measure(
                path, eval_inputs=eval_inputs, latency_input=latency_input, reference=reference
            )
        m.extra["measured_by"] = f"local agent of the {self.name} runtime"
        return m

    def confirm(
        self,
        paths: Mapping[str, Path],
        *,
        reference: Path,
        latency_input: np.ndarray | None,
    ) -> dict[str, Any]:
        with self._held():
            out = self.client.confirm(paths, reference=reference, latency_input=latency_input)
        return {**out, "measured_by": f"local agent of the {self.name} runtime"}

    def close(self) -> None:
        """Stop the agent (SIGTERM, then SIGKILL after 10 s) and remove its folder."""
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._tmp.cleanup()

    def __enter__(self) -> RuntimeTarget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
