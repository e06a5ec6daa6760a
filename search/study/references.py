"""Once per study: the float baseline, the uniform-int8 reference and the sensitivity seed.

The study keeps them as user attributes (``baseline``, ``baseline_int8``, ``sensitivity``,
``quantize_seed``), so a resumed study or a second worker on the same storage reuses them instead
of measuring again; the benchmark measures them once with the same functions and hands them to
each of its studies with :func:`store`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from search.compress.onnx_export import export_onnx
from search.compress.quantize.calibration import Calibration, calibrate
from search.compress.quantize.encoding import lowest_precision
from search.compress.quantize.qdq import INTEGER_PRECISIONS
from search.compress.quantize.sensitivity import seed_params, sensitivity_pass
from search.compress.quantize.step import uniform_int8
from search.core.formatting import fmt
from search.core.progress import Ticker, console
from search.measure.load import describe_load
from search.measure.measurement import run_all
from search.measure.runtime import create_session
from search.record import PAIRED, BaselineRecord, TrialRecord, baseline_of
from search.study.prune_references import (
    PruneReferences,
    describe,
    pass_groups,
    prune_references,
)
from search.study.warm_start import enqueued, warm_start_params
from search.tasks import stack
from search.trial.context import (
    Context,
    kernels_of,
    latency_scale,
    measurement_record,
    score,
)


@dataclass
class QuantizationReferences:
    """The sensitivity pass (None when skipped), the uniform-int8 record (None where the profile
    runs no int8) and the Optuna params of the seeded trial (empty when there is none)."""

    sensitivity: dict[str, Any] | None = None
    int8: TrialRecord | None = None
    seed: dict[str, Any] = field(default_factory=dict)  # Optuna params (ordinal: a count)
    notes: list[str] = field(default_factory=list)  # fallbacks taken, to say once


def export_float(ctx: Context, out_dir: Path) -> Path:
    """The uncompressed model as ``out_dir/model.onnx`` (exported once, then reused)."""
    path = out_dir / "model.onnx"
    if not path.is_file():
        export_onnx(ctx.task.model, ctx.task.example_input, path, names=ctx.output_names)
    return path


Say = Callable[[str], None]  # what a long step does now, one line (Ticker.note)


def _quiet(_: str) -> None:
    """Say nothing (the benchmark and the tests call the steps without a ticker)."""


def measure_baseline(ctx: Context, path: Path, *, say: Say = _quiet) -> BaselineRecord:
    """The float baseline's record: measured like a trial (alone: it is the reference), plus
    the PyTorch model's validation metric (``val_accuracy``).

    Its ``latency_scale_ms`` (:func:`~search.trial.context.latency_scale`) is the p50 every
    trial's relative latency is multiplied by, and also its ``latency_paired_ms``, so a speedup
    over the baseline is exactly ``1 / relative latency``.

    Every trial's latency is scaled by it, so it must be steady
    (:mod:`search.measure.latency`: warm-up settled, timed runs not drifting): one that is not
    is measured again, at most ``measure.max_repeats`` more times, and one still unsteady is
    kept with ``steady: false`` in its latency (a warning now, a note in the report).
    ``say(line)`` is told each measurement as it starts.
    """
    say(f"scoring {path.name} (validation metric) and timing it")
    metric, m = score(path, ctx)
    repeats = ctx.profile.measure.max_repeats
    for repeat in range(1, repeats + 1):
        if m.latency[0].steady is not False:
            break
        say(f"the latency did not settle: measuring again ({repeat}/{repeats})")
        metric, m = score(path, ctx)
    scale = latency_scale(m)
    measured = measurement_record(metric, m, ctx)
    return BaselineRecord.from_json({
        **measured.to_json(),
        PAIRED: scale,
        "latency_scale_ms": scale,
        "val_accuracy": ctx.baseline_val,
        "measured_onnx": str(path),
    })  # fmt: skip


def quantization_references(
    ctx: Context,
    onnx_path: Path,
    out_dir: Path,
    *,
    int8: bool | None = None,
    say: Say = _quiet,
) -> QuantizationReferences:
    """The one-off quantization references of the uncompressed model ``onnx_path``.

    Runs the sensitivity pass (scored on the validation split, so the test split stays unseen
    by the search) and measures the uniform-int8 model like any trial: where the profile runs
    int8 when ``int8`` is None, else as ``int8`` says (the benchmark always compares with it).
    Both reuse one MinMax calibration of ``onnx_path``. ``say(line)`` is told each part (the
    calibration, each group of the pass, the int8 model) as it starts.
    """
    space, profile = ctx.space.quantize, ctx.profile
    choices = space.choices(profile.precisions)
    activations, weights = choices["activations"][0], choices["weights"][0]
    refs = QuantizationReferences()
    low = lowest_precision(sorted({c for g in space.groups for c in choices[f"precision_{g}"]}))
    want_int8 = int8 or (int8 is None and "int8" in profile.precisions.layer)
    # The pass scores each variant in a local session; a profile measured through an agent may
    # not run here at all, so it goes without (the seeded trial then is not added).
    sensitivity = low is not None and space.sensitivity and not profile.agent
    calib = None
    if want_int8 or (sensitivity and low in INTEGER_PRECISIONS):  # fp16 needs no calibration
        assert ctx.calib_inputs is not None  # Context.build fixes them
        say(f"calibrating {onnx_path.name} (MinMax, {len(ctx.calib_inputs)} inputs)")
        calib = calibrate(
            onnx_path, ctx.calib_inputs, method="minmax", cache_dir=out_dir / "calibration"
        )
        refs.notes = list(calib.notes)
    if sensitivity and low is not None:  # (sensitivity implies low)
        refs.sensitivity = sensitivity_pass(
            calib or onnx_path,
            space=space,
            precision=low,
            activations=activations,
            weights=weights,
            evaluate=_announced(_validation_metric(ctx), list(space.groups), low, say),
            out_dir=out_dir / "sensitivity",
        )
        refs.seed = seed_params(
            refs.sensitivity,
            choices=choices,
            tolerance=space.tolerance,
            encoding=space.encoding,
        )
    if want_int8 and calib is not None:
        say("uniform int8: quantizing every group, scoring and timing it like a trial")
        refs.int8 = _uniform_int8(ctx, calib, out_dir, activations=activations, weights=weights)
    return refs


def _uniform_int8(
    ctx: Context, calib: Calibration, out_dir: Path, *, activations: str, weights: str
) -> TrialRecord:
    """Every group at int8 (:func:`~search.compress.quantize.step.uniform_int8`), measured like
    any trial."""
    q = uniform_int8(
        calib,
        out_dir / "model.int8.q.onnx",
        space=ctx.space.quantize,
        activations=activations,
        weights=weights,
    )
    local = ctx.kernel_report(q.path, out_dir / "model.int8.opt.onnx")
    metric, m = score(q.path, ctx)
    return TrialRecord.from_json({
        **measurement_record(metric, m, ctx).to_json(),
        "quantize": {**q.to_dict(), "calibration": calib.key, "activations": activations},
        "kernels": kernels_of(local, m),
        "measured_onnx": str(q.path),
    })  # fmt: skip


def _announced(
    evaluate: Callable[[Path], float], groups: Sequence[str], precision: str, say: Say
) -> Callable[[Path], float]:
    """``evaluate`` that first says which model of the sensitivity pass it scores: the float
    model, then each group's ``<group>.q.onnx`` (:func:`sensitivity_pass` names them so)."""
    order = {g: k for k, g in enumerate(groups, 1)}

    def announced(path: Path) -> float:
        group = path.name.removesuffix(".q.onnx")
        if group in order and path.name.endswith(".q.onnx"):
            say(f"sensitivity pass: group {group} ({order[group]}/{len(order)}) at {precision}")
        else:
            say("sensitivity pass: the float model on the validation split (its reference)")
        return evaluate(path)

    return announced


