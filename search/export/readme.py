"""The README written beside an exported trial: what each file is and how to run it."""

from __future__ import annotations

from typing import Any

from search.core.formatting import fmt
from search.record import PAIRED, BaselineRecord, TrialRecord


def readme(info: dict[str, Any], record: TrialRecord, baseline: BaselineRecord | None) -> str:
    """Markdown for an export folder: the trial's and the baseline's figures from their typed
    records, the rest from the exported ``trial.json`` data (``info``)."""
    return "".join((_measurements(info, record, baseline), _files(info), _usage(info)))


def _measurements(info: dict[str, Any], m: TrialRecord, b: BaselineRecord | None) -> str:
    base = b or BaselineRecord(accuracy=float("nan"), latency_paired_ms=float("nan"))
    lat = (m.measurement.get("latency") or [{}])[0]
    batch = lat.get("batch_size", "?")
    metric = info.get("metric", "accuracy")
    # Studies scored before validation-split selection kept only the test-split figure.
    split, test = "test split", ""
    if not base.scored_on_test:
        split = "validation split, selected on"
        test = (
            f"| {metric} (test split, ONNX Runtime: the figure to quote) | "
            f"{fmt(m.test_accuracy, '.4f')} | {fmt(base.test_accuracy, '.4f')} |\n"
        )
    return f"""# Trial {info["trial"]} of study `{info["study"]}`

| | this trial | baseline |
|---|---|---|
{test}| {metric} ({split}, ONNX Runtime) | {fmt(m.accuracy, ".4f")} | \
{fmt(base.accuracy, ".4f")} |
| latency p50 (paired) / p90 as measured (ms, batch {batch}) | \
{fmt(m.latency_paired_ms, ".3f")} / \
{fmt(m.latency_p90_ms, ".3f")} | {fmt(base.latency_paired_ms, ".3f")} / \
{fmt(base.latency_p90_ms, ".3f")} |
| peak inference memory (MB) | {fmt(m.peak_memory_mb, ".1f")} | \
{fmt(base.peak_memory_mb, ".1f")} |
| file size (MB) | {fmt(m.size_mb, ".3f")} | {fmt(base.size_mb, ".3f")} |

Measured on {m.measurement.get("device", "?")} with ONNX Runtime \
{m.measurement.get("onnxruntime", "?")}. {_latency_words(info, m)}Full record: \
`trial.json`.

"""


def _latency_words(info: dict[str, Any], m: TrialRecord) -> str:
    """How the p50 was measured (paired, confirmed, under load), for the README."""
    c = info.get("confirmed")
    words = ""
    if m.latency_relative is not None:
        words += (
            f"The p50 is paired: timed interleaved with the baseline, "
            f"{m.latency_relative:.3f}x "
            f"its latency (as measured: {fmt(m.latency_measured_p50_ms, '.3f')} ms). "
        )
    if m.busy:
        words += "Other processes used the cores while it was measured. "
    if c:
        low, high = c.get("latency_ci_ms") or (None, None)
        words += (
            f"Confirmed at {c.get('at', '?')} over {c.get('rounds')} interleaved rounds: p50 "
            f"{fmt(c.get(PAIRED), '.3f')} ms (95 % interval {fmt(low, '.3f')}-"
            f"{fmt(high, '.3f')})"
            + ("" if c.get("on_front") else ", no longer on the Pareto front")
            + ". "
        )
    return words


def _has_program(info: dict[str, Any]) -> bool:
    return "model.pt2" in (info.get("files") or {"model.pt2": None})


def _files(info: dict[str, Any]) -> str:
    inp, measured = info["input"], info["measured_file"]
    shape = ", ".join(str(d) for d in inp["shape"])
    quantized, program = measured != "model.onnx", _has_program(info)
    torch_file = "which `model.pt2` reproduces" if program else "(no torch program: see below)"
    if quantized:
        float_note = (
            f"`{measured}` is the quantized file that was measured; `model.onnx` is the float "
            f"model before quantization, {torch_file}."
        )
    else:
        same = " `model.pt2` holds the same float model." if program else ""
        float_note = f"`model.onnx` is the file that was measured.{same}"
    fl = "\n- `model.onnx`: the float ONNX file before quantization." if quantized else ""
    pt2 = (
        "\n- `model.pt2`: the compressed float model as a `torch.export` program, written by the "
        "trial. Loads with PyTorch alone, for inference or fine-tuning."
        if program
        else ""
    )
    return f"""## Files

- `{measured}`: the exact ONNX file that was measured (its sha256 is in `trial.json`).{fl}{pt2}
- `trial.json`: configuration, measurements, profile, package versions, how to reproduce.
- `reproduce.py`: reruns this configuration as a new study (needs the `search` project).

{float_note}

Input `{inp["name"]}`: shape ({shape}), {inp["dtype"]}; the first dimension is the batch.

"""


def _usage(info: dict[str, Any]) -> str:
    inp, measured = info["input"], info["measured_file"]
    example = ", ".join("1" if isinstance(d, str) else str(d) for d in inp["shape"])
    return f"""## Run the ONNX file (needs only `onnxruntime` and `numpy`)

```python
import numpy as np
import onnxruntime as ort

session = ort.InferenceSession("{measured}", providers=["CPUExecutionProvider"])
x = np.zeros(({example}), dtype=np.{inp["dtype"]})
logits = session.run(None, {{"{inp["name"]}": x}})[0]
```

{_torch_usage(example) if _has_program(info) else _no_program()}## Browse the whole study

The study is a plain Optuna storage: `optuna-dashboard sqlite:///results/{info["study"]}/study.db`
(`pip install optuna-dashboard`), from the search project's root.

## Reproduce

`python reproduce.py`, run from any folder with the Python that has the search package (the
project's `.venv`), reruns only this trial's configuration as the single trial of a new study
under `./results/`; it checks first that the task file, data and weights the trial read are
still there (`trial.json`: `reproduce.inputs`). `{info["reproduce"]["study_command"]}` reruns the
whole study as a new study. {info["reproduce"]["note"]}.
"""


def _torch_usage(example: str) -> str:
    return f"""## Run or fine-tune the PyTorch program (needs only `torch`)

```python
import torch

model = torch.export.load("model.pt2").module()  # no model class or search code needed
logits = model(torch.zeros({example}))  # batch size 1 to 4096
```

`model` is an `nn.Module` whose parameters are ordinary `nn.Parameter`s, so it fine-tunes like
any model (`torch.optim.SGD(model.parameters(), lr=1e-3)`, `loss.backward()`). It was exported
in inference mode: batch norm keeps its running statistics and dropout stays off, and
`model.train()` is not supported; save the result with
`torch.save(model.state_dict(), path)` (loads back with `weights_only=True`) or export it again.

Load `.pt2` files only from a source you trust: `torch.export.load` unpickles parts of the
archive and evaluates its shape expressions. This one is the file the trial wrote in the study
folder, copied without being loaded; it is as trustworthy as that folder.

"""


def _no_program() -> str:
    return """## No PyTorch program

This trial has no `model.pt2` (see the export's note and `trial.json`): the ONNX file above is
the model. `python reproduce.py` reruns the trial and writes one.

"""
