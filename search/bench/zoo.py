"""Model-zoo benchmark: every classification (or, with ``--kind``, detection or segmentation)
model of the installed torchvision through one short trial (:mod:`search.bench.zoo_trial`,
:mod:`search.bench.zoo_dense`), each in its own child process under a memory and a time limit,
and a table of what happened written to ``docs/zoo.md`` (``docs/zoo-<kind>.md``).

    python benchmarks/zoo.py run [--kind detection] [--models a,b] [--max-params 100e6]
    python benchmarks/zoo.py table [--kind detection]   # rewrite the page from the results
    python benchmarks/zoo.py one NAME [--kind ...]      # one model in this process (a child)

Results go to ``results/zoo/zoo.jsonl`` (``zoo-<kind>.jsonl``) one line per model (a rerun
skips the models already there, so an interrupted sweep resumes); models over ``--max-params``
parameters are skipped and listed. Acceptance: no FAIL, no child out of memory or time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from search.bench.zoo_trial import _version, _why

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results" / "zoo" / "zoo.jsonl"
DOC = ROOT / "docs" / "zoo.md"
MAX_PARAMS = 100e6  # parameters at num_classes=10; larger models are skipped and listed
MEM_GB, TIMEOUT_S = 10.0, 1200
KINDS = ("classification", "detection", "segmentation")


def models(kind: str = "classification") -> list[str]:
    """Every model of the installed torchvision of ``kind``, by name."""
    import torchvision

    if kind != "classification":
        from search.bench.zoo_dense import models as dense

        return dense(kind)
    return sorted(torchvision.models.list_models(module=torchvision.models))


def paths(kind: str) -> tuple[Path, Path]:
    """The results file and the page of ``kind``."""
    if kind == "classification":
        return RESULTS, DOC
    return RESULTS.with_name(f"zoo-{kind}.jsonl"), DOC.with_name(f"zoo-{kind}.md")


def _limits(mem_gb: float) -> Callable[[], None]:
    def apply() -> None:
        limit = int(mem_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        os.nice(5)

    return apply


def run_child(
    name: str, *, max_params: float, mem_gb: float, timeout_s: float, kind: str = "classification"
) -> dict[str, Any]:
    """``one NAME`` in a child process under ``mem_gb`` of address space and ``timeout_s``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    with tempfile.NamedTemporaryFile("w+", suffix=".json") as out:
        cmd = [sys.executable, "-m", "search.bench.zoo", "one", name, "--json", out.name]
        cmd += ["--max-params", str(max_params), "--kind", kind]
        try:
            proc = subprocess.run(
                cmd, cwd=ROOT, env=env, preexec_fn=_limits(mem_gb), timeout=timeout_s,
                capture_output=True, text=True, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return {"model": name, "verdict": "FAIL", "failed_step": "child",
                    "reason": f"timeout after {timeout_s:g} s"}  # fmt: skip
        text = Path(out.name).read_text()
    if text:
        return json.loads(text)
    last = (proc.stderr.strip().splitlines() or [""])[-1][:200]
    why = f"child exited {proc.returncode} (memory limit {mem_gb} GB?): {last}"
    return {"model": name, "verdict": "FAIL", "failed_step": "child", "reason": why}


def run(
    names: list[str],
    out: Path,
    *,
    max_params: float,
    mem_gb: float,
    timeout_s: float,
    kind: str = "classification",
):
    """Each model not yet in ``out`` in its own child; one JSON line per model appended."""
    done = set()
    if out.exists():
        done = {json.loads(line)["model"] for line in out.read_text().splitlines() if line}
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in names:
        if name in done:
            continue
        t = time.perf_counter()
        rec = run_child(name, max_params=max_params, mem_gb=mem_gb, timeout_s=timeout_s, kind=kind)
        rec["wall_s"] = round(time.perf_counter() - t, 1)
        with out.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        why = f" {rec.get('failed_step', '')} {rec.get('reason', '')[:120]}"
        print(f"{name}: {rec['verdict']}{why if rec['verdict'] != 'PASS' else ''} "
              f"({rec['wall_s']} s)", flush=True)  # fmt: skip


def _row(r: dict[str, Any]) -> str:
    before, pruned, after = (r.get(k) for k in ("params_before", "params_pruned", "params_after"))
    params = f"{before / 1e6:.1f}" if before else ""
    if pruned and after:
        params += f" -> {pruned / 1e6:.1f} -> {after / 1e6:.1f}"
    la = r.get("left_alone", {})
    agree = "/".join(f"{v:.0e}" for v in r.get("export", {}).get("ort_vs_torch", {}).values())
    ran = Counter(r.get("ran", {}).values())
    groups = ", ".join(f"{k} x{n}" for k, n in ran.most_common())
    verdict = r["verdict"]
    if verdict == "FAIL":
        verdict += f" ({r.get('failed_step', '')}: {r.get('reason', '')[:90]})"
    elif verdict == "SKIP":
        verdict += f" ({r.get('reason', '')})"
    cells = [
        r["model"], r.get("size", ""), params, f"{len(la)} {_why(la)}".strip(),
        r.get("lowrank_layers", ""), agree, r.get("integer_layers", ""), groups,
        r.get("wall_s", ""), verdict,
    ]  # fmt: skip
    return "| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |"


def table(records: list[dict[str, Any]], *, mem_gb: float, max_params: float) -> str:
    """The markdown page: date, versions, settings, totals, one row per model."""
    totals = Counter(r["verdict"] for r in records)
    skipped = [r["model"] for r in records if r["verdict"] == "SKIP"]
    alone = [r for r in records if r.get("left_alone")]
    lines = [
        "# Model zoo: every torchvision classifier through one short trial",
        "",
        # The installed distributions' versions (torch_pruning.__version__ lags its release).
        f"{datetime.date.today().isoformat()}, {platform.machine()}, torch {_version('torch')}, "
        f"torchvision {_version('torchvision')}, torch-pruning {_version('torch-pruning')}, "
        f"onnxruntime {_version('onnxruntime', 'onnxruntime-gpu')}. "
        "Command: `python benchmarks/zoo.py run`.",
        "",
        "Each model, randomly initialised with 10 classes, runs in its own child process "
        f"(address space limited to {mem_gb:g} GB, {TIMEOUT_S} s, one thread) through the "
        "product's steps: pruning dry run, prune 0.3 (round_to 8), low-rank channel SVD at "
        "rank ratio 0.5 where it saves MACs, one distillation step, export with a dynamic "
        "batch (checked in ONNX Runtime at batches 1 and 3 against torch: max |diff| / "
        "max(1, max |torch|), weak where random-init outputs are tiny), int8 QDQ over 5 groups "
        "derived from the model, an ONNX Runtime run and the audit of what ran (integer layer "
        "kernels in the optimized graph; groups by what their layers ran at). Input 64x64 "
        "unless the architecture needs more. s: wall seconds of the child on a shared machine.",
        "",
        f"**Totals: {', '.join(f'{k} {v}' for k, v in sorted(totals.items()))}** "
        f"({len(records)} models). Skipped (over {max_params / 1e6:g} M parameters): "
        f"{', '.join(skipped) or 'none'}.",
        "",
        "Models with layers left alone, and why:",
        "",
        *[f"- {r['model']}: {len(r['left_alone'])}: {_why(r['left_alone'], 3)}" for r in alone],
        "",
        "| model | px | params M: base -> pruned -> low-rank | left alone (why) | "
        "low-rank layers | ORT vs torch b1/b3 | int8 kernels | groups ran | s | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *[_row(r) for r in records],
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="zoo", description=__doc__.split("\n\n")[0], allow_abbrev=False
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    for cmd in ("run", "table", "one"):
        p = sub.add_parser(cmd, allow_abbrev=False)
        p.add_argument("--max-params", type=float, default=MAX_PARAMS)
        p.add_argument("--mem-gb", type=float, default=MEM_GB)
        p.add_argument("--kind", choices=KINDS, default="classification")
        p.add_argument("--out", type=Path, default=None, help="results file (default by kind)")
        p.add_argument("--doc", type=Path, default=None, help="page (default by kind)")
    sub.choices["run"].add_argument("--models", default="", help="comma-separated names")
    sub.choices["run"].add_argument("--timeout", type=float, default=TIMEOUT_S)
    sub.choices["one"].add_argument("name")
    sub.choices["one"].add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    results, doc = paths(a.kind)
    out, doc = a.out or results, a.doc or doc
    if a.cmd == "one":
        text = json.dumps(_one(a.name, kind=a.kind, max_params=a.max_params))
        a.json.write_text(text) if a.json else print(text)
        return 0
    if a.cmd == "run":
        names = a.models.split(",") if a.models else models(a.kind)
        run(names, out, max_params=a.max_params, mem_gb=a.mem_gb, timeout_s=a.timeout,
            kind=a.kind)  # fmt: skip
    records = [json.loads(line) for line in out.read_text().splitlines() if line]
    if a.kind == "classification":
        doc.write_text(table(records, mem_gb=a.mem_gb, max_params=a.max_params))
    else:
        from search.bench.zoo_dense import dense_table

        page = dense_table(records, kind=a.kind, mem_gb=a.mem_gb, max_params=a.max_params,
                           timeout_s=getattr(a, "timeout", TIMEOUT_S))  # fmt: skip
        doc.write_text(page)
    print(f"wrote {doc}")
    return 0


def _one(name: str, *, kind: str, max_params: float) -> dict[str, Any]:
    if kind == "classification":
        from search.bench.zoo_trial import one

        return one(name, max_params=max_params)
    from search.bench.zoo_dense import one as dense

    return dense(name, kind=kind, max_params=max_params)


if __name__ == "__main__":
    raise SystemExit(main())
