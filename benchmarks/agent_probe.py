"""Attack the measurement agent over loopback and count what it refused.

Starts ``python -m search agent`` (token from a 0600 file, 1 MiB uploads, idle timeout 3 s, at
most 16 connections), then sends it the attacks of the shared case rel-agent-idle-connections
plus more: missing and wrong tokens, oversized and disguised uploads, pickles, path traversal,
malformed JSON, profiles and HTTP, stalled bodies, idle and surplus connections. Each attack
has the answer that refuses it; a control request must still succeed. Prints one line per
attack and ``refused N/M``; writes the table to results/agent-probe.json.

    .venv/bin/python benchmarks/agent_probe.py        # about 40 s
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
TOKEN = "correct-horse-battery-staple-42"
RESULTS: list[dict] = []


def raw(addr, data: bytes, timeout: float = 10.0) -> int | None:
    """Send ``data`` on a new connection; the HTTP status of the answer, None if none came."""
    with socket.create_connection(addr, timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
    resp = b"".join(chunks)
    return int(resp.split(b" ")[1]) if resp.startswith(b"HTTP/") else None


def req(addr, method, path, body=b"", token: str | None = TOKEN, **headers) -> int | None:
    h = {"Host": "x", "Content-Length": str(len(body)), "Connection": "close"}
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    h.update({k.replace("_", "-"): v for k, v in headers.items()})
    head = "".join(f"{k}: {v}\r\n" for k, v in h.items() if v is not None)
    return raw(addr, f"{method} {path} HTTP/1.1\r\n{head}\r\n".encode("latin-1") + body)


def record(name: str, status, expected, *, control: bool = False) -> None:
    ok = status in (expected if isinstance(expected, tuple) else (expected,))
    RESULTS.append({"attack": name, "status": status, "expected": expected, "ok": ok,
                    "control": control})  # fmt: skip
    print(
        f"{'control' if control else 'attack ':8} {name:58} {status!s:>5} {'ok' if ok else 'FAIL'}"
    )


def npy(a: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=allow_pickle)
    return buf.getvalue()


def tiny_onnx() -> bytes:
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


class Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def start(work: Path) -> tuple[subprocess.Popen, tuple[str, int]]:
    token_file = work / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    args = [sys.executable, "-m", "search", "agent", "--port", "0", "--token-file",
            str(token_file), "--work-dir", str(work / "store"), "--max-upload-mb", "1",
            "--idle-timeout", "3", "--max-connections", "16"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    url = proc.stdout.readline().split()[3]
    host, port = url.removeprefix("http://").split(":")
    return proc, (host, int(port))


def auth_attacks(addr, sha: str) -> None:
    record("GET /v1/info without token", req(addr, "GET", "/v1/info", token=None), 401)
    record("wrong token, same length", req(addr, "GET", "/v1/info", token="X" * len(TOKEN)), 401)
    record("wrong token, shorter", req(addr, "GET", "/v1/info", token="abc"), 401)
    record("token plus one character", req(addr, "GET", "/v1/info", token=TOKEN + "x"), 401)
    record(
        "token in the query string", req(addr, "GET", f"/v1/info?token={TOKEN}", token=None), 401
    )
    basic = {"Authorization": f"Basic {TOKEN}"}
    record("token as Basic auth", req(addr, "GET", "/v1/info", token=None, **basic), 401)
    record("non-ASCII token", req(addr, "GET", "/v1/info", token="é" * 10), 401)
    record("PUT without token", req(addr, "PUT", f"/v1/blobs/{sha}?kind=onnx", token=None), 401)
    record("POST measure without token", req(addr, "POST", "/v1/measure", b"{}", token=None), 401)
    record("DELETE without token", req(addr, "DELETE", f"/v1/blobs/{sha}", token=None), 401)
    record("HEAD without token", req(addr, "HEAD", f"/v1/blobs/{sha}", token=None), 401)
    record("PATCH without token", req(addr, "PATCH", "/v1/info", token=None), (401, 405))


def upload_attacks(addr, marker: Path, blobs: dict[str, bytes]) -> None:
    for name, kind in (("onnx", "onnx"), ("x", "npy"), ("x1", "npy")):
        sha = hashlib.sha256(blobs[name]).hexdigest()
        record(f"PUT a valid {kind}", req(addr, "PUT", f"/v1/blobs/{sha}?kind={kind}",
                                           blobs[name]), 201, control=True)  # fmt: skip
    big = os.urandom(2 * 2**20)
    sha = hashlib.sha256(big).hexdigest()
    record(
        "PUT 2 MiB over a 1 MiB limit", req(addr, "PUT", f"/v1/blobs/{sha}?kind=onnx", big), 413
    )
    pk = pickle.dumps(Evil(marker))
    hdr = b"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    crafted = b"\x93NUMPY\x01\x00" + len(hdr + b"\n").to_bytes(2, "little") + hdr + b"\n" + pk
    for name, data, kind in (
        ("non-ONNX bytes as onnx", b"not an onnx file" * 10, "onnx"),
        (".npy of Python objects", npy(np.array([{"a": 1}, None], dtype=object), True), "npy"),
        ("pickle disguised as .npy", pk, "npy"),
        ("pickle as kind=pkl", pk, "pkl"),
        ("crafted .npy header '|O' with a pickle", crafted, "npy"),
    ):
        sha = hashlib.sha256(data).hexdigest()
        record(f"PUT {name}", req(addr, "PUT", f"/v1/blobs/{sha}?kind={kind}", data), 400)
    record("PUT under a wrong sha256", req(addr, "PUT", f"/v1/blobs/{'0' * 64}?kind=npy",
                                           blobs["x"]), 400)  # fmt: skip
    traversals = (
        "/v1/blobs/../../etc/passwd",
        "/v1/blobs/..%2f..%2fetc%2fpasswd",
        "/v1/blobs/" + "a" * 63 + "/",
        "//etc/passwd",
        "/v1/blobs/" + "A" * 64,
    )
    for path in traversals:
        record(f"GET traversal {path[:36]}", req(addr, "GET", path), (400, 404))
    record("PUT traversal name", req(addr, "PUT", "/v1/blobs/../../../tmp/evil?kind=npy",
                                     blobs["x"]), (400, 404))  # fmt: skip


def measure_attacks(addr, shas: dict[str, str]) -> None:
    prof = {"providers": [{"name": "CPUExecutionProvider"}],
            "measure": {"min_runs": 3, "min_seconds": 0.0, "warmup_runs": 1,
                        "warmup_seconds": 0.0, "memory_runs": 1}}  # fmt: skip
    good = {"model": shas["onnx"], "eval_inputs": shas["x"], "latency_input": shas["x1"]}

    def measure(body) -> int | None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return req(addr, "POST", "/v1/measure", data)

    record("model '../../etc/passwd'", measure({**good, "model": "../../etc/passwd",
                                                "profile": prof}), 409)  # fmt: skip
    record("model = an array's sha", measure({**good, "model": shas["x"], "profile": prof}), 409)
    record("model never uploaded", measure({**good, "model": "b" * 64, "profile": prof}), 409)
    record("eval_inputs = the model's sha", measure({**good, "eval_inputs": shas["onnx"],
                                                     "profile": prof}), 409)  # fmt: skip
    record("malformed JSON", measure(b"{not json"), 400)
    record("a JSON list", measure(b"[1,2]"), 400)
    for name, profile in (
        ("provider 'evil'", {"providers": [{"name": "evil"}]}),
        ("providers a number", {"providers": 5}),
        ("measure not an object", {**prof, "measure": 3}),
        ("batch size 10**9", {**prof, "batch_sizes": [10**9]}),
        ("misspelled session_config key", {**prof, "session_config": {"session.bogus": "1"}}),
        (
            "CPU provider options",
            {"providers": [{"name": "CPUExecutionProvider", "options": {"use_arena": 0}}]},
        ),  # fmt: skip
        ("threads as text", {**prof, "threads": {"intra_op": "many"}}),
        ("max_runs below min_runs", {**prof, "measure": {"min_runs": 9, "max_runs": 2}}),
    ):
        record(f"profile: {name}", measure({**good, "profile": profile}), 400)
    record("inputs the model cannot take", measure({**good, "eval_inputs": shas["bad"],
                                                    "profile": prof}), 400)  # fmt: skip
    for name, value in (("huge", "9" * 23), ("negative", "-5"), ("non-numeric", "abc"),
                        ("superscript two", "\u00b2"), ("missing", None)):  # fmt: skip
        record(f"Content-Length {name}", req(addr, "POST", "/v1/measure", b"{}",
                                              Content_Length=value), (411, 413))  # fmt: skip
    record("unknown route GET /admin", req(addr, "GET", "/admin"), 404)
    record("unknown method PATCH", req(addr, "PATCH", "/v1/info"), 405)
    record("request line of 70 KB", raw(addr, b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n"),
           (400, 414))  # fmt: skip
    record("garbage bytes", raw(addr, b"\x00\x01\x02garbage\r\n\r\n"), 400)
    record("HTTP/9.9", raw(addr, b"GET /v1/info HTTP/9.9\r\n\r\n"), 400)
    record("one-word request line", raw(addr, b"GET\r\n\r\n"), 400)
    record("valid measurement", measure({**good, "profile": prof}), 200, control=True)


def _still_open(s: socket.socket) -> bool:
    """Whether the agent still holds ``s`` open (whatever it answered before closing it)."""
    s.setblocking(False)
    try:
        while s.recv(65536):
            pass
        return False  # end of stream: closed by the agent
    except BlockingIOError:
        return True
    except OSError:
        return False


def connection_attacks(addr, pid: int) -> None:
    head = f"PUT /v1/blobs/{'1' * 64}?kind=npy HTTP/1.1\r\nHost: x\r\n"
    head += f"Authorization: Bearer {TOKEN}\r\nContent-Length: 1000\r\n\r\n"
    record("body stalled half-way (authorized)", raw(addr, head.encode() + b"x" * 10, 20), 408)
    trickle = socket.create_connection(addr)
    started = time.time()
    for ch in b"GET /v1/info HTTP/1.1\r\nHost: x\r\n":
        try:
            trickle.send(bytes([ch]))
        except OSError:
            break
        time.sleep(0.5)
        if time.time() - started > 10:
            break
    record("headers trickled a byte every 0.5 s, cut", "closed" if not _still_open(trickle)
           else "open", "closed")  # fmt: skip
    trickle.close()
    idle = [socket.create_connection(addr, timeout=5) for _ in range(100)]
    time.sleep(1.0)
    threads = len(os.listdir(f"/proc/{pid}/task"))  # a handler and its deadline timer each
    record("agent threads while 100 idle connections wait (at most 2 x 16 + 4)",
           "bounded" if threads <= 36 else f"{threads}", "bounded")  # fmt: skip
    record("a real request among 100 idle connections", req(addr, "GET", "/v1/info"), 200,
           control=True)  # fmt: skip
    time.sleep(3.5)
    left = sum(_still_open(s) for s in idle)
    record("idle connections still open after the 3 s timeout", left, 0)
    for s in idle:
        s.close()
    record("the agent answers after the flood", req(addr, "GET", "/v1/info"), 200, control=True)
    codes = [req(addr, "GET", "/v1/info", token=None if i % 2 else "wrong-token-123")
             for i in range(200)]  # fmt: skip
    record("200 requests with no or a wrong token", 401 if set(codes) == {401} else codes, 401)


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="agent-probe-"))
    marker = work / "PWNED_agent"
    proc, addr = start(work)
    try:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((4, 1, 4, 4)).astype(np.float32)
        blobs = {"onnx": tiny_onnx(), "x": npy(x), "x1": npy(x[:1]),
                 "bad": npy(np.zeros((2, 3), np.float32))}  # fmt: skip
        shas = {k: hashlib.sha256(v).hexdigest() for k, v in blobs.items()}
        auth_attacks(addr, shas["onnx"])
        upload_attacks(addr, marker, blobs)
        sha = shas["bad"]
        req(addr, "PUT", f"/v1/blobs/{sha}?kind=npy", blobs["bad"])
        measure_attacks(addr, shas)
        connection_attacks(addr, proc.pid)
        record("the agent is alive at the end", proc.poll() is None, True, control=True)
        record("no pickle payload ran (marker file)", marker.exists(), False)
        mode = oct((work / "store").stat().st_mode & 0o777)
        record("upload folder mode", mode, "0o700")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    attacks = [r for r in RESULTS if not r["control"]]
    controls = [r for r in RESULTS if r["control"]]
    refused = sum(r["ok"] for r in attacks)
    print(f"refused {refused}/{len(attacks)} attacks; controls ok "
          f"{sum(r['ok'] for r in controls)}/{len(controls)}")  # fmt: skip
    out = REPO / "results" / "agent-probe.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(RESULTS, indent=1, default=str))
    return 0 if refused == len(attacks) and all(r["ok"] for r in controls) else 1


if __name__ == "__main__":
    raise SystemExit(main())
