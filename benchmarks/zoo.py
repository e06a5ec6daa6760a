"""Model-zoo benchmark: every torchvision classifier through one short trial; writes docs/zoo.md.

    python benchmarks/zoo.py run          # about an hour on 2 cores; resumes where it stopped
    python benchmarks/zoo.py table        # rewrite docs/zoo.md from results/zoo/zoo.jsonl

See search/bench/zoo.py for the options and what each trial does.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search.bench.zoo import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
