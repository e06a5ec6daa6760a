"""What the host timing lock does to latency measured while another worker trains.

Three conditions, in interleaved blocks so that load from other users hits all alike: ``quiet``
(nobody trains), ``no lock`` (another process trains a conv net with torch while this one times an
ONNX model) and ``lock`` (the same, with :class:`search.distributed.host_locks.CpuLock`: the
trainer calls ``pace()`` between batches like a study's distillation, timing holds ``timing()``).
Prints p50/p90/p99 and cv of the timed runs, how often a run took over 1.5x the quiet p50, the
trainer's batches per second and the share of timing windows that overlapped a training batch.

    python benchmarks/timing_lock.py                 # about a minute
    python benchmarks/timing_lock.py --rounds 40 --blocks 3 --threads 1
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RUNS = 20  # timed runs per round (one hold of the lock)


def _net(widths: tuple[int, ...]):
    from torch import nn

    layers, c = [], 3
    for w in widths:
        layers += [nn.Conv2d(c, w, 3, padding=1), nn.ReLU()]
        c = w
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10)).eval()


def trainer(stop, use_lock: bool, threads: int, counter, spans_path: str) -> None:
    import torch

    from search.distributed.host_locks import CpuLock

    torch.set_num_threads(threads)
    lock, model = CpuLock(), _net((32, 32)).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    with open(spans_path, "w") as log:
        while not stop.is_set():
            if use_lock:
                lock.pace()  # between batches, as the distillation's paced data does
            t0 = time.monotonic()
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            counter.value += 1
            log.write(f"{t0} {time.monotonic()}\n")
    lock.release()


def time_model(session, feed, *, use_lock: bool, rounds: int) -> tuple[list[float], list]:
    from search.distributed.host_locks import CpuLock

    lock, times, windows = CpuLock(), [], []
    for _ in range(rounds):
        with lock.timing() if use_lock else open(os.devnull):
            for _ in range(5):
                session.run(None, feed)  # warm-up inside the window
            w0 = time.monotonic()
            for _ in range(RUNS):
                t = time.perf_counter()
                session.run(None, feed)
                times.append((time.perf_counter() - t) * 1e3)
            windows.append((w0, time.monotonic()))
        time.sleep(0.05)  # between rounds, training may run
    return times, windows


def overlap(windows: list, spans_path: Path) -> float:
    spans = [tuple(map(float, ln.split())) for ln in spans_path.read_text().splitlines()]
    total = sum(b - a for a, b in windows)
    both = sum(max(0.0, min(b, d) - max(a, c)) for a, b in windows for c, d in spans)
    return both / total if total else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="timing rounds per block")
    parser.add_argument("--blocks", type=int, default=3, help="interleaved blocks")
    parser.add_argument("--threads", type=int, default=1, help="the trainer's torch threads")
    args = parser.parse_args()
    os.environ["SEARCH_LOCK_DIR"] = tempfile.mkdtemp(prefix="timing-lock-")
    import onnxruntime as ort
    import torch

    work = Path(os.environ["SEARCH_LOCK_DIR"])
    torch.onnx.export(_net((32, 48, 48)), (torch.randn(1, 3, 32, 32),), str(work / "m.onnx"))
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    session = ort.InferenceSession(str(work / "m.onnx"), so, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.random.rand(1, 3, 32, 32).astype(np.float32)}
    ctx = mp.get_context("spawn")
    results = {k: {"t": [], "overlap": [], "rate": []} for k in ("quiet", "no lock", "lock")}
    load = [os.getloadavg()[0]]
    for _ in range(args.blocks):
        for label, r in results.items():
            stop, counter = ctx.Event(), ctx.Value("l", 0, lock=False)
            spans = work / "spans.log"
            p = None
            use_lock = label == "lock"
            if label != "quiet":
                job = (stop, use_lock, args.threads, counter, str(spans))
                p = ctx.Process(target=trainer, args=job)
                p.start()
                while counter.value < 10:
                    time.sleep(0.05)
            c0, t0 = counter.value, time.perf_counter()
            times, windows = time_model(session, feed, use_lock=use_lock, rounds=args.rounds)
            r["rate"].append((counter.value - c0) / (time.perf_counter() - t0))
            if p is not None:
                stop.set()
                p.join()
                r["overlap"].append(overlap(windows, spans))
            r["t"] += times
        load.append(os.getloadavg()[0])
    quiet_p50 = np.percentile(results["quiet"]["t"], 50)
    print(f"{args.blocks} blocks x {args.rounds} rounds x {RUNS} runs, ONNX Runtime 1 thread, "
          f"trainer torch {args.threads} thread(s); load average {min(load):.1f}-{max(load):.1f} "
          f"on {os.cpu_count()} cores")  # fmt: skip
    for label, r in results.items():
        t = np.array(r["t"])
        p50, p90, p99 = np.percentile(t, [50, 90, 99])
        extra = ""
        if r["overlap"]:
            extra = (f", trainer {np.mean(r['rate']):.0f} batch/s, timing windows overlapping "
                     f"training {np.mean(r['overlap']):.0%}")  # fmt: skip
        cv, slow = t.std() / t.mean(), np.mean(t > 1.5 * quiet_p50)
        print(f"{label:8} p50 {p50:.3f} ms  p90 {p90:.3f}  p99 {p99:.3f}  cv {cv:.0%}"
              f"  >1.5x quiet p50 {slow:.0%}{extra}")  # fmt: skip


if __name__ == "__main__":
    main()