def _validation_metric(ctx: Context) -> Callable[[Path], float]:
    """``evaluate(path)``: the task metric of an ONNX file on the validation split, where the
    study measures (a runtime of its own: through its agent, ``ctx.outputs``), else here."""
    outputs = ctx.outputs
    if outputs is not None:
        n_val = len(ctx.eval_labels)
        return lambda path: ctx.task.metric(
            ctx.task.outputs.read([o[:n_val] for o in outputs(path)]), ctx.eval_labels
        )
    x_val, y_val = stack(ctx.task.val)
    spec, labels = ctx.profile.measure_spec(), y_val.numpy()

    def evaluate(path: Path) -> float:
        outputs = run_all(create_session(path, spec), x_val.numpy())
        return ctx.task.metric(ctx.task.outputs.read(outputs), labels)

    return evaluate


# ------------------------------------------------------------------------- kept with a study


def ensure_baseline(study: optuna.Study, ctx: Context, out_dir: Path) -> BaselineRecord:
    """The study's baseline record, measured (and stored) when the study has none yet.

    A baseline measured while the machine was busy gets a warning: its absolute figures are
    inflated, the paired (relative) ones are not. :func:`pair_with_baseline` then points
    ``ctx`` at it.
    """
    stored = baseline_of(study)
    if stored is not None:
        return stored
    with Ticker("measuring the uncompressed baseline (export, validation metric, latency)") as t:
        baseline = measure_baseline(ctx, export_float(ctx, out_dir), say=t.note)
    study.set_user_attr("baseline", baseline.to_json())
    console.print(
        f"baseline: {ctx.task.metric_name} {baseline.accuracy:.4f} (validation), p50 "
        f"{fmt(baseline.latency_measured_p50_ms, '.3f')} ms "
        f"(cv {fmt(baseline.latency_cv, '.1%')}), "
        f"{fmt(baseline.size_mb, '.2f')} MB, on {', '.join(baseline.providers)}"
    )
    load = baseline.measurement.get("load") or {}
    console.print(f"machine: {describe_load(load)}")
    first = (baseline.measurement.get("latency") or [{}])[0]
    if first.get("steady") is False:
        console.print(
            f"warning: the baseline's latency did not settle (warm-up {first.get('warmup_runs')}"
            f" runs, timed runs drifted {fmt(first.get('drift'), '.1%')}): the latency scale of "
            "this study is uncertain; rerun on a quieter machine for absolute figures"
        )
    if load.get("busy"):
        console.print(
            "warning: the machine was busy while the baseline was measured: its absolute "
            "latency is inflated; trials are paired with it, so speedups stay comparable"
        )
    return baseline


