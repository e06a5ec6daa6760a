"""The agent-as-a-sandbox attacks of benchmarks/agent_probe.py (issue 27): files named by a
model or a profile, memory and time bombs, a full store, bad token files and flags.

Every attack goes through ``probe.hit`` (a valid request during and after it); the models come
from tests/measure/agent/attacks.py.
"""

# hit() runs each attack (a lambda over loop variables) before the loop moves on.
# ruff: noqa: B023

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np

from tests.measure.agent import attacks

PATH_KEYS = (
    "session.model_external_initializers_file_folder_path",
    "session.collect_node_memory_stats_to_file",
    "session.optimized_model_filepath",
    "session.optimized_model_external_initializers_file_name",
    "session.enable_profiling",
    "session.debug_layout_transformation",
    "session.node_partition_config_file",
    "session.save_model_format",
    "optimization.memory_optimizer_config",
    "ep.context_enable",
    "ep.context_file_path",
    "ep.context_model_external_initializers_file_name",
    "session.moe.offload.derived_cache_dir",
    "session.moe_expert_counter_state_file",
    "session.use_ort_model_bytes_directly",
)
PROVIDER_PATHS = (
    ("CPUExecutionProvider", "ep.cpuexecutionprovider.cache_dir", "."),
    ("CPUExecutionProvider", "ep.cpu.backend_path", "/tmp/libevil.so"),
)
PROVIDER_OPTIONS = (
    ("TensorrtExecutionProvider", "trt_engine_cache_path"),
    ("TensorrtExecutionProvider", "trt_extra_plugin_lib_paths"),
    ("QNNExecutionProvider", "backend_path"),
    ("OpenVINOExecutionProvider", "cache_dir"),
    ("CUDAExecutionProvider", "user_compute_stream"),
    ("CUDAExecutionProvider", "gpu_external_alloc"),
)


def _put(p: ModuleType, data: bytes, kind: str) -> int | None:
    sha = hashlib.sha256(data).hexdigest()
    return p.req(p.ADDR, "PUT", f"/v1/blobs/{sha}?kind={kind}", data)


def _measure(p: ModuleType, good: dict, model: str | None = None, profile=None) -> int | None:
    body = {**good, "model": model or good["model"], "profile": profile or p.PROFILE}
    return p.raw(p.ADDR, _post(json.dumps(body).encode(), p.TOKEN), timeout=120)


def _post(body: bytes, token: str) -> bytes:
    head = (f"POST /v1/measure HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")  # fmt: skip
    return head.encode() + body


def file_attacks(p: ModuleType, good: dict) -> None:
    """External data anywhere, EPContext, and session or provider options that name files."""
    for place in attacks.EXTERNAL_PLACES:
        for location in ("secret.txt", "../secret.txt", "/etc/hostname"):
            data = attacks.external_data(place, location)
            p.hit(f"external data in {place} at {location}", lambda: _put(p, data, "onnx"), 400)
    p.hit("EPContext node naming ../../etc/passwd", lambda: _put(p, attacks.ep_context(),
                                                                   "onnx"), 400)  # fmt: skip
    for key in PATH_KEYS:
        profile = {**p.PROFILE, "session_config": {key: "../WRITTEN_BY_CLIENT"}}
        p.hit(f"session_config {key}", lambda: _measure(p, good, profile=profile), 400,
              measure_after=True)  # fmt: skip
    for _, key, value in PROVIDER_PATHS:
        profile = {**p.PROFILE, "session_config": {key: value}}
        p.hit(f"session_config {key}", lambda: _measure(p, good, profile=profile), 400)
    for value in ("../x", "/etc/passwd", "C:\\x", "a\nb"):
        profile = {
            **p.PROFILE,
            "session_config": {"optimization.disable_specified_optimizers": value},
        }
        p.hit(f"allowed key with value {value!r}", lambda: _measure(p, good, profile=profile),
              400)  # fmt: skip
    for provider, key in PROVIDER_OPTIONS:
        profile = {**p.PROFILE, "providers": [{"name": provider, "options": {key: "/tmp/x"}}]}
        p.hit(f"{provider} option {key}", lambda: _measure(p, good, profile=profile), 400)


