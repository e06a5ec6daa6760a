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


def _study_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--study",
        default=None,
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
        parser.add_argument("--weights", default=None, help="your trained state_dict checkpoint")
        parser.add_argument("--data", default=None, help="ImageFolder or CIFAR-10 python folder")
        parser.add_argument("--space", default="default", help="search space name or YAML path")
        parser.add_argument(
            "--trials", type=int, default=None, help="finished trials wanted (default: space's)"
        )
        parser.add_argument("--seed", type=int, default=0, help="seed of splits and sampler")
        parser.add_argument("--no-progress", action="store_true", help="no live progress bars")
        from search.device import add_argument as add_device_argument

        add_device_argument(parser)
        parser.add_argument(
            "--agent",
            default=None,
            metavar="URL",
            help="measure on the agent at URL (token from $SEARCH_AGENT_TOKEN) instead of the "
            "profile's agent; 'local' measures on this machine",
        )
        _study_args(parser)

    def run(self, args: argparse.Namespace) -> int:
        from search.config import load_profile, load_space
        from search.study import StudySpec, run_study
        from search.tasks import task_and_options, task_slug

        # Validate everything before anything is created on disk.
        profile = load_profile(args.hw)
        if args.agent is not None:
            profile = profile.with_agent(None if args.agent == "local" else args.agent)
        space = load_space(args.space)
        trials = args.trials if args.trials is not None else space.search.trials
        if trials < 1:
            raise SearchError(f"--trials must be at least 1, but got {trials}")
        # Only the factory and its option names are checked here; run_study loads the task
        # (model, weights, data) before it opens the study, so bad weights or data fail before
        # any study exists.
        options = {k: getattr(args, k) for k in ("model", "weights", "data")}
        task, options = task_and_options(args.task, **options)
        spec = StudySpec(
            task=task,
            task_options=options,
            space=space,
            profile=profile,
            study_name=args.study or f"{task_slug(task, options)}-{profile.name}",
            results_dir=args.results_dir,
            storage=args.storage,
            seed=args.seed,
            train_device=args.train_device,
        )
        run_study(spec, trials=trials, progress=not args.no_progress and sys.stderr.isatty())
        return 0


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

    def run(self, args: argparse.Namespace) -> int:
        from rich.console import Console

        from search.report import build_report, pareto_table, parse_rule, write_report

        for rule in args.pick:
            parse_rule(rule)  # a typo fails before any work
        study = _load_study(args)
        data = build_report(study, picks=args.pick)
        out = Console(width=None if sys.stdout.isatty() else 140)
        out.print(pareto_table(data))
        for p in data.picks:
            chosen = f"trial {p.trial}" if p.trial is not None else "no trial"
            out.print(f"{p.rule}: {chosen} ({p.reason})")
        paths, notes = write_report(data, args.results_dir / args.study, png=not args.no_png)
        for note in notes:
            print(note, file=sys.stderr)
        for path in paths.values():
            print(path)
        return 0


def _load_study(args: argparse.Namespace):
    import optuna

    if not args.study:
        raise SearchError(f"{args.command} needs --study NAME (see results/ for existing studies)")
    storage = args.storage or f"sqlite:///{args.results_dir / args.study / 'study.db'}"
    if args.storage is None and not (args.results_dir / args.study / "study.db").is_file():
        raise SearchError(f"no study at {args.results_dir / args.study}; run it first")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from search.study import _storage  # the same one-line errors for a bad URL or driver

    try:
        return optuna.load_study(study_name=args.study, storage=_storage(storage))
    except KeyError:
        raise SearchError(f"no study {args.study!r} in {storage}") from None


class Export(Command):
    """Export one trial: the measured ONNX file, a PyTorch checkpoint, trial.json, a README."""

    name = "export"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        _study_args(parser)
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--trial", type=int, help="trial number to export")
        which.add_argument(
            "--pick", metavar="RULE", help="export the trial a rule picks (see report --pick)"
        )
        parser.add_argument("--out", type=Path, required=True, help="folder to write")

    def run(self, args: argparse.Namespace) -> int:
        from search.export import export_trial
        from search.report import parse_rule

        if args.pick:
            parse_rule(args.pick)
        study = _load_study(args)
        number = args.trial
        if args.pick:
            from search.report import collect, pick

            chosen = pick(
                collect(study),
                args.pick,
                baseline=study.user_attrs.get("baseline"),
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
        )
        for path in paths.values():
            print(path)
        return 0


