"""Attack the measurement agent over loopback and count what it refused or bounded.

Starts ``python -m search agent`` (token from a 0600 file, 1 MiB uploads, a 4 MiB store,
256 MiB and 8 s a measurement, idle timeout 3 s, at most 16 connections), then sends it the
attacks of the shared cases rel-agent-idle-connections and agent-* plus more: missing and wrong
tokens, oversized and disguised uploads, pickles, path traversal, malformed JSON, profiles and
HTTP, stalled bodies, idle and surplus connections (here); external data in every place a
tensor can be, EPContext nodes, session and provider options that name files, memory bombs,
models that run for days, lying .npy headers, a full store, concurrent uploads, bad token
files and out-of-range flags (agent_probe_sandbox.py).

Each attack has the answers that refuse or bound it. While it is in flight a valid request
(GET /v1/info) is sent, and after it another; after each attack that reaches a measurement a
valid measurement must also succeed. Prints one line per attack, ``refused N/M``, the agent's
peak memory (VmHWM), the largest peak of a measuring child and the longest time to answer;
writes the table to results/agent-probe.json.

    .venv/bin/python benchmarks/agent_probe.py        # about 3 minutes
"""

# hit() runs each attack (a lambda over loop variables) before the loop moves on.
# ruff: noqa: B023

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
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the attack models live in tests/measure/agent/attacks.py
TOKEN = "correct-horse-battery-staple-42"
RESULTS: list[dict] = []
PROFILE = {"providers": [{"name": "CPUExecutionProvider"}],
           "measure": {"min_runs": 3, "min_seconds": 0.0, "warmup_runs": 1,
                       "warmup_seconds": 0.0, "memory_runs": 1}}  # fmt: skip
LIMITS = ["--max-memory-mb", "256", "--max-seconds", "8", "--max-store-mb", "4"]


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


ADDR: tuple[str, int] = ("127.0.0.1", 0)  # the agent's, once started
VALID: Callable[[], int | None] | None = None  # a valid measurement, once its blobs are there


def record(name: str, status, expected, *, control: bool = False, **more) -> None:
    ok = status in (expected if isinstance(expected, tuple) else (expected,))
    ok = ok and all(v in (200, True, None) for k, v in more.items() if not k.endswith("seconds")
                    and not k.endswith("_s"))  # fmt: skip
    RESULTS.append({"attack": name, "status": status, "expected": expected, "ok": ok,
                    "control": control, **more})  # fmt: skip
    extra = " ".join(f"{k}={v}" for k, v in more.items() if v is not None)
    print(
        f"{'control' if control else 'attack ':8} {name:58} {status!s:>5} "
        f"{'ok' if ok else 'FAIL'} {extra}",
        flush=True,
    )


def hit(name: str, send: Callable[[], object], expected, *, measure_after: bool = False) -> None:
    """Run the attack ``send()``; a valid request while it is in flight and after it (and a
    valid measurement after it) must be answered 200."""
    box: dict[str, object] = {}
    started = time.monotonic()
    thread = threading.Thread(target=lambda: box.update(status=send()), daemon=True)
    thread.start()
    thread.join(0.05)
    asked = time.monotonic()
    during = req(ADDR, "GET", "/v1/info")
    during_s = round(time.monotonic() - asked, 3)
    thread.join(180)
    seconds = round(time.monotonic() - started, 2)
    after = req(ADDR, "GET", "/v1/info")
    valid = VALID() if measure_after and VALID is not None else None
    record(name, box.get("status", "no answer"), expected, during=during, after=after,
           measured_after=valid, seconds=seconds, during_s=during_s)  # fmt: skip


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
    """The agent, working in ``work`` beside a secret file no client may read."""
    token_file = work / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    (work / "secret.txt").write_text("TOP-SECRET-ssh-key-material-0123456789abcdef\n")
    args = [sys.executable, "-m", "search", "agent", "--port", "0", "--token-file",
            str(token_file), "--work-dir", str(work / "store"), "--max-upload-mb", "1",
            "--idle-timeout", "3", "--max-connections", "16", *LIMITS]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(args, cwd=work, env=env, stdout=subprocess.PIPE, text=True)
    url = proc.stdout.readline().split()[3]
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # its pipe never fills
    host, port = url.removeprefix("http://").split(":")
    return proc, (host, int(port))


