"""The ``compare`` command: studies of one task on several targets, side by side."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from search.cli.base import Command
from search.errors import SearchError


class Compare(Command):
    """Compare studies of one task and space on several targets (--hw cpu, --hw openvino, ...):
    each target's front, and each target's chosen model timed and scored on every other target
    of the same seed (paired with that target's own winner, with 95 % intervals)."""

    name = "compare"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--study",
            action="append",
            type=_study_name,
            required=True,
            help="a study to compare; repeat it (one study per target and seed)",
        )
        parser.add_argument(
            "--results-dir", default="results", type=Path, help="where the studies live"
        )
        parser.add_argument(
            "--pick", default="knee", metavar="RULE", help="how each study chooses its model"
        )
        parser.add_argument(
            "--out", type=Path, default=None, help="folder for compare.md/.json (results/compare)"
        )
        parser.add_argument(
            "--fronts-only", action="store_true", help="no measurement: the fronts alone"
        )
        parser.add_argument(
            "--no-accuracy",
            action="store_true",
            help="time the winners on each target without scoring them there (no task load)",
        )

    def run(self, args: argparse.Namespace) -> int:
        from search.core.checks import check_writable
        from search.report import parse_rule
        from search.report.targets import differ_words, render_markdown, winners_differ
        from search.study.crosstarget import by_seed, cross_measure, entries

        parse_rule(args.pick)
        if len(set(args.study)) < 2:
            raise SearchError("compare needs at least two different --study names")
        out = args.out or args.results_dir / "compare"
        check_writable(out, what="the comparison")
        studies = [_load(name, args.results_dir) for name in args.study]
        found = entries(studies, pick_rule=args.pick)
        keyed = {f"{e.target}/{e.seed}": e for e in found}
        rows: list[dict[str, Any]] = []
        notes: list[str] = []
        if not args.fronts_only:
            groups = by_seed(found)
            if not groups:
                raise SearchError("no seed has studies on two targets: nothing to cross-measure")
            for seed, group in groups.items():
                task_inputs = (
                    None if args.no_accuracy else _task_inputs(group[0], args.results_dir)
                )
                feed = _latency_input(args.results_dir / group[0].study.study_name)
                rows += cross_measure(group, latency_input=feed, task_inputs=task_inputs)
                differ = winners_differ(
                    {e.target: e.study for e in group}, {e.target: e.winner for e in group}
                )
                described = "; ".join(f"{t}: {_describe(c)}" for t, c in differ["configs"].items())
                notes.append(f"seed {seed}: the winners are {differ_words(differ)}; {described}")
        settings = studies[0].user_attrs.get("settings") or {}
        text = render_markdown(
            title=f"Targets compared: task {settings.get('task')}, space {settings.get('space')}",
            studies={k: e.study for k, e in keyed.items()},
            winners={k: {"trial": e.winner, "reason": e.reason} for k, e in keyed.items()},
            rows=rows,
            notes=notes,
        )
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.md").write_text(text)
        (out / "compare.json").write_text(json.dumps({"rows": rows, "notes": notes}, indent=2))
        print(text)
        print(out / "compare.md", out / "compare.json", sep="\n", file=sys.stderr)
        return 0


def _load(name: str, results_dir: Path) -> Any:
    import optuna

    from search.core.paths import StudyPaths

    paths = StudyPaths(results_dir, name)
    if not paths.db.is_file():
        raise SearchError(f"no study at {paths.root}; run it first or pass --results-dir")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=paths.default_storage)


def _latency_input(study_dir: Path) -> Any:
    import numpy as np

    from search.core.paths import StudyPaths
    from search.study.confirm import LATENCY_INPUT

    path = StudyPaths.of(study_dir).baseline_dir / LATENCY_INPUT
    if not path.is_file():
        raise SearchError(f"{path} is missing: the study kept no latency input")
    return np.load(path, allow_pickle=False)[:1]


def _study_name(text: str) -> str:
    from search.core.checks import check_study_name

    try:
        return check_study_name(text, flag="")
    except SearchError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a study name") from None


def _task_inputs(entry: Any, results_dir: Path) -> tuple[Any, Any, Any]:
    """The validation split and metric of a compared study's task (loaded as recorded)."""
    from search.tasks import load_task, stack

    settings = entry.study.user_attrs.get("settings") or {}
    task = load_task(
        settings["task"],
        seed=int(settings.get("seed", 0)),
        cache_dir=results_dir,
        options=settings.get("task_options"),
    )
    x_val, y_val = stack(task.val)

    def metric(outputs: list[Any], labels: Any) -> float:  # every output of the file
        return task.metric(task.outputs.read(outputs), labels)

    return x_val.numpy(), y_val.numpy(), metric


def _describe(config: dict[str, Any]) -> str:
    prune = (config.get("prune") or {}).get("ratio")
    plan = (config.get("quantize") or {}).get("precision") or {}
    lowrank = config.get("lowrank") or {}
    kinds = ",".join(sorted(set(plan.values()))) or "float"
    rank = f", low-rank {lowrank.get('kind')}" if lowrank.get("apply") else ""
    return f"prune {prune:.2f}, {kinds}{rank}" if isinstance(prune, float) else f"{kinds}{rank}"
