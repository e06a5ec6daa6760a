"""The agent against careless or hostile clients: idle and surplus connections, malformed
requests (400, never 500 or silence), its upload folder, and where its token comes from."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import socket
import stat
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from search.errors import AgentError
from search.measure.agent.server import AgentSettings, serve
from search.measure.agent.token import agent_token

TOKEN = "test-token-0123456789"


@pytest.fixture
def server(tmp_path):
    srv = serve(
        AgentSettings(
            token=TOKEN,
            port=0,
            max_upload_bytes=1 << 20,
            work_dir=tmp_path / "uploads",
            idle_timeout=0.5,
            max_connections=4,
        )
    )
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _send(srv, data: bytes, timeout: float = 5.0) -> tuple[int | None, bytes]:
    """Send raw bytes; the status of the answer (None when none came) and its body."""
    with socket.create_connection(srv.server_address[:2], timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
    resp = b"".join(chunks)
    status = int(resp.split(b" ")[1]) if resp.startswith(b"HTTP/") else None
    return status, resp.partition(b"\r\n\r\n")[2]


def _request(srv, method: str, path: str, body: bytes = b"", **headers: str) -> int | None:
    head = {"Host": "x", "Authorization": f"Bearer {TOKEN}", "Content-Length": str(len(body))}
    head.update({k.replace("_", "-"): v for k, v in headers.items()})
    lines = "".join(f"{k}: {v}\r\n" for k, v in head.items())
    return _send(srv, f"{method} {path} HTTP/1.1\r\n{lines}\r\n".encode("latin-1") + body)[0]


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def test_idle_connections_are_closed(server):
    idle = [socket.create_connection(server.server_address[:2]) for _ in range(3)]
    time.sleep(1.5)
    for s in idle:
        s.settimeout(2.0)
        assert s.recv(1) == b""  # closed by the agent, not by us
        s.close()
    assert _request(server, "GET", "/v1/info") == 200


def test_idle_connections_give_way_to_new_ones(server):
    held = [socket.create_connection(server.server_address[:2]) for _ in range(8)]
    time.sleep(0.1)
    assert _request(server, "GET", "/v1/info") == 200  # the cap is 4: an idle one made room
    for s in held:
        s.close()


def test_beyond_the_cap_of_busy_connections_the_answer_is_503(server):
    head = (
        f"PUT /v1/blobs/{'1' * 64}?kind=npy HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Length: 1000\r\n\r\n"
    ).encode()
    busy = []
    for _ in range(4):  # each sent its head and is inside its body: a real request
        s = socket.create_connection(server.server_address[:2])
        s.sendall(head + b"x")
        busy.append(s)
    time.sleep(0.2)
    status, body = _send(server, b"GET /v1/info HTTP/1.1\r\n\r\n")
    assert status == 503 and b"too many connections" in body
    for s in busy:
        s.close()
    assert _eventually(lambda: _request(server, "GET", "/v1/info") == 200)  # the cap freed


def _eventually(check, within: float = 10.0) -> bool:
    """Whether `check()` comes true within `within` seconds (a loaded CI machine may take a while
    to run the server's threads); what is asserted is the outcome, not how fast it came."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_a_trickled_request_head_is_cut_at_the_idle_timeout(server):
    s = socket.create_connection(server.server_address[:2])
    started = time.time()
    with contextlib.suppress(OSError):
        for ch in b"GET /v1/info HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
            s.send(bytes([ch]))
            time.sleep(0.1)
    assert time.time() - started < 3  # cut after 0.5 s, long before the 12 s of trickling
    s.close()


def _tiny_onnx() -> bytes:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["input"], ["output"])],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 4, 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1, 4, 4])],
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)]
    ).SerializeToString()


def _upload(srv, data: bytes, kind: str) -> str:
    sha = hashlib.sha256(data).hexdigest()
    assert _request(srv, "PUT", f"/v1/blobs/{sha}?kind={kind}", data) == 201
    return sha


CPU = [{"name": "CPUExecutionProvider"}]
QUICK = {"min_runs": 2, "min_seconds": 0.0, "warmup_runs": 0, "warmup_seconds": 0.0,
         "memory_runs": 1}  # fmt: skip


@pytest.mark.parametrize(
    "profile",
    [
        {"providers": 5},
        {"providers": [{"name": "evil"}]},
        {"providers": CPU, "measure": 3},
        {"providers": CPU, "measure": {**QUICK, "max_runs": 1, "min_runs": 5}},
        {"providers": CPU, "session_config": {"session.bogus": "1"}},
        {"providers": [{"name": "CPUExecutionProvider", "options": {"use_arena": 0}}]},
        {"providers": CPU, "batch_sizes": [10**9]},
        {"providers": CPU, "threads": {"intra_op": "many"}},
        "not an object",
    ],
)
def test_malformed_measure_requests_get_400(server, profile):
    model = _upload(server, _tiny_onnx(), "onnx")
    x = _upload(server, _npy(np.zeros((2, 1, 4, 4), np.float32)), "npy")
    request = {"model": model, "eval_inputs": x, "latency_input": x, "profile": profile}
    assert _request(server, "POST", "/v1/measure", json.dumps(request).encode()) == 400