def auth_attacks(addr, sha: str) -> None:
    hit("GET /v1/info without token", lambda: req(addr, "GET", "/v1/info", token=None), 401)
    hit(
        "wrong token, same length",
        lambda: req(addr, "GET", "/v1/info", token="X" * len(TOKEN)),
        401,
    )
    hit("wrong token, shorter", lambda: req(addr, "GET", "/v1/info", token="abc"), 401)
    hit("token plus one character", lambda: req(addr, "GET", "/v1/info", token=TOKEN + "x"), 401)
    hit(
        "token in the query string",
        lambda: req(addr, "GET", f"/v1/info?token={TOKEN}", token=None),
        401,
    )
    basic = {"Authorization": f"Basic {TOKEN}"}
    hit("token as Basic auth", lambda: req(addr, "GET", "/v1/info", token=None, **basic), 401)
    hit("non-ASCII token", lambda: req(addr, "GET", "/v1/info", token="é" * 10), 401)
    hit(
        "PUT without token",
        lambda: req(addr, "PUT", f"/v1/blobs/{sha}?kind=onnx", token=None),
        401,
    )
    hit(
        "POST measure without token",
        lambda: req(addr, "POST", "/v1/measure", b"{}", token=None),
        401,
    )
    hit("DELETE without token", lambda: req(addr, "DELETE", f"/v1/blobs/{sha}", token=None), 401)
    hit("HEAD without token", lambda: req(addr, "HEAD", f"/v1/blobs/{sha}", token=None), 401)
    hit("PATCH without token", lambda: req(addr, "PATCH", "/v1/info", token=None), (401, 405))