def bomb_attacks(p: ModuleType, good: dict) -> None:
    """Models of a few hundred bytes that allocate gigabytes, and models that run for days."""
    for kind in attacks.BOMBS:
        sha = hashlib.sha256(data := attacks.memory_bomb(kind, 2**28)).hexdigest()
        _put(p, data, "onnx")
        p.hit(f"memory bomb: {kind} of 1 GiB", lambda: _measure(p, good, sha), 413,
              measure_after=True)  # fmt: skip
    for floats, size in ((2**32, "16 GiB"), (2**36, "256 GiB")):
        sha = hashlib.sha256(data := attacks.memory_bomb("constant_of_shape", floats)).hexdigest()
        _put(p, data, "onnx")
        p.hit(f"memory bomb: constant_of_shape of {size}", lambda: _measure(p, good, sha), 413,
              measure_after=True)  # fmt: skip
    for kind in attacks.LONG:
        sha = hashlib.sha256(data := attacks.long_running(kind)).hexdigest()
        _put(p, data, "onnx")
        p.hit(f"runs for days: {kind}", lambda: _measure(p, good, sha), 408, measure_after=True)
    # A second client's measurement while a Loop runs: told it is busy, with a status.
    sha = hashlib.sha256(data := attacks.long_running("loop")).hexdigest()
    _put(p, data, "onnx")
    with cf.ThreadPoolExecutor(1) as pool:
        loop = pool.submit(_measure, p, good, sha)
        time.sleep(0.5)
        p.hit("a valid measurement while a Loop runs (queued or 503 busy)",
              lambda: _measure(p, good), (200, 503))  # fmt: skip
        p.record("the Loop itself", loop.result(), 408)


def upload_attacks(p: ModuleType, good: dict, store: Path) -> None:
    """Lying .npy headers, a full store, concurrent uploads."""
    plain = p.npy(np.zeros(4, np.float32))
    lies = {
        "npy header claiming 32 GiB": plain.replace(b"(4,), }" + b" " * 9, b"(8589934592,), }"),
        "npy truncated": plain[:-4],
        "npy of strings": p.npy(np.array(["a", "b"])),
    }
    for name, data in lies.items():
        p.hit(name, lambda: _put(p, data, "npy"), 400)
    rng = np.random.default_rng(1)
    big = [p.npy(rng.standard_normal(240_000).astype(np.float32)) for _ in range(8)]
    for i, data in enumerate(big[:5]):  # the store holds 4 MiB: the fifth does not fit
        p.hit(f"~1 MiB upload {i + 1} into a 4 MiB store", lambda: _put(p, data, "npy"),
              (201, 507))  # fmt: skip
    p.record("the store refused what did not fit", _put(p, big[4], "npy"), 507)
    with cf.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda b: _put(p, b, "npy"), big))
    p.record("8 concurrent 1 MiB uploads all answered", None in codes, False)
    p.record("no .part file left", sorted(x.name for x in store.glob("*.part")), [])
    for data in big:
        p.req(p.ADDR, "DELETE", f"/v1/blobs/{hashlib.sha256(data).hexdigest()}")
    p.record("after DELETE a valid measurement", _measure(p, good), 200, control=True)


def start_attacks(p: ModuleType, work: Path) -> None:
    """Bad token files and out-of-range flags: one line, exit 2, at once."""
    fifo = work / "fifo"
    os.mkfifo(fifo)
    big = work / "big-token"
    big.write_text("x" * 100_000)
    spaced = work / "spaced-token"
    spaced.write_text("correct horse battery staple\n")
    spaced.chmod(0o600)
    cases = {
        "--token-file /dev/zero": ["--token-file", "/dev/zero"],
        "--token-file a FIFO": ["--token-file", str(fifo)],
        "--token-file a folder": ["--token-file", str(work)],
        "--token-file of 100 KB": ["--token-file", str(big)],
        "a token with spaces": ["--token-file", str(spaced)],
        "--max-seconds -5": ["--max-seconds", "-5"],
        "--max-memory-mb 1e12": ["--max-memory-mb", "1e12"],
        "--max-store-mb 0": ["--max-store-mb", "0"],
        "--max-upload-mb nan": ["--max-upload-mb", "nan"],
        "--max-connections 0": ["--max-connections", "0"],
    }
    env = {**os.environ, "PYTHONPATH": str(p.REPO), "SEARCH_AGENT_TOKEN": p.TOKEN}
    for name, args in cases.items():
        started = time.monotonic()
        try:
            proc = subprocess.run([sys.executable, "-m", "search", "agent", "--port", "0", *args],
                                  capture_output=True, text=True, timeout=30, env=env,
                                  cwd=work)  # fmt: skip
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            got = "one line, exit 2" if proc.returncode == 2 and len(lines) == 1 else (
                f"exit {proc.returncode}, {len(lines)} lines")  # fmt: skip
        except subprocess.TimeoutExpired:
            got = "hung"
        p.record(f"agent {name}", got, "one line, exit 2",
                 seconds=round(time.monotonic() - started, 2))  # fmt: skip