def test_inputs_the_model_cannot_take_get_400_and_a_good_request_200(server):
    model = _upload(server, _tiny_onnx(), "onnx")
    wrong = _upload(server, _npy(np.zeros((2, 3), np.float32)), "npy")
    good = _upload(server, _npy(np.zeros((2, 1, 4, 4), np.float32)), "npy")
    profile = {"providers": CPU, "measure": QUICK}
    for inputs, status in ((wrong, 400), (good, 200)):
        request = {"model": model, "eval_inputs": inputs, "latency_input": inputs,
                   "profile": profile}  # fmt: skip
        assert _request(server, "POST", "/v1/measure", json.dumps(request).encode()) == status


AUTH = f"Authorization: Bearer {TOKEN}\r\n".encode()


@pytest.mark.parametrize(
    "raw",
    [
        b"\x00\x01\x02garbage\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
        b"POST /v1/measure HTTP/1.1\r\n" + AUTH + b"Content-Length: \xc2\xb2\r\n\r\n{}",
        b"POST /v1/measure HTTP/1.1\r\n" + AUTH + b"Content-Length: -5\r\n\r\n{}",
        b"POST /v1/measure HTTP/1.1\r\n" + AUTH + b"Content-Length: 2\r\n\r\n[]",
        b"POST /v1/measure HTTP/1.1\r\n" + AUTH + b"Content-Length: 5\r\n\r\n{nope",
    ],
    ids=[
        "garbage",
        "one-word",
        "bad-version",
        "long-line",
        "superscript-length",
        "negative-length",
        "json-list",
        "not-json",
    ],  # fmt: skip
)
def test_malformed_requests_get_an_answer_in_the_4xx_range(server, raw):
    status, _ = _send(server, raw)
    assert status is not None and 400 <= status < 500, status


def test_upload_folder_is_private(tmp_path, server):
    assert stat.S_IMODE((tmp_path / "uploads").stat().st_mode) == 0o700


def test_token_from_a_file_and_warnings(tmp_path, monkeypatch):
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    assert agent_token(token=None, token_file=path) == (TOKEN, [])
    path.chmod(0o644)
    assert "chmod 600" in agent_token(token=None, token_file=path)[1][0]
    monkeypatch.setenv("SEARCH_AGENT_TOKEN", "from-the-environment")
    assert agent_token(token=None, token_file=None) == ("from-the-environment", [])
    token, warnings = agent_token(token=TOKEN, token_file=None)
    assert token == TOKEN and "visible to other users" in warnings[0]
    with pytest.raises(AgentError, match="once"):
        agent_token(token=TOKEN, token_file=path)
    with pytest.raises(AgentError, match="does not exist"):
        agent_token(token=None, token_file=Path(tmp_path / "nope"))


@pytest.mark.parametrize("kind", ["devzero", "fifo", "folder", "big"])
def test_a_token_file_that_is_not_a_small_regular_file_is_refused_at_once(tmp_path, kind):
    import os

    path = {"devzero": Path("/dev/zero"), "fifo": tmp_path / "fifo", "folder": tmp_path,
            "big": tmp_path / "big"}[kind]  # fmt: skip
    if kind == "fifo":
        os.mkfifo(path)  # opening it to read would wait for a writer forever
    if kind == "big":
        path.write_text(TOKEN + "x" * 10_000)
    started = time.monotonic()
    with pytest.raises(AgentError, match="not a regular file|at most 4096 bytes"):
        agent_token(token=None, token_file=path)
    assert time.monotonic() - started < 1


@pytest.mark.parametrize(
    "token", ["with space-0123456789", "tab\there-0123456789", "bell\x07-0123456789",
              "nul\x00-0123456789", "é-accented-0123456789", "x" * 2000],
    ids=["space", "tab", "bell", "nul", "non-ascii", "too-long"],
)  # fmt: skip
def test_tokens_with_whitespace_or_control_characters_are_refused(tmp_path, token):
    with pytest.raises(AgentError) as e:
        AgentSettings(token=token, port=0)
    assert "\n" not in str(e.value) and token not in str(e.value)  # where, never the secret
    path = tmp_path / "token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    with pytest.raises(AgentError):
        AgentSettings(token=agent_token(token=None, token_file=path)[0], port=0)


@pytest.mark.parametrize(
    "args",
    [
        ["--max-seconds", "-5"],
        ["--max-seconds", "1e9"],
        ["--max-seconds", "nan"],
        ["--max-memory-mb", "0"],
        ["--max-memory-mb", "1e12"],
        ["--max-store-mb", "-1"],
        ["--max-upload-mb", "inf"],
        ["--max-upload-mb", "0"],
        ["--idle-timeout", "-1"],
        ["--max-connections", "0"],
        ["--max-connections", "100000"],
        ["--port", "70000"],
        ["--max-upload-mb", "100", "--max-store-mb", "10"],
        ["--token-file", "/dev/zero"],
    ],
)
def test_out_of_range_agent_flags_are_one_line_and_exit_2(args, capsys, monkeypatch):
    from search.cli.main import main

    monkeypatch.setenv("SEARCH_AGENT_TOKEN", TOKEN)
    assert main(["agent", "--port", "0", *args]) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and not captured.out, captured
    assert args[0] in lines[0] or "token" in lines[0]