def upload_attacks(addr, marker: Path, blobs: dict[str, bytes]) -> None:
    for name, kind in (("onnx", "onnx"), ("x", "npy"), ("x1", "npy")):
        sha = hashlib.sha256(blobs[name]).hexdigest()
        record(f"PUT a valid {kind}", req(addr, "PUT", f"/v1/blobs/{sha}?kind={kind}",
                                           blobs[name]), 201, control=True)  # fmt: skip
    big = os.urandom(2 * 2**20)
    sha = hashlib.sha256(big).hexdigest()
    hit(
        "PUT 2 MiB over a 1 MiB limit",
        lambda: req(addr, "PUT", f"/v1/blobs/{sha}?kind=onnx", big),
        413,
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
        hit(f"PUT {name}", lambda: req(addr, "PUT", f"/v1/blobs/{sha}?kind={kind}", data), 400)
    hit("PUT under a wrong sha256", lambda: req(addr, "PUT", f"/v1/blobs/{'0' * 64}?kind=npy",
                                           blobs["x"]), 400)  # fmt: skip
    traversals = (
        "/v1/blobs/../../etc/passwd",
        "/v1/blobs/..%2f..%2fetc%2fpasswd",
        "/v1/blobs/" + "a" * 63 + "/",
        "//etc/passwd",
        "/v1/blobs/" + "A" * 64,
    )
    for path in traversals:
        hit(f"GET traversal {path[:36]}", lambda: req(addr, "GET", path), (400, 404))
    hit("PUT traversal name", lambda: req(addr, "PUT", "/v1/blobs/../../../tmp/evil?kind=npy",
                                     blobs["x"]), (400, 404))  # fmt: skip


def measure_attacks(addr, shas: dict[str, str]) -> None:
    prof = {"providers": [{"name": "CPUExecutionProvider"}],
            "measure": {"min_runs": 3, "min_seconds": 0.0, "warmup_runs": 1,
                        "warmup_seconds": 0.0, "memory_runs": 1}}  # fmt: skip
    good = {"model": shas["onnx"], "eval_inputs": shas["x"], "latency_input": shas["x1"]}

    def measure(body) -> int | None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return req(addr, "POST", "/v1/measure", data)

    hit("model '../../etc/passwd'", lambda: measure({**good, "model": "../../etc/passwd",
                                                "profile": prof}), 409)  # fmt: skip
    hit(
        "model = an array's sha",
        lambda: measure({**good, "model": shas["x"], "profile": prof}),
        409,
    )
    hit("model never uploaded", lambda: measure({**good, "model": "b" * 64, "profile": prof}), 409)
    hit("eval_inputs = the model's sha", lambda: measure({**good, "eval_inputs": shas["onnx"],
                                                     "profile": prof}), 409)  # fmt: skip
    hit("malformed JSON", lambda: measure(b"{not json"), 400)
    hit("a JSON list", lambda: measure(b"[1,2]"), 400)
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
        hit(f"profile: {name}", lambda: measure({**good, "profile": profile}), 400)
    hit("inputs the model cannot take", lambda: measure({**good, "eval_inputs": shas["bad"],
                                                    "profile": prof}), 400)  # fmt: skip
    for name, value in (("huge", "9" * 23), ("negative", "-5"), ("non-numeric", "abc"),
                        ("superscript two", "\u00b2"), ("missing", None)):  # fmt: skip
        hit(f"Content-Length {name}", lambda: req(addr, "POST", "/v1/measure", b"{}",
                                              Content_Length=value), (411, 413))  # fmt: skip
    hit("unknown route GET /admin", lambda: req(addr, "GET", "/admin"), 404)
    hit("unknown method PATCH", lambda: req(addr, "PATCH", "/v1/info"), 405)
    hit("request line of 70 KB", lambda: raw(addr, b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n"),
           (400, 414))  # fmt: skip
    hit("garbage bytes", lambda: raw(addr, b"\x00\x01\x02garbage\r\n\r\n"), 400)
    hit("HTTP/9.9", lambda: raw(addr, b"GET /v1/info HTTP/9.9\r\n\r\n"), 400)
    hit("one-word request line", lambda: raw(addr, b"GET\r\n\r\n"), 400)
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
    hit(
        "body stalled half-way (authorized)", lambda: raw(addr, head.encode() + b"x" * 10, 20), 408
    )
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
    global ADDR, VALID
    import agent_probe_sandbox as sandbox  # noqa: PLC0415 - beside this file

    work = Path(tempfile.mkdtemp(prefix="agent-probe-"))
    marker = work / "PWNED_agent"
    proc, addr = start(work)
    ADDR = addr
    probe = sys.modules[__name__]
    try:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((4, 1, 4, 4)).astype(np.float32)
        blobs = {"onnx": tiny_onnx(), "x": npy(x), "x1": npy(x[:1]),
                 "bad": npy(np.zeros((2, 3), np.float32))}  # fmt: skip
        shas = {k: hashlib.sha256(v).hexdigest() for k, v in blobs.items()}
        good = {"model": shas["onnx"], "eval_inputs": shas["x"], "latency_input": shas["x1"]}
        VALID = lambda: sandbox._measure(probe, good)  # noqa: E731
        auth_attacks(addr, shas["onnx"])
        upload_attacks(addr, marker, blobs)
        sha = shas["bad"]
        req(addr, "PUT", f"/v1/blobs/{sha}?kind=npy", blobs["bad"])
        measure_attacks(addr, shas)
        sandbox.file_attacks(probe, good)
        sandbox.bomb_attacks(probe, good)
        sandbox.upload_attacks(probe, good, work / "store")
        connection_attacks(addr, proc.pid)
        sandbox.start_attacks(probe, work)
        record("the agent is alive at the end", proc.poll() is None, True, control=True)
        record("no pickle payload ran (marker file)", marker.exists(), False)
        left = sorted(p.name for p in work.iterdir())
        record("nothing written beside the store", left,
               ["big-token", "fifo", "secret.txt", "spaced-token", "store", "token"])  # fmt: skip
        mode = oct((work / "store").stat().st_mode & 0o777)
        record("upload folder mode", mode, "0o700")
        children = json.loads(_info_body(addr))["children"]
        hwm = [ln for ln in open(f"/proc/{proc.pid}/status") if ln.startswith("VmHWM")]
        agent_peak = hwm[0].split(None, 1)[1].strip()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    attacks = [r for r in RESULTS if not r["control"]]
    controls = [r for r in RESULTS if r["control"]]
    refused = sum(r["ok"] for r in attacks)
    timed = [r["seconds"] for r in RESULTS if r.get("seconds") is not None]
    during = [r["during_s"] for r in RESULTS if r.get("during_s") is not None]
    ok = sum(r["ok"] for r in controls)
    print(f"refused {refused}/{len(attacks)} attacks; controls ok {ok}/{len(controls)}; "
          f"limits {' '.join(LIMITS)}")  # fmt: skip
    print(f"agent peak memory (VmHWM) {agent_peak}; largest peak of a measuring child "
          f"{children['peak_mb']:.0f} MB; longest measurement {children['longest_s']:.1f} s; "
          f"longest time to answer an attack {max(timed):.1f} s; a valid request during one "
          f"{max(during):.2f} s")  # fmt: skip
    out = REPO / "results" / "agent-probe.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(RESULTS, indent=1, default=str))
    return 0 if refused == len(attacks) and all(r["ok"] for r in controls) else 1


def _info_body(addr) -> bytes:
    head = f"GET /v1/info HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
    with socket.create_connection(addr, timeout=10) as s:
        s.sendall((head + "Connection: close\r\n\r\n").encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.partition(b"\r\n\r\n")[2]


if __name__ == "__main__":
    raise SystemExit(main())
