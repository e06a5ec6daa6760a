"""The ``bench`` command: the benchmark of :mod:`search.bench` from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from search.cli.base import Command, count, seed
from search.errors import SearchError

if TYPE_CHECKING:
    from search.config import Space


def quick_space(space: Space) -> Space:
    """``space`` with one distillation epoch: the ``--quick`` smoke run's budget."""
    epochs = space.distill.epochs.model_copy(update={"low": 1, "high": 1})
    return space.model_copy(
        update={"distill": space.distill.model_copy(update={"epochs": epochs})}
    )


class Bench(Command):
    """Benchmark: float, int8 alone, pruning alone, sequential (prune + KD, then int8), random
    and joint search on one budget, over several sampler seeds."""

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
            "--trials", type=count(1), default=15, help="N: joint-search trials; random gets 3N"
        )
        more = (
            "joint methods besides the space's default: tpe,gp,nsga2[-ordinal][:global|:groups]"
            " (:global prunes with one ratio, :groups searches per-group prune scales)"
        )
        parser.add_argument("--samplers", default="tpe:global", help=more)
        parser.add_argument("--seeds", type=count(1), default=3, help="sampler seeds per method")
        parser.add_argument(
            "--ratios", default="0.3,0.5,0.7", help="fixed ratios of pruning alone"
        )
        parser.add_argument(
            "--rounds",
            type=count(1),
            default=20,
            help="interleaved rounds of the final confirmation, in each fresh process",
        )
        parser.add_argument(
            "--quiet-wait",
            type=float,
            default=900.0,
            help="seconds the final confirmation waits for a quiet machine (0: none)",
        )
        parser.add_argument(
            "--reconfirm",
            type=Path,
            default=None,
            metavar="DIR",
            help="time a finished benchmark's candidates again in new processes and say which "
            "land inside the intervals it gave (writes DIR/reconfirm.md)",
        )
        parser.add_argument(
            "--quick",
            action="store_true",
            help="a smoke run for CI: 2 trials, 2 seeds, ratio 0.5, 1 epoch, 5 rounds, no wait",
        )
        about = "seed of splits, teacher, training; first sampler seed"
        parser.add_argument("--seed", type=seed, default=0, help=about)
        parser.add_argument(
            "--out", type=Path, default=None, help="output folder (results/bench/<task>-<hw>)"
        )

    def run(self, args: argparse.Namespace) -> int:
        from search.bench import BenchSpec, run_bench

        if args.reconfirm is not None:
            from search.bench.reconfirm import reconfirm

            result = reconfirm(args.reconfirm, quiet_wait_s=max(args.quiet_wait, 0.0))
            state = "contended" if result["confirmation"]["contended"] else "quiet"
            print(
                f"{result['inside']} of {result['of']} candidates inside the benchmark's "
                f"intervals, {result['hours_after']} h later ({state}); "
                f"see {args.reconfirm / 'reconfirm.md'}"
            )
            return 0
        from search.config import load_profile, load_space
        from search.core.checks import check_writable
        from search.tasks import resolve_factory, task_slug

        profile = load_profile(args.hw)
        space = load_space(args.space)
        resolve_factory(args.task)
        if args.quiet_wait < 0:
            raise SearchError(f"--quiet-wait must be >= 0 seconds, got {args.quiet_wait}")
        if args.quick:
            args.trials, args.seeds, args.ratios, args.rounds, args.quiet_wait = 2, 2, "0.5", 5, 0
            space = quick_space(space)
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
            seeds=args.seeds,
            samplers=tuple(s.strip() for s in args.samplers.split(",") if s.strip()),
            ratios=ratios,
            rounds=args.rounds,
            quiet_wait_s=args.quiet_wait,
            profile_source=args.hw,
        )
        check_writable(spec.out_dir, what="the benchmark")
        run_bench(spec)
        return 0
