"""The old home of :mod:`search.tasks.models`, kept only so ``model.pt`` files pickled before the
move still load: ``torch.load`` finds a pickled model's class by its module path."""

from search.tasks.models import BasicBlock, ResNet

__all__ = ["BasicBlock", "ResNet"]
