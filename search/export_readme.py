"""The README written beside an exported trial: what each file is and how to run it."""

from __future__ import annotations

from typing import Any

from search.formatting import fmt


def readme(info: dict[str, Any]) -> str:
    """Markdown for an export folder, filled in from the exported ``trial.json`` data."""
    return "".join((_measurements(info), _files(info), _usage(info)))


def _measurements(info: dict[str, Any]) -> str:
    m, b = info["measurements"], info["baseline"]
    lat = (m.get("measurement", {}).get("latency") or [{}])[0]
    batch = lat.get("batch_size", "?")
    metric = info.get("metric", "accuracy")
    return f"""# Trial {info["trial"]} of study `{info["study"]}`

| | this trial | baseline |
|---|---|---|
| {metric} (test split, ONNX Runtime) | {fmt(m.get("accuracy"), ".4f")} | \
{fmt(b.get("accuracy"), ".4f")} |
| latency p50 / p90 (ms, batch {batch}) | {fmt(m.get("latency_p50_ms"), ".3f")} / \
{fmt(m.get("latency_p90_ms"), ".3f")} | {fmt(b.get("latency_p50_ms"), ".3f")} / \
{fmt(b.get("latency_p90_ms"), ".3f")} |
| peak inference memory (MB) | {fmt(m.get("peak_memory_mb"), ".1f")} | \
{fmt(b.get("peak_memory_mb"), ".1f")} |
| file size (MB) | {fmt(m.get("size_mb"), ".3f")} | {fmt(b.get("size_mb"), ".3f")} |

Measured on {m.get("measurement", {}).get("device", "?")} with ONNX Runtime \
{m.get("measurement", {}).get("onnxruntime", "?")}. Full record: `trial.json`.

"""


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

`python reproduce.py`, run from the search project's root, reruns only this trial's
configuration as the single trial of a new study; `{info["reproduce"]["study_command"]}`
reruns the whole study. {info["reproduce"]["note"]}.
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
