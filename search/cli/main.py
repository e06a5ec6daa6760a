"""Command line: ``python -m search <command>``. Each command turns its arguments into config
objects and calls the same function the Python API uses. Errors a user can cause print one line
and exit 2; heavy imports happen inside the commands.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from search.cli.agent import Agent
from search.cli.base import (
    EXIT_USAGE,
    INTERRUPTED,
    Command,
    OneLineParser,
    run_guarded,
)
from search.cli.base import (
    count as _count,
)
from search.cli.base import (
    seed as _seed,
)
from search.cli.bench import Bench
from search.cli.compare import Compare
from search.cli.workers import (
    add_store_argument,
    add_worker_arguments,
    child_command,
    run_workers,
    worker_settings,
)
from search.core import interrupts
from search.core.checks import check_study_name
from search.core.device import add_argument as add_device_argument
from search.core.paths import StudyPaths
from search.errors import SearchError

if TYPE_CHECKING:
    from search.study import StudySpec

__all__ = ["EXIT_USAGE", "COMMANDS", "build_parser", "main"]


def _name(text: str) -> str:
    try:
        return check_study_name(text, flag="")
    except SearchError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a study name: letters, digits and . _ - + = only, no / or .. "
            "(the folder is --results-dir)"
        ) from None


def _study_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--study",
        default=None,
        type=_name,
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
    interrupted = INTERRUPTED

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from search.tasks import BUILTIN

        parser.add_argument("--hw", default="cpu", help="hardware profile name or YAML path")
        parser.add_argument(
            "--task",
            default=None,
            help=f"built-in task ({', '.join(BUILTIN)}), module:function or file.py:function "
            "naming your own factory, or a task YAML file (default: digits, or vision when "
            "--data is given)",
        )
        parser.add_argument("--model", default=None, help="torchvision model name (resnet18, ...)")
        parser.add_argument(
            "--weights",
            default=None,
            help="your trained weights: a state_dict saved with torch.save (read weights_only)",
        )
        parser.add_argument("--data", default=None, help="ImageFolder or CIFAR-10 python folder")
        parser.add_argument(
            "--image-size",
            type=_count(1, high=8192),
            metavar="PX",
            help="image tasks: side of the square input images are resized and cropped to "
            "(default 224, 32 for CIFAR-10)",
        )
        parser.add_argument("--space", default="default", help="search space name or YAML path")
        parser.add_argument(
            "--trials",
            type=_count(1),
            default=None,
            help="finished trials wanted (default: space's)",
        )
        parser.add_argument("--seed", type=_seed, default=0, help="seed of splits and sampler")
        parser.add_argument("--no-progress", action="store_true", help="no live progress bars")
        add_device_argument(parser)
        parser.add_argument(
            "--agent",
            default=None,
            metavar="URL",
            help="measure on the agent at URL (token from $SEARCH_AGENT_TOKEN) instead of the "
            "profile's agent; 'local' measures on this machine",
        )
        _study_args(parser)
        add_worker_arguments(parser)

    def run(self, args: argparse.Namespace) -> int:
        from search.study import run_study

        spec, trials = self.spec(args)
        if args.workers > 1:
            from search.measure.target import close_target
            from search.study.loop import check_study

            # Every input, before any worker starts: errors are said once.
            close_target(check_study(spec).target)
            parser = OneLineParser(prog="search run")
            self.add_arguments(parser)
            fixed = {"study": spec.study_name, "trials": trials}
            cmd = child_command(parser, args, workers=args.workers, fixed=fixed)
            return run_workers(cmd, workers=args.workers)
        run_study(spec, trials=trials, progress=not args.no_progress and sys.stderr.isatty())
        return 0

    @staticmethod
    def spec(args: argparse.Namespace) -> tuple[StudySpec, int]:
        """The study ``args`` describe and the trials wanted, checked without side effects:
        profile, space, worker options, the task's factory (imported, not run) and the study
        name. Raises a one-line SearchError for the first bad one."""
        from search.config import load_profile, load_space
        from search.study import StudySpec
        from search.tasks import task_and_options, task_slug

        profile = load_profile(args.hw)
        if args.agent is not None:
            profile = profile.with_agent(None if args.agent == "local" else args.agent)
        space = load_space(args.space)
        trials = args.trials if args.trials is not None else space.search.trials
        worker = worker_settings(args)
        # Only the factory and its option names are checked here; run_study loads the task
        # (model, weights, data) before it opens the study, so bad input creates no study.
        options = {k: getattr(args, k) for k in ("model", "weights", "data", "image_size")}
        task, options = task_and_options(args.task, **options)
        name = args.study or f"{task_slug(task, options)}-{profile.name}"
        if args.study is None:
            check_study_name(name, flag="the default study name (task and profile name)")
        spec = StudySpec(
            task=task,
            task_options=options,
            space=space,
            profile=profile,
            study_name=name,
            results_dir=args.results_dir,
            storage=args.storage,
            seed=args.seed,
            worker=worker,
            train_device=args.train_device,
        )
        return spec, trials


class Report(Command):
    """Write report.html, trials.csv and pareto.csv for a study and print its Pareto trials."""

    name = "report"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        _study_args(parser)
        parser.add_argument(
            "--pick",
            action="append",
            default=[],
            metavar="RULE",
            help="name the trial a rule picks; repeatable: fastest-within:1%% (accuracy drop "
            "from the baseline), accurate-within:5ms (p50 latency budget), knee",
        )
        parser.add_argument("--no-png", action="store_true", help="skip the PNG copies")
        parser.add_argument("--confirm", action="store_true", help="re-measure the front first")
        parser.add_argument(
            "--agent",
            metavar="URL",
            help="with --confirm: measure on the agent at URL (token from the profile's token "
            "variable, $SEARCH_AGENT_TOKEN by default) instead of the profile's; 'local' "
            "measures on this machine",
        )

    def run(self, args: argparse.Namespace) -> int:
        from rich.console import Console

        from search.report import build_report, pareto_table, parse_rule, write_report
        from search.study.confirm import confirm_study

        for rule in args.pick:
            parse_rule(rule)  # a typo fails before any work
        if args.agent is not None and not args.confirm:
            raise SearchError("--agent measures the confirmation: add --confirm")
        study = _load_study(args)
        if args.confirm:  # the Pareto trials and the baseline, interleaved (search.study.confirm)
            folder = args.results_dir / args.study
            print(confirm_study(study, study_dir=folder, agent=args.agent), file=sys.stderr)
        data = build_report(study, picks=args.pick)
        out = Console(width=None if sys.stdout.isatty() else 140)
        out.print(pareto_table(data), *(f"note: {n}" for n in data.notes), sep="\n")
        for p in data.picks:
            chosen = f"trial {p.trial}" if p.trial is not None else "no trial"
            out.print(f"{p.rule}: {chosen} ({p.reason})")
        paths, notes = write_report(data, args.results_dir / args.study, png=not args.no_png)
        for note in notes:
            print(note, file=sys.stderr)
        print(*paths.values(), sep="\n")
        return 0


def _load_study(args: argparse.Namespace):
    import optuna

    if not args.study:
        raise SearchError(f"{args.command} needs --study NAME (see results/ for existing studies)")
    paths = StudyPaths(args.results_dir, args.study)
    storage = args.storage or paths.default_storage
    if args.storage is None and not paths.db.is_file():
        raise SearchError(f"no study at {paths.root}; run it first")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from search.distributed.storage import open_existing_storage, redact_url  # no password

    opened = open_existing_storage(storage, study=args.study)  # creates no database
    try:
        return optuna.load_study(study_name=args.study, storage=opened)
    except KeyError:
        raise SearchError(f"no study {args.study!r} in {redact_url(storage)}") from None


class Export(Command):
    """Export one trial: the measured ONNX file, model.pt2 (a torch.export program), trial.json,
    a README.

    model.pt2 is the compressed float model as a torch.export ExportedProgram, not a
    checkpoint: torch.export.load("model.pt2").module() runs it with torch alone (no model
    class, no search code)."""

    name = "export"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        _study_args(parser)
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--trial", type=_count(0), help="trial number to export")
        which.add_argument(
            "--pick", metavar="RULE", help="export the trial a rule picks (see report --pick)"
        )
        parser.add_argument("--out", type=Path, required=True, help="new or empty folder to write")
        parser.add_argument(
            "--force", action="store_true", help="write into --out even if it holds files"
        )
        add_store_argument(parser, "the study's artifact store as this machine reaches it")

    def run(self, args: argparse.Namespace) -> int:
        from search.core.checks import check_out_dir
        from search.export.trial import export_trial
        from search.report import parse_rule

        if args.pick:
            parse_rule(args.pick)
        study_dir = args.results_dir / args.study if args.study else None
        check_out_dir(args.out, force=args.force, study_dir=study_dir)  # before the study opens
        study = _load_study(args)
        number = args.trial
        if args.pick:
            from search.record import baseline_of
            from search.report import collect, pick

            baseline = baseline_of(study)
            chosen = pick(
                collect(study),
                args.pick,
                baseline_accuracy=baseline.accuracy if baseline else None,
                metric=study.user_attrs.get("metric", "accuracy"),
            )
            if chosen.trial is None:
                raise SearchError(f"--pick {args.pick}: {chosen.reason}; loosen the rule")
            print(f"{args.pick}: trial {chosen.trial} ({chosen.reason})")
            number = chosen.trial
        paths = export_trial(
            study,
            number=number,
            out_dir=args.out,
            study_dir=args.results_dir / args.study,
            command="python -m search " + " ".join(sys.argv[1:]),
            force=args.force,
            artifacts=args.artifacts,
        )
        for path in paths.values():
            print(path)
        return 0


class Profiles(Command):
    """List the hardware profiles and whether each can be measured here or through its agent."""

    name = "profiles"

    def run(self, args: argparse.Namespace) -> int:
        from search.config import list_profiles, load_profile
        from search.measure.target import close_target, open_target

        for name in list_profiles():
            try:
                profile = load_profile(name)
            except SearchError as e:
                print(f"{name:10} invalid: {e}")
                continue
            where = f"through agent {profile.agent}" if profile.agent else "here"
            try:
                spec, token_env = profile.measure_spec(), profile.agent_token_env
                target = open_target(
                    spec,
                    agent=profile.agent,
                    runtime=profile.runtime,
                    token_env=token_env,
                    timeout=5.0,
                )
                close_target(target)
                if not profile.agent and target.where != "here":
                    where = target.where
                status, reason = f"measurable {where}", ""
            except SearchError as e:
                status, reason = f"NOT measurable {where}", f"\n{'':11}{e}"
            providers = " > ".join(
                p.name.removesuffix("ExecutionProvider") + ("?" if p.optional else "")
                for p in profile.providers
            )
            print(f"{name:10} {profile.arch or 'any':8} {providers:24} {status}{reason}")
        print("(? = used where the onnxruntime build has it)")
        return 0


COMMANDS: dict[str, Command] = {
    c.name: c for c in (Run(), Report(), Export(), Profiles(), Agent(), Bench(), Compare())
}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="search", description="Hardware-aware compression search for PyTorch models."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        doc = (command.__doc__ or "").strip()
        # The docstring's first paragraph; argparse expands % in help texts.
        summary = " ".join(doc.split("\n\n")[0].split()).replace("%", "%%")
        p = sub.add_parser(name, help=summary, description=doc)
        command.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; user errors are one line and exit 2, Ctrl-C one line and exit 130."""
    state: dict[str, argparse.Namespace] = {}

    def run() -> int:
        interrupts.install()  # inside the guard: until here the early handler exits cleanly
        state["args"] = args = build_parser().parse_args(argv)
        return COMMANDS[args.command].run(args)

    def interrupted() -> str:
        args = state.get("args")
        if args is not None:
            return COMMANDS[args.command].interrupted
        words = sys.argv[1:] if argv is None else argv  # Ctrl-C while the arguments are read
        return INTERRUPTED if words[:1] == ["run"] else "interrupted"

    def folder() -> Path | None:
        args = state.get("args")
        return getattr(args, "results_dir", None) or getattr(args, "out", None)

    return run_guarded(run, interrupted=interrupted, folder=folder)
