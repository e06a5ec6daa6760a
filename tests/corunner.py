"""A co-runner like the ones a shared machine has: trains a small CNN (memory and cache traffic,
not a busy loop) for the given number of seconds. Copied from
``../shared/cases/latency-ratio-shifts-under-load/corunner.py``.

Usage: python tests/corunner.py SECONDS
"""

import sys
import time

import torch
from torch import nn

torch.set_num_threads(1)
net = nn.Sequential(
    nn.Conv2d(3, 64, 3, padding=1),
    nn.ReLU(),
    nn.Conv2d(64, 64, 3, padding=1),
    nn.ReLU(),
    nn.AdaptiveAvgPool2d(1),
    nn.Flatten(),
    nn.Linear(64, 10),
)
opt = torch.optim.SGD(net.parameters(), 0.01)
x, y = torch.randn(32, 3, 64, 64), torch.randint(0, 10, (32,))
end = time.time() + float(sys.argv[1])
while time.time() < end:
    opt.zero_grad()
    nn.functional.cross_entropy(net(x), y).backward()
    opt.step()
