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
    # Studies scored before validation-split selection kept only the test-split figure.
    split = "validation split, selected on" if "test_accuracy" in m else "test split"
    return f"""# Trial {info["trial"]} of study `{info["study"]}`

| | this trial | baseline |
|---|---|---|
| {metric} (test split, ONNX Runtime: the figure to quote) | \
{fmt(m.get("test_accuracy"), ".4f")} | {fmt(b.get("test_accuracy"), ".4f")} |
| {metric} ({split}, ONNX Runtime) | {fmt(m.get("accuracy"), ".4f")} | \
{fmt(b.get("accuracy"), ".4f")} |
| latency p50 / p90 (ms, batch {batch}) | {fmt(m.get("latency_p50_ms"), ".3f")} / \
{fmt(m.get("latency_p90_ms"), ".3f")} | {fmt(b.get("latency_p50_ms"), ".3f")} / \
{fmt(b.get("latency_p90_ms"), ".3f")} |
| peak inference memory (MB) | {fmt(m.get("peak_memory_mb"), ".1f")} | \
{fmt(b.get("peak_memory_mb"), ".1f")} |
| file size (MB) | {fmt(m.get("size_mb"), ".3f")} | {fmt(b.get("size_mb"), ".3f")} |

Measured on {m.get("measurement", {}).get("device", "?")} with ONNX Runtime \
{m.get("measurement", {}).get("onnxruntime", "?")}. {_latency_words(info)}Full record: \
`trial.json`.

"""


def _latency_words(info: dict[str, Any]) -> str:
    """How the p50 was measured (paired, confirmed, under load), for the README."""
    m, c = info["measurements"], info.get("confirmed")
    words = ""
    if m.get("latency_relative") is not None:
        words += (
            f"The p50 is paired: timed interleaved with the baseline, "
            f"{m['latency_relative']:.3f}x "
            f"its latency (as measured: {fmt(m.get('latency_measured_p50_ms'), '.3f')} ms). "
        )
    if m.get("busy"):
        words += "Other processes used the cores while it was measured. "
    if c:
        low, high = c.get("latency_ci_ms") or (None, None)
        words += (
            f"Confirmed at {c.get('at', '?')} over {c.get('rounds')} interleaved rounds: p50 "
            f"{fmt(c.get('latency_p50_ms'), '.3f')} ms (95 % interval {fmt(low, '.3f')}-"
            f"{fmt(high, '.3f')})"
            + ("" if c.get("on_front") else ", no longer on the Pareto front")
            + ". "
        )
    return words


def _files(info: dict[str, Any]) -> str:
    inp, measured = info["input"], info["measured_file"]
    shape = ", ".join(str(d) for d in inp["shape"])
    quantized = measured != "model.onnx"
    float_note = (
        f"`{measured}` is the quantized file that was measured; `model.onnx` is the float model "
        "before quantization, which `model.pt2` and `model_module.pt` reproduce."
        if quantized
        else "`model.onnx` is the file that was measured; `model.pt2` and `model_module.pt` hold "
        "the same float model."
    )
    fl = "\n- `model.onnx`: the float ONNX file before quantization." if quantized else ""
    return f"""## Files

- `{measured}`: the exact ONNX file that was measured (its sha256 is in `trial.json`).{fl}
- `model.pt2`: the compressed float model as a `torch.export` program. Loads with PyTorch alone.
- `model_module.pt`: the same model as a pickled `torch.nn.Module`, for further fine-tuning.
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

## Run the PyTorch checkpoint (needs only `torch`)

```python
import torch

model = torch.export.load("model.pt2").module()  # no model class or search code needed
logits = model(torch.zeros({example}))
```

The program is for inference (batch size 1 to 4096). To fine-tune further, load the pickled
module instead; it needs the model's class importable (for the built-in tasks
`search.tasks.models`, for your own task your model code), and only trusted files should be
unpickled:

```python
model = torch.load("model_module.pt", weights_only=False)
```

## Browse the whole study

The study is a plain Optuna storage: `optuna-dashboard sqlite:///results/{info["study"]}/study.db`
(`pip install optuna-dashboard`), from the search project's root.

## Reproduce

`python reproduce.py`, run from the search project's root, reruns only this trial's
configuration as the single trial of a new study; `{info["reproduce"]["study_command"]}`
reruns the whole study. {info["reproduce"]["note"]}.
"""
