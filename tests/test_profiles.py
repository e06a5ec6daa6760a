"""Hardware profiles: they load, say why, and a profile this machine cannot run stops the study."""

from __future__ import annotations

import pytest

from search.cli.main import main
from search.config import PROFILES_DIR, list_profiles, load_profile, load_space
from search.errors import ProviderError
from search.measure.runtime import check_fallback, check_providers

ALL = ["arm", "cpu", "cuda", "jetson", "openvino", "qnn-sim", "tensorrt"]


def test_profile_comments_have_no_fragments_of_removed_keys():
    # A comment wrapped after a key that was later deleted leaves a short line that stops
    # mid-sentence ("# fp32 (TF32 on Ampere+) and"); whole comments wrap near 99 columns.
    for name in ALL:
        lines = (PROFILES_DIR / f"{name}.yaml").read_text().splitlines()
        for line, after in zip(lines, lines[1:], strict=False):
            wrapped = line.strip().startswith("#") and after.strip().startswith("#")
            if wrapped and line.find("#") == after.find("#") and line.rstrip()[-1] not in ".:)":
                assert len(line) > 70, f"{name}.yaml: a fragment: {line!r}"


def test_every_profile_loads_and_explains_its_defaults():
    assert set(ALL) <= set(list_profiles())
    for name in ALL:
        profile = load_profile(name)
        text = (PROFILES_DIR / f"{name}.yaml").read_text()
        assert text.startswith("#"), f"{name}.yaml must open with a comment saying why"
        assert profile.measure_spec().required and profile.round_to and profile.batch_sizes
    jetson = load_profile("jetson")
    assert jetson.provider_names == ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    assert jetson.arch == "aarch64" and jetson.agent
    assert load_profile("arm").measure_spec().required == ["CPUExecutionProvider"]
    assert load_profile("cpu").arch == "x86_64"
    # Targets with an onnxruntime build of their own name their runtime (./setup.sh --target).
    openvino, qnn = load_profile("openvino"), load_profile("qnn-sim")
    assert openvino.runtime == "openvino" and qnn.runtime == "qnn"
    assert openvino.session_config == {"session.disable_cpu_ep_fallback": "1"}  # no fallback
    assert qnn.free_dimensions == {"batch": 1}  # QNN builds static graphs


def test_default_space_offers_each_profile_the_precisions_its_provider_runs():
    space = load_space("default").quantize
    offered = {
        name: space.choices(load_profile(name).precisions)["precision_stage1"] for name in ALL
    }
    assert offered["cpu"] == ["float", "int8"] and offered["arm"] == ["float", "int8"]
    assert offered["openvino"] == offered["qnn-sim"] == ["float", "int8"]
    assert offered["cuda"] == ["float", "fp16"]
    assert offered["tensorrt"] == offered["jetson"] == ["float", "fp16", "int8"]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_cuda_profile_exits_2_before_any_trial_and_creates_no_study(tmp_path, capsys):
    code = main(["run", "--hw", "cuda", "--trials", "1", "--results-dir", str(tmp_path)])
    assert code == 2
    err = _one_error_line(capsys)
    assert "CUDAExecutionProvider" in err and "onnxruntime-gpu" in err and "--agent" in err
    assert list(tmp_path.iterdir()) == []  # no study, no database, no artifacts


def test_arm_profile_refuses_another_architecture(tmp_path, capsys):
    code = main(["run", "--hw", "arm", "--trials", "1", "--results-dir", str(tmp_path)])
    assert code == 2
    assert "aarch64" in _one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_agent_profile_needs_a_token_and_a_reachable_agent(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SEARCH_AGENT_TOKEN", raising=False)
    args = ["run", "--hw", "jetson", "--trials", "1", "--results-dir", str(tmp_path)]
    assert main(args) == 2
    assert "SEARCH_AGENT_TOKEN" in _one_error_line(capsys)
    monkeypatch.setenv("SEARCH_AGENT_TOKEN", "some-token-123")
    assert main([*args, "--agent", "http://127.0.0.1:9"]) == 2  # port 9: nothing listens
    assert "cannot reach the agent" in _one_error_line(capsys)
    assert main([*args, "--agent", "ftp://x"]) == 2
    assert "--agent" in _one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_provider_check_uses_the_measuring_machines_providers():
    cuda = load_profile("cuda").measure_spec()
    with pytest.raises(ProviderError, match="on the agent at http://h:1"):
        check_providers(
            cuda, ["CPUExecutionProvider"], arch="x86_64", where="on the agent at http://h:1"
        )
    check_providers(cuda, ["CUDAExecutionProvider", "CPUExecutionProvider"], arch="aarch64")
    arm = load_profile("arm").measure_spec()
    check_providers(arm, ["CPUExecutionProvider"], arch="arm64")  # optional providers may lack
    with pytest.raises(ProviderError, match="targets aarch64"):
        check_providers(arm, ["CPUExecutionProvider"], arch="x86_64")


def test_a_session_without_a_requested_provider_is_a_fallback():
    with pytest.raises(ProviderError, match="fell back from CUDAExecutionProvider"):
        check_fallback(["CPUExecutionProvider"], ["CUDAExecutionProvider"], "m.onnx")
    check_fallback(
        ["CUDAExecutionProvider", "CPUExecutionProvider"], ["CUDAExecutionProvider"], "m"
    )


def test_profiles_command_says_what_is_measurable_here(capsys, monkeypatch):
    monkeypatch.delenv("SEARCH_AGENT_TOKEN", raising=False)
    assert main(["profiles"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line and line[0] != " "}
    assert "measurable here" in lines["cpu"] and "NOT" not in lines["cpu"]
    assert "NOT measurable" in lines["cuda"] and "NOT measurable" in lines["tensorrt"]
    assert "through agent http://jetson.local:8765" in lines["jetson"]
    # Measured in its runtime where ./setup.sh --target openvino made it, else the fix is named.
    assert "in the openvino runtime" in lines["openvino"] or "--target openvino" in out
