"""The measurement agent: authentication, upload limits, no pickles, and a study measured on it."""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import io
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import yaml

from search.errors import AgentError, SearchError
from search.measure.agent.client import AgentClient
from search.measure.agent.server import AgentSettings, serve
from tests.conftest import REPO as ROOT

TOKEN = "test-token-0123456789"
LABEL = "tiny-test-board (agent under test)"


@pytest.fixture
def server():
    """An agent in this process, so tests can look at what it counted."""
    srv = serve(AgentSettings(token=TOKEN, port=0, max_upload_bytes=4096, label=LABEL))
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _raw(srv, method: str, path: str, *, token: str | None, body: bytes = b"", length=None):
    host, port = srv.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.putrequest(method, path)
    if token is not None:
        conn.putheader("Authorization", f"Bearer {token}")
    conn.putheader("Content-Length", str(len(body) if length is None else length))
    conn.endheaders()
    if body:
        conn.send(body)
    resp = conn.getresponse()
    status, data = resp.status, resp.read()
    conn.close()
    return status, data


def _npy(array: np.ndarray, *, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


def test_wrong_or_missing_token_gets_401_and_runs_nothing(server):
    data = _npy(np.zeros(4, np.float32))
    sha = hashlib.sha256(data).hexdigest()
    for token in ("wrong-token-xxxx", None, TOKEN + "x"):
        status, _ = _raw(server, "PUT", f"/v1/blobs/{sha}?kind=npy", token=token, body=data)
        assert status == 401
        request = json.dumps({"model": sha, "eval_inputs": sha, "latency_input": sha}).encode()
        assert _raw(server, "POST", "/v1/measure", token=token, body=request)[0] == 401
        assert _raw(server, "GET", "/v1/info", token=token)[0] == 401
    assert server.counts == {"uploads": 0, "measurements": 0, "confirmations": 0, "refused": 9}
    assert server.blob(sha) is None
    # The same upload with the right token is accepted, so the 401s were about the token.
    assert _raw(server, "PUT", f"/v1/blobs/{sha}?kind=npy", token=TOKEN, body=data)[0] == 201
    assert server.blob(sha) is not None


def test_oversized_upload_is_refused_from_its_length(server):
    big = _npy(np.zeros(4096, np.float32))  # 16 KiB, over the 4 KiB limit
    sha = hashlib.sha256(big).hexdigest()
    status, data = _raw(server, "PUT", f"/v1/blobs/{sha}?kind=npy", token=TOKEN, body=big)
    assert status == 413 and b"exceeds the limit" in data
    # A declared length alone is enough: the agent answers before a byte of the body arrives.
    status, _ = _raw(server, "PUT", f"/v1/blobs/{sha}?kind=npy", token=TOKEN, length=10**9)
    assert status == 413
    assert server.counts["uploads"] == 0 and server.blob(sha) is None
    client = AgentClient(server.url, token=TOKEN)
    with pytest.raises(AgentError, match="over the agent's limit"):
        client.upload(big, "npy")


def test_only_onnx_and_plain_arrays_are_accepted(server):
    pickled = _npy(np.array([{"a": 1}], dtype=object), allow_pickle=True)
    sha = hashlib.sha256(pickled).hexdigest()
    status, data = _raw(server, "PUT", f"/v1/blobs/{sha}?kind=npy", token=TOKEN, body=pickled)
    assert status == 400 and b"pickle" in data
    junk = b"not an onnx model"
    sha = hashlib.sha256(junk).hexdigest()
    assert _raw(server, "PUT", f"/v1/blobs/{sha}?kind=onnx", token=TOKEN, body=junk)[0] == 400
    assert _raw(server, "PUT", f"/v1/blobs/{sha}?kind=pkl", token=TOKEN, body=junk)[0] == 400
    # The address must be the content's hash.
    good = _npy(np.ones(2, np.float32))
    assert _raw(server, "PUT", f"/v1/blobs/{'0' * 64}?kind=npy", token=TOKEN, body=good)[0] == 400
    assert server.counts["uploads"] == 0


def test_client_reports_a_wrong_token_in_one_line(server):
    client = AgentClient(server.url, token="wrong-token-xxxx")
    with pytest.raises(AgentError, match="refused the token"):
        client.info()
    info = AgentClient(server.url, token=TOKEN).info()
    assert info["device"].endswith(LABEL)
    # The agent says what it measures with: the onnxruntime build, plugins, emulation.
    assert info["runtime"]["build"] == "onnxruntime" and info["runtime"]["emulated"] is None


def test_agent_command_does_not_import_torch():
    env = {**os.environ, "SEARCH_AGENT_TOKEN": TOKEN}
    proc = subprocess.Popen(
        [sys.executable, "-c", AGENT_NO_TORCH],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "agent listening on http://127.0.0.1:" in out
    assert "heavy imported: []" in out  # needs only this package, onnxruntime and numpy


# Runs the real `agent` command until it listens, then stops it and lists heavy modules loaded.
AGENT_NO_TORCH = """
import sys, threading
from search.measure.agent import server as agent
served = []
real = agent.AgentServer.serve_forever
def once(self, poll_interval=0.5):
    served.append(self)
    threading.Thread(target=self.shutdown).start()
    real(self, poll_interval)
agent.AgentServer.serve_forever = once
from search.cli.main import main
assert main(["agent", "--port", "0"]) == 0 and served
heavy = {"torch", "optuna", "pydantic", "yaml", "sklearn", "pandas"}
print("heavy imported:", sorted(m for m in sys.modules if m.split(".")[0] in heavy))
"""


# ------------------------------------------------------------------ a study measured on the agent


TINY_SPACE = """
search: {sampler: random, trials: 2, startup_trials: 1}
prune: {ratio: {low: 0.0, high: 0.5}}
distill: {epochs: 1, batch_size: 32}
early_stop: {min_epochs: 1, max_accuracy_drop: 1.0}
"""

FAST_MEASURE = {
    "warmup_runs": 2,
    "warmup_seconds": 0.0,
    "min_runs": 10,
    "min_seconds": 0.0,
    "memory_runs": 1,
}


@pytest.fixture
def agent_process(tmp_path_factory):
    """The real `python -m search agent` command on 127.0.0.1, in its own process."""
    store = tmp_path_factory.mktemp("agent-store")
    cmd = [
        sys.executable,
        "-m",
        "search",
        "agent",
        "--work-dir",
        str(store),
        "--port",
        "0",
        "--token",
        TOKEN,
        "--describe",
        LABEL,
        "--max-upload-mb",
        "1",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert "agent listening on" in line, line
    yield line.split()[3], store
    proc.terminate()
    proc.wait(timeout=10)


@pytest.mark.slow
def test_two_trial_study_is_measured_on_the_agent(tmp_path, agent_process, monkeypatch):
    from optuna import load_study

    from search.config import load_profile, load_space
    from search.study import StudySpec, run_study

    url, store = agent_process

    monkeypatch.setenv("SEARCH_AGENT_TOKEN", TOKEN)
    base = load_profile("cpu")
    data = {**base.model_dump(exclude={"name", "path"}), "agent": url, "measure": FAST_MEASURE}
    profile_path = tmp_path / "agent-cpu.yaml"  # a file: report --confirm reads it again
    profile_path.write_text(yaml.safe_dump(data))
    profile = load_profile(str(profile_path))
    space_path = tmp_path / "tiny.yaml"
    space_path.write_text(TINY_SPACE)
    spec = StudySpec(
        task="tests.tiny_task:make_random_task",
        space=load_space(str(space_path)),
        profile=profile,
        study_name="tiny-agent",
        results_dir=tmp_path,
    )
    started = time.perf_counter()
    study = run_study(spec, trials=2, progress=False)
    assert time.perf_counter() - started < 120
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 2, [t.user_attrs.get("fail_reason") for t in study.trials]
    for t in done:
        m = t.user_attrs["record"]["measurement"]
        assert m["device"].endswith(LABEL)
        assert m["measured_by"] == f"agent {url}"
        assert m["providers"] == ["CPUExecutionProvider"]
        assert m["onnxruntime"]
        assert m["latency"][0]["runs"] >= 10
        assert m["paired"]["relative"] > 0  # paired with the baseline, on the agent
        # What ran was audited where it ran (no "?" through an agent), and said by whom.
        kernels = t.user_attrs["record"]["kernels"]
        assert isinstance(kernels["integer_layers"], int), kernels
        assert "optimized graph" in kernels["method"]
        assert m["runtime"]["onnxruntime"] and m["timing"] == "device"
    assert study.user_attrs["baseline"]["measurement"]["device"].endswith(LABEL)
    # The front was confirmed on the agent, at the end of run, interleaved with the baseline.
    confirmed = study.user_attrs["confirmed"]
    assert confirmed["measured_by"] == f"agent {url}" and confirmed["device"].endswith(LABEL)
    assert confirmed["trials"] and all(
        r["latency_relative"] > 0 for r in confirmed["trials"].values()
    )
    # The inputs and the baseline (the reference) were uploaded once and kept; each model and
    # its outputs were dropped after use (the confirmation's models too).
    assert sorted(p.suffix for p in store.iterdir()) == [".npy", ".npy", ".onnx"]
    # report --confirm measures there again (the profile's agent); on this machine (--agent
    # local) it is refused in one line: the study was measured on the agent's device.
    from search.cli.main import main

    study.set_user_attr("confirmed", None)
    where = ["--study", "tiny-agent", "--results-dir", str(tmp_path), "--no-png"]
    assert main(["report", "--confirm", *where]) == 0
    again = load_study(study_name="tiny-agent", storage=spec.storage_url).user_attrs["confirmed"]
    assert again["measured_by"] == f"agent {url}" and again["rounds"] > 0
    assert main(["report", "--confirm", "--agent", "local", *where]) == 2
    # Resuming it measured elsewhere (here, without the agent's label) is refused before a trial.
    local = profile.model_validate({**profile.model_dump(), "agent": None})
    with pytest.raises(SearchError, match="was measured on"):
        run_study(dataclasses.replace(spec, profile=local), trials=3, progress=False)
    assert len(load_study(study_name="tiny-agent", storage=spec.storage_url).trials) == 2


def test_bad_confirm_requests_get_400_or_409_and_run_nothing(server):
    good = _npy(np.zeros((1, 4), dtype=np.float32))
    sha = hashlib.sha256(good).hexdigest()
    assert _raw(server, "PUT", f"/v1/blobs/{sha}?kind=npy", token=TOKEN, body=good)[0] == 201
    missing = "1" * 64
    cases = {
        b"not json": 400,
        b"[]": 400,
        json.dumps({"models": {"0": missing}}).encode(): 400,  # no reference, input, profile
        json.dumps(
            {"models": {"reference": missing}, "reference": missing, "latency_input": None,
             "profile": {}}
        ).encode(): 400,  # a model may not take the reference's name
        json.dumps(
            {"models": {"0": missing}, "reference": missing, "latency_input": sha, "profile": {}}
        ).encode(): 409,  # not uploaded
        json.dumps(
            {"models": {"0": sha}, "reference": sha, "latency_input": sha, "profile": {}}
        ).encode(): 409,  # an array is not a model
    }  # fmt: skip
    for body, status in cases.items():
        got, data = _raw(server, "POST", "/v1/confirm", token=TOKEN, body=body)
        assert got == status, (body, data)
        assert "error" in json.loads(data)
    assert server.counts["confirmations"] == 0
