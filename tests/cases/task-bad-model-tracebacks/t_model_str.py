import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from t_common import base


def make_task(*, seed, cache_dir):
    return base(seed, model="not a module")
