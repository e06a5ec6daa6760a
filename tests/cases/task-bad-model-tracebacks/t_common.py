import torch
from torch.utils.data import TensorDataset

from search.tasks import Task
from search.tasks.models import ResNet


def base(seed, **kw):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 1, 16, 16, generator=g)
    y = torch.randint(0, 4, (64,), generator=g)
    torch.manual_seed(seed)
    model = kw.pop("model", None) or ResNet(num_classes=4, widths=(8, 8, 8)).eval()
    d = dict(
        name="bad",
        model=model,
        train=TensorDataset(x, y),
        val=TensorDataset(x[:32], y[:32]),
        test=TensorDataset(x[32:], y[32:]),
        calibration=TensorDataset(x[:16], y[:16]),
        example_input=x[:1].clone(),
        ignored_layers=["fc"],
        key=f"bad-{seed}",
    )
    d.update(kw)
    return Task(**d)
