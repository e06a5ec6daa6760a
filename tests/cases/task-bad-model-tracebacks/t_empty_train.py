import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
from t_common import base
from torch.utils.data import TensorDataset


def make_task(*, seed, cache_dir):
    return base(
        seed,
        train=TensorDataset(torch.zeros(0, 1, 16, 16), torch.zeros(0, dtype=torch.long)),
        val=TensorDataset(torch.zeros(0, 1, 16, 16), torch.zeros(0, dtype=torch.long)),
    )