class Agent(Command):
    """Serve measurements on this machine (the target) for studies that run elsewhere.

    Needs only this package, onnxruntime and numpy. Requests must carry the token; the token
    crosses the network in clear text, so use a trusted network or an SSH tunnel.
    """

    name = "agent"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
        parser.add_argument("--port", type=int, default=8765, help="port (0 picks a free one)")
        parser.add_argument(
            "--token", default=None, help="shared secret (default: $SEARCH_AGENT_TOKEN)"
        )
        parser.add_argument(
            "--max-upload-mb", type=float, default=256.0, help="largest accepted upload"
        )
        parser.add_argument("--work-dir", type=Path, default=None, help="where uploads live")
        parser.add_argument(
            "--describe",
            default="",
            metavar="TEXT",
            help="added to the device description, e.g. 'MAXN power mode, fan on'",
        )

    def run(self, args: argparse.Namespace) -> int:
        import os

        from search.measure.agent import AgentSettings, serve

        token = args.token or os.environ.get("SEARCH_AGENT_TOKEN", "")
        try:
            server = serve(
                AgentSettings(
                    token=token,
                    host=args.host,
                    port=args.port,
                    max_upload_bytes=int(args.max_upload_mb * 2**20),
                    work_dir=args.work_dir,
                    label=args.describe,
                )
            )
        except OSError as e:
            raise SearchError(f"cannot listen on {args.host}:{args.port}: {e.strerror}") from None
        info = server.info
        print(
            f"agent listening on {server.url} | onnxruntime {info['onnxruntime']} | "
            f"{', '.join(info['providers'])} | {info['device']}",
            flush=True,
        )
        if args.host not in ("127.0.0.1", "localhost", "::1"):
            print(
                "note: plain HTTP: the token and models cross the network unencrypted; use a "
                "trusted network or an SSH tunnel (ssh -L 8765:127.0.0.1:8765 target)",
                file=sys.stderr,
            )
        try:
            server.serve_forever()
        finally:
            server.server_close()
        return 0


class Profiles(Command):
    """List the hardware profiles and whether each can be measured here or through its agent."""

    name = "profiles"

    def run(self, args: argparse.Namespace) -> int:
        from search.config import list_profiles, load_profile
        from search.measure.target import open_target

        for name in list_profiles():
            try:
                profile = load_profile(name)
            except SearchError as e:
                print(f"{name:10} invalid: {e}")
                continue
            where = f"through agent {profile.agent}" if profile.agent else "here"
            try:
                spec, token_env = profile.measure_spec(), profile.agent_token_env
                open_target(spec, agent=profile.agent, token_env=token_env, timeout=5.0)
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


class Bench(Command):
    """Benchmark: float, int8 alone, pruning alone, random and joint search on one budget."""

    name = "bench"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from search.tasks import BUILTIN

        parser.add_argument("--hw", default="cpu", help="hardware profile name or YAML path")
        parser.add_argument(
            "--task",
            default="distorted_digits",
            help=f"built-in task ({', '.join(BUILTIN)}) or module:function",
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
        from search.tasks import resolve_factory, task_slug

        profile = load_profile(args.hw)
        space = load_space(args.space)
        resolve_factory(args.task)
        try:
            ratios = tuple(float(r) for r in args.ratios.split(",") if r.strip())
        except ValueError:
            msg = f"--ratios must be numbers like 0.3,0.5, got {args.ratios!r}"
            raise SearchError(msg) from None
        slug = task_slug(args.task)
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


COMMANDS: dict[str, Command] = {
    c.name: c for c in (Run(), Report(), Export(), Profiles(), Agent(), Bench())
}


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
