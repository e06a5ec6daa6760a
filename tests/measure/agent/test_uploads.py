"""No upload or profile lets a client read or write a file on the target, and the upload store
cleans up after itself and stays within its cap."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from search.measure.agent.server import AgentSettings, serve
from search.measure.agent.store import BlobStore, StoreFull
from search.measure.agent.uploads import UploadError, check_npy, check_onnx
from search.measure.measurement import unpack_outputs
from search.measure.ort_options import (
    CLIENT_SESSION_CONFIG_KEYS,
    SESSION_CONFIG_KEYS,
    check_client_options,
)
from tests.measure.agent import attacks
from tests.measure.agent.test_limits import CPU, QUICK, TOKEN
from tests.measure.agent.test_sandbox import X, _http, _npy

SECRET = b"TOP-SECRET-ssh-key-material-0123456789ab"


@pytest.fixture
def server(tmp_path, monkeypatch):
    """An agent whose working directory holds a secret beside its store."""
    (tmp_path / "secret.txt").write_bytes(SECRET)
    monkeypatch.chdir(tmp_path)
    srv = serve(AgentSettings(token=TOKEN, port=0, max_upload_bytes=1 << 20,
                              work_dir=Path("store"), max_memory_bytes=200 << 20,
                              max_seconds=20))  # fmt: skip
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _put(srv, data: bytes, kind: str) -> tuple[int | None, dict]:
    sha = hashlib.sha256(data).hexdigest()
    return _http(srv, "PUT", f"/v1/blobs/{sha}?kind={kind}", data)


@pytest.mark.parametrize("where", attacks.EXTERNAL_PLACES)
@pytest.mark.parametrize("location", ["secret.txt", "../secret.txt", "/etc/hostname"])
def test_a_model_with_external_data_anywhere_is_refused_at_upload(server, where, location):
    status, body = _put(server, attacks.external_data(where, location), "onnx")
    assert status == 400 and "another file" in body["error"], body
    assert location in body["error"] and "\n" not in body["error"]
    assert not list(server.store.root.glob("*.onnx"))


def test_external_data_is_found_before_onnx_checker_looks_for_the_file(tmp_path, monkeypatch):
    import onnx

    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret.txt").write_bytes(SECRET)
    calls = []
    monkeypatch.setattr(onnx.checker, "check_model", lambda *a, **k: calls.append(a))
    with pytest.raises(UploadError, match="another file"):
        check_onnx(attacks.external_data("initializer"))
    assert calls == []  # the checker (which resolves the location) never ran
    check_onnx(attacks.relu())
    assert len(calls) == 1


def test_an_ep_context_node_is_refused(server):
    status, body = _put(server, attacks.ep_context(), "onnx")
    assert status == 400 and "EPContext" in body["error"]


@pytest.mark.parametrize(
    "data",
    [
        _npy(np.zeros(4, np.float32)).replace(b"(4,), }" + b" " * 9, b"(8589934592,), }"),
        _npy(np.zeros(4, np.float32))[:-4],  # truncated
        _npy(np.zeros(4, np.float32)) + b"\x00" * 4,  # trailing bytes
        _npy(np.array(["a", "b"])),  # text, not numbers
    ],
    ids=["claims-32-GiB", "truncated", "trailing", "strings"],
)
def test_a_npy_whose_header_lies_or_holds_no_numbers_is_refused(data):
    with pytest.raises(UploadError):
        check_npy(data)


def test_a_plain_npy_is_accepted():
    check_npy(_npy(np.ones((2, 3), np.float32)))
    check_npy(_npy(np.arange(5)))


PATH_KEYS = sorted(SESSION_CONFIG_KEYS - CLIENT_SESSION_CONFIG_KEYS)


def test_every_key_a_client_may_set_is_one_onnx_runtime_reads():
    assert CLIENT_SESSION_CONFIG_KEYS <= SESSION_CONFIG_KEYS


@pytest.mark.parametrize(
    "key",
    [
        "session.model_external_initializers_file_folder_path",
        "session.collect_node_memory_stats_to_file",
        "session.optimized_model_filepath",
        "session.optimized_model_external_initializers_file_name",
        "session.enable_profiling",
        "session.debug_layout_transformation",
        "session.node_partition_config_file",
        "optimization.memory_optimizer_config",
        "ep.context_file_path",
        "ep.context_enable",
        "session.moe.offload.derived_cache_dir",
        "session.moe_expert_counter_state_file",
    ],
)
def test_session_keys_that_name_or_write_files_are_refused_from_a_client(key):
    assert key in PATH_KEYS
    with pytest.raises(ValueError, match="not accepted from a client"):
        check_client_options({key: "x"}, {"CPUExecutionProvider": {}})


def test_a_listed_key_with_a_path_for_a_value_is_refused():
    for value in ("../x", "/tmp/x", "a\\b", "line\nbreak", "~root", "x" * 2000):
        with pytest.raises(ValueError, match="value the agent does not accept"):
            check_client_options(
                {"optimization.disable_specified_optimizers": value}, {"CPUExecutionProvider": {}}
            )
    check_client_options({"session.intra_op.allow_spinning": "0"}, {"CPUExecutionProvider": {}})


@pytest.mark.parametrize(
    ("provider", "key"),
    [
        ("TensorrtExecutionProvider", "trt_engine_cache_path"),
        ("TensorrtExecutionProvider", "trt_extra_plugin_lib_paths"),
        ("TensorrtExecutionProvider", "trt_int8_calibration_table_name"),
        ("QNNExecutionProvider", "backend_path"),
        ("OpenVINOExecutionProvider", "cache_dir"),
        ("OpenVINOExecutionProvider", "load_config"),
        ("CUDAExecutionProvider", "user_compute_stream"),
        ("CUDAExecutionProvider", "gpu_external_alloc"),
    ],
)
def test_provider_options_that_name_a_path_library_or_pointer_are_refused(provider, key):
    with pytest.raises(ValueError, match="not accepted from a client"):
        check_client_options({}, {provider: {key: "1"}})
    with pytest.raises(ValueError, match="not accepted from a client"):  # as a session key
        check_client_options({f"ep.{provider.lower()}.{key}": "1"}, {provider: {}})


def test_ordinary_provider_options_pass():
    check_client_options(
        {"session.disable_cpu_ep_fallback": "1"},
        {"CUDAExecutionProvider": {"device_id": 0, "cudnn_conv_algo_search": "EXHAUSTIVE",
                                   "do_copy_in_default_stream": 1},
         "OpenVINOExecutionProvider": {"device_type": "CPU", "num_streams": "1"}},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("session.collect_node_memory_stats_to_file", "../WRITTEN.txt"),
        ("session.optimized_model_filepath", "../WRITTEN.onnx"),
        ("session.enable_profiling", "1"),
        ("session.model_external_initializers_file_folder_path", "."),
    ],
)
def test_the_agent_refuses_such_a_profile_and_writes_nothing(server, tmp_path, key, value):
    before = sorted(p.name for p in tmp_path.rglob("*"))
    x = hashlib.sha256(_npy(X)).hexdigest()
    assert _put(server, _npy(X), "npy")[0] == 201
    relu = hashlib.sha256(attacks.relu()).hexdigest()
    assert _put(server, attacks.relu(), "onnx")[0] == 201
    profile = {"providers": CPU, "measure": QUICK, "session_config": {key: value}}
    request = {"model": relu, "eval_inputs": x, "latency_input": x, "profile": profile}
    status, body = _http(server, "POST", "/v1/measure", json.dumps(request).encode())
    assert status == 400 and "not accepted from a client" in body["error"]
    after = sorted(p.name for p in tmp_path.rglob("*"))
    assert set(after) - set(before) <= {f"{relu}.onnx", f"{x}.npy"}


# ------------------------------------------------------------------------------ the store


def test_leftover_part_files_and_scratch_folders_go_at_start(tmp_path):
    root = tmp_path / "store"
    root.mkdir(mode=0o700)
    (root / f"{'a' * 64}.npy.1234.part").write_bytes(b"x" * 100)
    (root / f"{'b' * 64}.part").write_bytes(b"x")
    (root / "run-abc").mkdir()
    (root / "run-abc" / "profile.json").write_text("{}")
    (root / f"{'c' * 64}.npy").write_bytes(_npy(X))
    store = BlobStore(root, cap=1 << 20)
    assert store.removed == 3
    assert sorted(p.name for p in root.iterdir()) == [f"{'c' * 64}.npy"]


def test_a_full_disk_leaves_no_part_file(tmp_path, monkeypatch):
    root = tmp_path / "store"
    root.mkdir(mode=0o700)
    store = BlobStore(root, cap=1 << 20)
    real = Path.write_bytes

    def half_then_full(self, data):  # what ENOSPC does half-way through a write
        real(self, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", half_then_full)
    with pytest.raises(StoreFull, match="disk is full"):
        store.put("d" * 64, "npy", _npy(X))
    assert list(root.iterdir()) == []


def test_the_store_evicts_idle_blobs_then_refuses_with_507(server):
    store = server.store
    store.cap = 3 * 2**18  # room for two 300 KB uploads, not three
    blobs = [_npy(np.full(75_000, i, np.float32)) for i in range(3)]
    assert _put(server, blobs[0], "npy")[0] == 201
    assert _put(server, blobs[1], "npy")[0] == 201
    status, body = _put(server, blobs[2], "npy")
    assert status == 507 and "--max-store-mb" in body["error"]  # both in use: refused
    first = store.path(hashlib.sha256(blobs[0]).hexdigest())
    old = time.time() - 3600
    os.utime(first, (old, old))  # not used for an hour: may go
    assert _put(server, blobs[2], "npy")[0] == 201
    assert not first.exists() and store.used() <= store.cap
    assert not list(store.root.glob("*.part"))


def test_uploads_in_flight_are_bounded_in_memory(server):
    assert server.settings.max_upload_bytes == 1 << 20
    with server.receive(1 << 20) as a, server.receive(1 << 20) as b:
        assert a and b
        status, body = _put(server, _npy(X), "npy")  # a third would pass twice the limit
    assert status == 503 and body["retry_after"] == 1
    assert _put(server, _npy(X), "npy")[0] == 201


def test_outputs_of_a_measurement_are_plain_arrays(server):
    x = hashlib.sha256(_npy(X)).hexdigest()
    _put(server, _npy(X), "npy")
    relu = hashlib.sha256(attacks.relu()).hexdigest()
    _put(server, attacks.relu(), "onnx")
    request = {"model": relu, "eval_inputs": x, "latency_input": x,
               "profile": {"providers": CPU, "measure": QUICK}}  # fmt: skip
    status, body = _http(server, "POST", "/v1/measure", json.dumps(request).encode())
    assert status == 200
    outputs = server.store.path(body["outputs"])
    packed = np.load(io.BytesIO(outputs.read_bytes()), allow_pickle=False)  # no pickle
    (relu_out,) = unpack_outputs(packed, body["output_layout"])
    assert np.array_equal(relu_out, np.maximum(X, 0))
