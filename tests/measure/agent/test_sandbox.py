"""The agent as a sandbox: what a client's model allocates and how long it runs are bounded,
other clients get answers meanwhile, and honest measurements come out as they do locally."""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import time

import numpy as np
import pytest

from search.measure.agent.client import AgentClient, AgentLimitError
from search.measure.agent.server import AgentSettings, serve
from search.measure.measurement import measure_onnx
from search.measure.spec import MeasureSpec
from tests.measure.agent import attacks
from tests.measure.agent.test_limits import CPU, QUICK, TOKEN, _send

LIMIT_MB = 200  # small, so a bomb fails fast and the test stays quick


@pytest.fixture
def server(tmp_path):
    srv = serve(
        AgentSettings(
            token=TOKEN,
            port=0,
            max_upload_bytes=1 << 20,
            work_dir=tmp_path / "store",
            max_memory_bytes=LIMIT_MB << 20,
            max_seconds=4.0,  # a control measurement takes about 1 s (2 on a busy machine)
        )
    )
    srv.busy_wait_s = 0.5
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _http(srv, method: str, path: str, body: bytes = b"") -> tuple[int | None, dict]:
    head = (f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()  # fmt: skip
    status, data = _send(srv, head + body, timeout=60)
    try:
        return status, json.loads(data or b"{}")
    except ValueError:
        return status, {}


def _request(srv, method: str, path: str, body: bytes = b"") -> int | None:
    return _http(srv, method, path, body)[0]


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _put(srv, data: bytes, kind: str) -> str:
    sha = hashlib.sha256(data).hexdigest()
    assert _request(srv, "PUT", f"/v1/blobs/{sha}?kind={kind}", data) == 201
    return sha


X = np.random.default_rng(0).standard_normal((3, 1, 4, 4)).astype(np.float32)


def _measure(srv, model: bytes, profile: dict | None = None) -> tuple[int | None, dict]:
    x = _put(srv, _npy(X), "npy")
    request = {"model": _put(srv, model, "onnx"), "eval_inputs": x, "latency_input": x,
               "profile": profile or {"providers": CPU, "measure": QUICK}}  # fmt: skip
    return _http(srv, "POST", "/v1/measure", json.dumps(request).encode())


def _vm_hwm_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.parametrize("kind", attacks.BOMBS)
def test_a_memory_bomb_is_stopped_at_the_limit_and_the_agent_goes_on(server, kind):
    before = _vm_hwm_mb()
    status, body = _measure(server, attacks.memory_bomb(kind, 2**28))  # 1 GiB of floats
    assert status == 413, body
    assert "memory limit" in body["error"] and body["limits"]["max_memory_mb"] == LIMIT_MB
    assert _vm_hwm_mb() - before < 100  # the agent's own peak did not move
    assert _measure(server, attacks.relu())[0] == 200


@pytest.mark.parametrize("kind", attacks.LONG)
def test_a_long_running_model_is_stopped_at_the_time_limit(server, kind):
    started = time.monotonic()
    status, body = _measure(server, attacks.long_running(kind))
    assert status == 408 and "--max-seconds" in body["error"], body
    assert time.monotonic() - started < 15
    assert _measure(server, attacks.relu())[0] == 200


def test_while_one_measurement_runs_other_clients_get_answers(server):
    x = _put(server, _npy(X), "npy")
    loop = _put(server, attacks.long_running("loop"), "onnx")
    done: list = []
    request = {"model": loop, "eval_inputs": x, "latency_input": x,
               "profile": {"providers": CPU, "measure": QUICK}}  # fmt: skip
    body = json.dumps(request).encode()
    thread = threading.Thread(
        target=lambda: done.append(_request(server, "POST", "/v1/measure", body))
    )
    thread.start()
    time.sleep(0.5)
    started = time.monotonic()
    assert _request(server, "GET", "/v1/info") == 200
    assert _put(server, attacks.relu(), "onnx")  # an upload is stored meanwhile
    status, answer = _measure(server, attacks.relu())  # queued, then told it is busy
    assert status == 503 and "busy" in answer["error"] and answer["retry_after"] >= 1
    assert time.monotonic() - started < 3
    thread.join(15)
    assert done == [408]
    assert not list(server.store.root.glob("run-*"))  # the scratch folder went with it


def test_a_measurement_in_the_child_gives_what_a_local_one_gives(server, tmp_path):
    model = tmp_path / "relu.onnx"
    model.write_bytes(attacks.relu())
    client = AgentClient(server.url, token=TOKEN)
    client.spec = MeasureSpec.from_json({"providers": CPU, "measure": QUICK})
    remote = client.measure(model, eval_inputs=X, latency_input=X[:1])
    local = measure_onnx(model, spec=client.spec, eval_inputs=X, latency_input=X[:1])
    assert np.array_equal(remote.outputs, local.outputs)
    assert remote.providers == local.providers and remote.size_bytes == local.size_bytes
    assert remote.latency[0].runs >= QUICK["min_runs"]
    assert remote.memory.peak_mb > 0  # the peak-memory child ran inside the bounded one


def test_the_client_reports_a_limit_as_a_failed_model_not_a_dead_agent(server, tmp_path):
    model = tmp_path / "bomb.onnx"
    model.write_bytes(attacks.memory_bomb("tile", 2**28))
    client = AgentClient(server.url, token=TOKEN)
    client.spec = MeasureSpec.from_json({"providers": CPU, "measure": QUICK})
    with pytest.raises(AgentLimitError, match="memory limit"):
        client.measure(model, eval_inputs=X, latency_input=X[:1])


def test_the_client_waits_its_turn_while_the_agent_is_busy(server, tmp_path):
    model = tmp_path / "relu.onnx"
    model.write_bytes(attacks.relu())
    x = _put(server, _npy(X), "npy")
    loop = _put(server, attacks.long_running("while_true"), "onnx")
    request = {"model": loop, "eval_inputs": x, "latency_input": x,
               "profile": {"providers": CPU, "measure": QUICK}}  # fmt: skip
    body = json.dumps(request).encode()
    thread = threading.Thread(target=lambda: _request(server, "POST", "/v1/measure", body))
    thread.start()
    time.sleep(0.3)
    client = AgentClient(server.url, token=TOKEN)
    client.spec = MeasureSpec.from_json({"providers": CPU, "measure": QUICK})
    m = client.measure(model, eval_inputs=X, latency_input=X[:1])  # 503, retried, then 200
    assert m.outputs[0].shape == X.shape
    thread.join(15)


def test_an_evicted_input_is_uploaded_again(server, tmp_path):
    model = tmp_path / "relu.onnx"
    model.write_bytes(attacks.relu())
    client = AgentClient(server.url, token=TOKEN)
    client.spec = MeasureSpec.from_json({"providers": CPU, "measure": QUICK})
    client.measure(model, eval_inputs=X, latency_input=X[:1])
    for path in server.store.root.glob("*.npy"):
        path.unlink()  # as the store's eviction would
    m = client.measure(model, eval_inputs=X, latency_input=X[:1])
    assert m.outputs[0].shape == X.shape


def test_the_measuring_child_dies_with_the_agent_process(tmp_path):
    """A killed agent leaves no measurement running (PR_SET_PDEATHSIG, own process group)."""
    import subprocess
    import sys

    from tests.conftest import REPO

    cmd = [sys.executable, "-m", "search", "agent", "--port", "0", "--token", TOKEN,
           "--work-dir", str(tmp_path / "store"), "--max-seconds", "300"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)  # fmt: skip
    try:
        url = proc.stdout.readline().split()[3]
        client = AgentClient(url, token=TOKEN, timeout=2)
        model = tmp_path / "loop.onnx"
        model.write_bytes(attacks.long_running("loop"))
        client.spec = MeasureSpec.from_json({"providers": CPU, "measure": QUICK})
        with pytest.raises(Exception):  # noqa: B017 - the client gives up after 2 s
            client.measure(model, eval_inputs=X, latency_input=X[:1])
        children = _children(proc.pid)
        assert children, "the measurement should be running in a child"
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in children)


def _children(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found += [int(c) for c in f.read().split()]
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def test_a_confirmation_past_the_limits_is_one_agent_error(server, tmp_path):
    from search.errors import AgentError

    loop, relu = tmp_path / "loop.onnx", tmp_path / "relu.onnx"
    loop.write_bytes(attacks.long_running("loop"))
    relu.write_bytes(attacks.relu())
    client = AgentClient(server.url, token=TOKEN)
    client.spec = MeasureSpec.from_json({"providers": CPU, "measure": QUICK})
    with pytest.raises(AgentError, match="--max-seconds"):
        client.confirm({"0": loop}, reference=relu, latency_input=X[:1])
