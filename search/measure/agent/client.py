"""The client side of the measurement agent (see :mod:`search.measure.agent.server` for the
protocol)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from search.errors import AgentError, ProviderError
from search.measure.latency import LatencyStats
from search.measure.measurement import Measurement, unpack_outputs
from search.measure.memory import MemoryStats
from search.measure.ort_options import check_client_options
from search.measure.runtime import check_providers
from search.measure.spec import MeasureSpec

_START = "start it on the device with 'python -m search agent --host 0.0.0.0 --port 8765'"


class AgentLimitError(RuntimeError):
    """The agent stopped this model's measurement at its memory (413) or time (408) limit: the
    trial fails, the study goes on (another model may fit)."""


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    # In its own dtype: a model on token ids takes int64, not float32.
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


class AgentClient:
    """Measures ONNX files on a remote agent; the same interface as a local target.

    Uploads are addressed by SHA-256 and skipped when the agent already holds them, so the
    evaluation inputs cross the network once per study, and each model once.

    Example:
        >>> client = AgentClient("http://127.0.0.1:8765", token="s3cret-token")  # doctest: +SKIP
        >>> client.info()["providers"]  # doctest: +SKIP
        ['CPUExecutionProvider']
    """

    def __init__(
        self,
        url: str,
        *,
        token: str,
        timeout: float = 900.0,
        token_env: str = "SEARCH_AGENT_TOKEN",
    ) -> None:
        self.url = url.rstrip("/")
        self.where = f"on the agent at {self.url}"
        self.token = token
        self.token_env = token_env  # named in the message when the agent refuses the token
        self.timeout = timeout
        self.spec: MeasureSpec | None = None
        self.device = ""
        self._info: dict[str, Any] | None = None
        self._arrays: dict[int, tuple[np.ndarray, str]] = {}

    @classmethod
    def connect(
        cls, url: str, *, spec: MeasureSpec, token_env: str, timeout: float = 900.0
    ) -> AgentClient:
        """Connect to the agent at ``url`` (token from ``$token_env``) and check it can run
        ``spec``; raise :class:`AgentError` or :class:`ProviderError` if not."""
        token = os.environ.get(token_env, "")
        if not token:
            raise AgentError(
                f"hardware profile '{spec.name}' measures through the agent at {url}: set "
                f"{token_env} to the token the agent was started with, or pass --agent local "
                "to measure here"
            )
        try:  # what the agent would refuse, refused here before the study starts
            options = {p.name: dict(p.options) for p in spec.providers}
            check_client_options(spec.session_config, options)
        except ValueError as e:
            raise AgentError(f"hardware profile '{spec.name}' cannot be measured through an "
                             f"agent: {e}") from None  # fmt: skip
        client = cls(url, token=token, timeout=timeout, token_env=token_env)
        info = client.info()
        check_providers(
            spec,
            info["providers"],
            arch=info["arch"],
            where=client.where,
            version=info["onnxruntime"],
        )
        client.spec = spec
        client.device = info["device"]
        return client

    # ------------------------------------------------------------------------------ transport

    def _request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        ctype: str = "",
        timeout: float | None = None,
    ) -> tuple[int, bytes]:
        # The agent answers 503 while it measures for another client (or receives other
        # uploads): wait as long as it says, within this client's timeout.
        give_up = time.monotonic() + (timeout or self.timeout)
        while True:
            status, data, retry_after = self._once(method, path, body, ctype, timeout)
            wait = min(max(retry_after, 1.0), 30.0)
            if status != 503 or time.monotonic() + wait > give_up:
                return status, data
            time.sleep(wait)

    def _once(
        self, method: str, path: str, body: bytes | None, ctype: str, timeout: float | None
    ) -> tuple[int, bytes, float]:
        req = urllib.request.Request(self.url + path, data=body, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        if ctype:
            req.add_header("Content-Type", ctype)
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                return resp.status, resp.read(), 0.0
        except urllib.error.HTTPError as e:
            try:
                retry_after = float(e.headers.get("Retry-After") or 1.0)
            except ValueError:
                retry_after = 1.0
            return e.code, e.read(), retry_after
        except (urllib.error.URLError, OSError, ValueError) as e:  # ValueError: a bad header
            reason = getattr(e, "reason", e)
            raise AgentError(
                f"cannot reach the agent at {self.url} ({reason}): {_START}"
            ) from None

    def _checked(self, status: int, data: bytes, what: str) -> bytes:
        if status < 400:
            return data
        try:
            body = json.loads(data)
            detail, kind = body.get("error", ""), body.get("type", "")
        except (ValueError, AttributeError):
            body, detail, kind = {}, data[:200].decode(errors="replace"), ""
        if status == 401:
            raise AgentError(
                f"the agent at {self.url} refused the token: set {self.token_env} to the "
                "token it was started with"
            )
        if status in (408, 413) and "limits" in body:
            raise AgentLimitError(f"the agent at {self.url} stopped {what}: {detail}")
        if status == 413:
            raise AgentError(
                f"the agent at {self.url} refused {what}: {detail}; restart it with a larger "
                "--max-upload-mb"
            )
        if kind == "ProviderError":
            raise ProviderError(f"{detail} ({self.where})")
        raise AgentError(f"the agent at {self.url} failed {what} (HTTP {status}): {detail}")

    # ------------------------------------------------------------------------------ API

    def info(self) -> dict[str, Any]:
        """The agent's providers, onnxruntime version, architecture, device and upload limit."""
        if self._info is None:
            # A short timeout: an unreachable host should fail the check fast, not in 15 minutes.
            status, data = self._request("GET", "/v1/info", timeout=min(10.0, self.timeout))
            self._info = json.loads(self._checked(status, data, "to describe itself"))
        return self._info

    def upload(self, data: bytes, kind: str) -> str:
        """Store ``data`` (an ONNX file or .npy bytes) on the agent unless it has it; its hash."""
        sha = hashlib.sha256(data).hexdigest()
        status, _ = self._request("HEAD", f"/v1/blobs/{sha}")
        if status == 200:
            return sha
        limit = self.info()["max_upload_bytes"]
        if len(data) > limit:
            raise AgentError(
                f"the {kind} upload is {len(data) / 2**20:.1f} MiB, over the agent's limit of "
                f"{limit / 2**20:.1f} MiB: restart the agent with a larger --max-upload-mb"
            )
        status, body = self._request(
            "PUT", f"/v1/blobs/{sha}?kind={kind}", data, ctype="application/octet-stream"
        )
        self._checked(status, body, f"the {kind} upload")
        return sha

    def _send_again_if_evicted(
        self, send: Callable[[], tuple[int, bytes, str]]
    ) -> tuple[int, bytes, str]:
        """``send()``, once more after uploading again if the agent answered 409: its store
        evicted an upload idle for a while (the evaluation inputs of a long trial)."""
        status, data, sha = send()
        if status == 409:
            self._arrays.clear()
            status, data, sha = send()
        return status, data, sha

    def _array(self, array: np.ndarray) -> str:
        # The study passes the same arrays every trial: serialize and hash them once.
        held = self._arrays.get(id(array))
        if held is not None and held[0] is array:
            return held[1]
        sha = self.upload(_npy(array), "npy")
        self._arrays[id(array)] = (array, sha)
        return sha

    def measure(
        self,
        path: Path | str,
        *,
        eval_inputs: np.ndarray,
        latency_input: np.ndarray,
        reference: Path | str | None = None,
    ) -> Measurement:
        """Measure ``path`` on the agent as the spec says (see :meth:`connect`); with
        ``reference`` (kept on the agent between calls) its latency is paired with that file's
        there."""
        spec = self.spec
        if spec is None:
            raise ValueError("connect() the client to a spec before measuring")

        def send() -> tuple[int, bytes, str]:
            model = self.upload(Path(path).read_bytes(), "onnx")
            request = {
                "model": model,
                "eval_inputs": self._array(eval_inputs),
                "latency_input": self._array(latency_input),
                "profile": spec.to_json(),
            }
            if reference is not None:
                request["reference"] = self.upload(Path(reference).read_bytes(), "onnx")
            body = json.dumps(request).encode()
            return *self._request("POST", "/v1/measure", body, ctype="application/json"), model

        status, data, model = self._send_again_if_evicted(send)
        summary = json.loads(self._checked(status, data, f"to measure {Path(path).name}"))
        outputs_sha = summary.pop("outputs")
        layout = summary.pop("output_layout", None)
        status, data = self._request("GET", f"/v1/blobs/{outputs_sha}")
        packed = np.load(io.BytesIO(self._checked(status, data, "outputs")), allow_pickle=False)
        # An agent of this version packs every output into one blob; an older one sent the
        # first output alone.
        outputs = unpack_outputs(packed, layout) if layout is not None else [packed]
        # Each trial's model and outputs are used once: keep the target's disk from filling up.
        for sha in (model, outputs_sha):
            self._request("DELETE", f"/v1/blobs/{sha}")
        extra = {
            k: v
            for k, v in summary.items()
            if k not in ("latency", "memory", "size_bytes", "providers", "onnxruntime", "device")
        }
        return Measurement(
            outputs=outputs,
            latency=[LatencyStats(**s) for s in summary["latency"]],
            memory=MemoryStats(**summary["memory"]),
            size_bytes=summary["size_bytes"],
            providers=summary["providers"],
            onnxruntime=summary["onnxruntime"],
            device=summary["device"],
            extra={**extra, "measured_by": f"agent {self.url}"},
        )

    def confirm(
        self,
        paths: Mapping[str, Path],
        *,
        reference: Path,
        latency_input: np.ndarray | None,
    ) -> dict[str, Any]:
        """Time ``paths`` (name -> ONNX file) interleaved with ``reference`` on the agent
        (``POST /v1/confirm``, :func:`~search.measure.confirmation.time_files` there); the
        models are dropped from the agent afterwards."""
        spec = self.spec
        if spec is None:
            raise ValueError("connect() the client to a spec before confirming")
        models: dict[str, str] = {}

        def send() -> tuple[int, bytes, str]:
            models.update({n: self.upload(Path(p).read_bytes(), "onnx") for n, p in paths.items()})
            request = {
                "models": models,
                "reference": self.upload(Path(reference).read_bytes(), "onnx"),
                "latency_input": None if latency_input is None else self._array(latency_input),
                "profile": spec.to_json(),
            }
            body = json.dumps(request).encode()
            return *self._request("POST", "/v1/confirm", body, ctype="application/json"), ""

        status, data, _ = self._send_again_if_evicted(send)
        try:
            out = json.loads(self._checked(status, data, "to confirm the front"))
        except AgentLimitError as e:  # no trial to fail here: the agent's limits are too tight
            raise AgentError(f"{e}; restart the agent with larger limits") from None
        for sha in models.values():
            self._request("DELETE", f"/v1/blobs/{sha}")
        return {**out, "measured_by": f"agent {self.url}"}
