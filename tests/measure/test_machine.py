"""What a measurement says it ran on: emulation seen through qemu-user's borrowed cpuinfo, and
timings marked as the device's, emulated or simulated."""

from __future__ import annotations

import platform

from search.measure import machine

X86_CPUINFO = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold\n"
ARM_CPUINFO = "processor\t: 0\nFeatures\t: fp asimd asimddp\nCPU implementer\t: 0x41\n"


def _as(monkeypatch, arch: str, cpuinfo: str) -> None:
    monkeypatch.setattr(machine.platform, "machine", lambda: arch)
    monkeypatch.setattr(machine, "_read", lambda path: cpuinfo if "cpuinfo" in path else "")


def test_an_aarch64_process_reading_an_x86_cpuinfo_is_emulated(monkeypatch):
    _as(monkeypatch, "aarch64", X86_CPUINFO)
    monkeypatch.setenv("QEMU_CPU", "cortex-a72")
    assert machine.emulation() == "qemu-user (QEMU_CPU=cortex-a72) on Intel(R) Xeon(R) Gold"
    line = machine.describe_device("lab board")
    assert line.startswith("emulated aarch64 CPU") and "EMULATED by qemu-user" in line
    assert line.endswith("lab board") and "not this CPU's latency" in line
    assert machine.timing_of("CPUExecutionProvider").startswith("emulated: qemu-user")


def test_a_real_arm_board_and_an_x86_machine_are_not(monkeypatch):
    _as(monkeypatch, "aarch64", ARM_CPUINFO)
    assert machine.emulation() is None and "EMULATED" not in machine.describe_device()
    _as(monkeypatch, "x86_64", X86_CPUINFO)
    assert machine.emulation() is None
    assert machine.describe_device().startswith("Intel(R) Xeon(R) Gold, ")
    assert machine.timing_of("CPUExecutionProvider") == "device"
    assert machine.timing_of("QnnHtpExecutionProvider").startswith("simulated: Qualcomm's HTP")


def test_the_runtime_is_described():
    info = machine.runtime_info()
    assert info["build"] == "onnxruntime" and info["arch"] == platform.machine()
    assert info["plugins"] == {} and "openvino" not in info  # no plugin, no bundled OpenVINO
