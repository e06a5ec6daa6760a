"""Command line: ``python -m search <command>``. Each command turns its arguments into config
objects and calls the same function the Python API uses. Errors a user can cause print one line
and exit 2; heavy imports happen inside the commands.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from search.errors import SearchError

EXIT_USAGE = 2


class Command:
    """Base class: ``add_arguments`` declares flags, ``run`` does the work and returns a code."""

    name = ""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        pass

    def run(self, args: argparse.Namespace) -> int:
        raise NotImplementedError


def _study_args(parser: argparse.ArgumentParser, *, default_name: bool) -> None:
    parser.add_argument(
        "--study",
        default=None if not default_name else None,
        help="study name (default: <task>-<hw>); results go to results/<study>/",
    )
    parser.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL (default: sqlite:///results/<study>/study.db); share one "
        "PostgreSQL URL between workers to search on several machines",
    )
    parser.add_argument(
        "--results-dir", default="results", type=Path, help="where studies live (default: results)"
    )


class Run(Command):
    """Run (or resume) a compression search: prune, distill, export and measure each trial."""

    name = "run"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--hw", default="cpu", help="hardware profile name or YAML path")
        parser.add_argument("--task", default="digits", help="built-in task or module:function")
        parser.add_argument("--space", default="default", help="search space name or YAML path")
        parser.add_argument(
            "--trials", type=int, default=None, help="finished trials wanted (default: space's)"
        )
        parser.add_argument("--seed", type=int, default=0, help="seed of splits and sampler")
        parser.add_argument("--no-progress", action="store_true", help="no live progress bars")
        _study_args(parser, default_name=True)

    def run(self, args: argparse.Namespace) -> int:
        from search.config import load_profile, load_space
        from search.study import StudySpec, run_study

        # Validate everything before anything is created on disk.
        profile = load_profile(args.hw)
        space = load_space(args.space)
        trials = args.trials if args.trials is not None else space.search.trials
        if trials < 1:
            raise SearchError(f"--trials must be at least 1, but got {trials}")
        from search.tasks import resolve_factory

        resolve_factory(args.task)
        task_slug = args.task.replace(":", "-").replace("/", "-").replace(".", "-")
        spec = StudySpec(
            task=args.task,
            space=space,
            profile=profile,
            study_name=args.study or f"{task_slug}-{profile.name}",
            results_dir=args.results_dir,
            storage=args.storage,
            seed=args.seed,
        )
        run_study(spec, trials=trials, progress=not args.no_progress and sys.stderr.isatty())
        return 0


class Report(Command):
    """Write trials.csv and report.html for an existing study."""

    name = "report"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        _study_args(parser, default_name=False)

    def run(self, args: argparse.Namespace) -> int:
        import optuna

        from search.report import write_outputs

        if not args.study:
            raise SearchError("report needs --study NAME (see results/ for existing studies)")
        storage = args.storage or f"sqlite:///{args.results_dir / args.study / 'study.db'}"
        if args.storage is None and not (args.results_dir / args.study / "study.db").is_file():
            raise SearchError(f"no study at {args.results_dir / args.study}; run it first")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            study = optuna.load_study(study_name=args.study, storage=storage)
        except KeyError:
            raise SearchError(f"no study {args.study!r} in {storage}") from None
        paths = write_outputs(study, args.results_dir / args.study)
        for path in paths.values():
            print(path)
        return 0


class Bench(Command):
    """Benchmark: float, int8 alone, pruning alone, random and joint search on one budget."""

    name = "bench"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--hw", default="cpu", help="hardware profile name or YAML path")
        parser.add_argument(
            "--task", default="distorted_digits", help="built-in task or module:function"
        )
        parser.add_argument("--space", default="default", help="joint search space (YAML)")
        parser.add_argument(
            "--trials", type=int, default=15, help="N: joint-search trials; random gets 2N"
        )
        parser.add_argument(
            "--samplers", default="tpe", help="joint samplers, comma-separated: tpe,nsga2"
        )
        parser.add_argument(
            "--ratios", default="0.3,0.5,0.7", help="fixed ratios of pruning alone"
        )
        parser.add_argument("--rounds", type=int, default=20, help="interleaved latency rounds")
        parser.add_argument("--seed", type=int, default=0, help="seed of splits and samplers")
        parser.add_argument(
            "--out", type=Path, default=None, help="output folder (results/bench/<task>-<hw>)"
        )

    def run(self, args: argparse.Namespace) -> int:
        from search.bench import BenchSpec, run_bench
        from search.config import load_profile, load_space
        from search.tasks import resolve_factory

        profile = load_profile(args.hw)
        space = load_space(args.space)
        resolve_factory(args.task)
        try:
            ratios = tuple(float(r) for r in args.ratios.split(",") if r.strip())
        except ValueError:
            msg = f"--ratios must be numbers like 0.3,0.5, got {args.ratios!r}"
            raise SearchError(msg) from None
        slug = args.task.replace(":", "-").replace("/", "-").replace(".", "-")
        spec = BenchSpec(
            task=args.task,
            space=space,
            profile=profile,
            trials=args.trials,
            out_dir=args.out or Path("results") / "bench" / f"{slug}-{profile.name}",
            seed=args.seed,
            samplers=tuple(s.strip() for s in args.samplers.split(",") if s.strip()),
            ratios=ratios,
            rounds=args.rounds,
        )
        run_bench(spec)
        return 0


COMMANDS: dict[str, Command] = {c.name: c for c in (Run(), Report(), Bench())}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="search", description="Hardware-aware compression search for PyTorch models."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        doc = (command.__doc__ or "").strip()
        p = sub.add_parser(name, help=doc.splitlines()[0], description=doc)
        command.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command].run(args)
    except SearchError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume the study", file=sys.stderr)
        return 130
