"""Write docs/bench.md from finished benchmarks: one table per task and target.

python benchmarks/bench_docs.py results/bench/mobilenet_digits-cpu results/bench/...
python benchmarks/bench_docs.py                      # every folder under results/bench/
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from search.bench.docs import summary  # noqa: E402


def main() -> None:
    folders = [Path(a) for a in sys.argv[1:]] or sorted(Path("results/bench").glob("*"))
    out = Path(__file__).resolve().parent.parent / "docs" / "bench.md"
    out.write_text(summary(folders))
    print(f"wrote {out} from {len(folders)} folder(s)")


if __name__ == "__main__":
    main()