def pair_with_baseline(ctx: Context, baseline: BaselineRecord, out_dir: Path) -> None:
    """From now on ``ctx`` measures every file paired with the baseline's (exported again
    where a resumed study's file is gone: the same teacher gives the same file) and scales the
    relative latencies by the baseline's ``latency_scale_ms``."""
    ctx.reference = export_float(ctx, out_dir)
    ctx.latency_scale_ms = baseline.latency_scale_ms


def ensure_quantization(study: optuna.Study, ctx: Context, out_dir: Path) -> None:
    """Quantization references once per study; the seeded trial waits in the queue.

    A study that has them already only gets its seeded trial enqueued again when an
    interruption (not a real failure) lost it.
    """
    if "quantize_seed" in study.user_attrs:
        _requeue_seed(study)
        return
    with Ticker("quantization references: per-layer sensitivity, uniform int8") as t:
        refs = quantization_references(ctx, export_float(ctx, out_dir), out_dir, say=t.note)
    prune = PruneReferences()
    if groups := pass_groups(ctx):
        with Ticker(f"pruning references: sensitivity of {len(groups)} groups") as t:
            prune = prune_references(ctx, out_dir, say=t.note)
    choices = ctx.space.quantize.choices(ctx.profile.precisions)
    warm = warm_start_params(ctx.space, {**prune.seed, **refs.seed}, choices)
    store(study, quantization=refs, prune=prune, warm_start=warm)
    if prune.sensitivity:
        console.print(describe(prune.sensitivity, prune.seed), markup=False, highlight=False)
    for note in refs.notes:
        console.print(f"note: {note}", markup=False, highlight=False)
    name = ctx.task.metric_name
    if refs.int8:
        i8 = refs.int8
        console.print(
            f"uniform int8: {name} {i8.accuracy:.4f}, p50 {i8.latency_paired_ms:.3f} ms, "
            f"{fmt(i8.size_mb, '.2f')} MB, "
            f"{i8.kernels.get('integer_layers', '?')} integer layer kernel(s)"
        )
    if refs.sensitivity:
        sens = refs.sensitivity
        order = ", ".join(f"{g} {sens['groups'][g]['drop']:+.4f}" for g in sens["order"])
        console.print(f"sensitivity ({name} drop, {sens['precision']}): {order}")


def store(
    study: optuna.Study,
    *,
    baseline: BaselineRecord | None = None,
    quantization: QuantizationReferences | None = None,
    prune: PruneReferences | None = None,
    warm_start: list[dict[str, Any]] | None = None,
) -> None:
    """Keep references measured elsewhere (the benchmark's) with ``study``, so running it
    measures them no more; the warm-start trials (:mod:`search.study.warm_start`; without them the
    one seeded trial) are enqueued and kept as ``warm_start``."""
    if baseline is not None:
        study.set_user_attr("baseline", baseline.to_json())
    if prune is not None:
        study.set_user_attr("prune_sensitivity", prune.sensitivity)
        study.set_user_attr("prune_seed", prune.seed)
    if quantization is not None:
        study.set_user_attr("sensitivity", quantization.sensitivity)
        int8 = quantization.int8
        study.set_user_attr("baseline_int8", int8.to_json() if int8 is not None else None)
        study.set_user_attr("quantize_seed", quantization.seed)
        seed = quantization.seed
        first = warm_start if warm_start is not None else ([seed] if seed else [])
        study.set_user_attr("warm_start", _json(first))
        for params in first:
            study.enqueue_trial(params)


def _requeue_seed(study: optuna.Study) -> None:
    """Enqueue again each warm-start trial an interruption lost (none that ran or waits)."""
    trials = study.get_trials(deepcopy=False)
    for params in enqueued(study):
        if not any(
            t.system_attrs.get("fixed_params") == params and not t.user_attrs.get("interrupted")
            for t in trials
        ):
            study.enqueue_trial(params)


def _json(value: object) -> Any:
    """Plain JSON data, as Optuna's storage keeps it."""
    return json.loads(json.dumps(value, default=str))
