"""Generated images of coloured shapes (squares, discs, triangles) with their boxes and
per-pixel masks: the data of the built-in detection and segmentation examples.

Nothing is downloaded: every image is drawn from the seed. The class of an object is its
shape, not its colour (colours are random), so a model must learn shapes. Classes: 0
background (masks only), 1 square, 2 disc, 3 triangle.

Example:
    >>> images, masks, boxes = draw(4, size=32, seed=0)
    >>> images.shape, masks.shape, boxes.shape
    (torch.Size([4, 3, 32, 32]), torch.Size([4, 32, 32]), torch.Size([4, 3, 5]))
"""

from __future__ import annotations

import numpy as np
import torch

CLASSES = ("square", "disc", "triangle")
MAX_OBJECTS = 3


def _inside(kind: int, x: np.ndarray, y: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    """Pixels (centres ``x``, ``y``) inside shape ``kind`` (1-3) of half-size ``r``."""
    if kind == 1:
        return (np.abs(x - cx) <= r) & (np.abs(y - cy) <= r)
    if kind == 2:
        return (x - cx) ** 2 + (y - cy) ** 2 <= r * r
    top = cy - r  # an upright triangle: a point at the top, 2r wide at the bottom
    return (y >= top) & (y <= cy + r) & (np.abs(x - cx) <= (y - top) / 2)


def draw(
    n: int, *, size: int, seed: int, min_size: int = 8, max_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` images of 1 to :data:`MAX_OBJECTS` shapes.

    Returns:
        images (n, 3, size, size) float32, roughly zero mean and unit spread; masks (n, size,
        size) int64 class per pixel (the shape drawn last wins where shapes overlap); boxes
        (n, MAX_OBJECTS, 5) float32 rows ``[x1, y1, x2, y2, class]`` in pixels, class -1
        for the rows of absent objects.
    """
    rng = np.random.default_rng(seed)
    max_size = max_size or size // 2
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    images = rng.normal(0.0, 0.25, (n, 3, size, size)) + rng.uniform(-0.5, 0.5, (n, 3, 1, 1))
    masks = np.zeros((n, size, size), np.int64)
    boxes = np.full((n, MAX_OBJECTS, 5), -1.0, np.float32)
    for i in range(n):
        for j in range(int(rng.integers(1, MAX_OBJECTS + 1))):
            kind = int(rng.integers(1, len(CLASSES) + 1))
            r = rng.uniform(min_size, max_size) / 2
            cx, cy = rng.uniform(r, size - r, 2)
            inside = _inside(kind, xs, ys, cx, cy, r)
            colour = rng.uniform(-1.5, 1.5, 3)
            colour[rng.integers(3)] = rng.choice([-2.0, 2.0])  # one strong channel: visible
            images[i][:, inside] = colour[:, None] + rng.normal(0, 0.1, (3, int(inside.sum())))
            masks[i][inside] = kind
            boxes[i, j] = (cx - r, cy - r, cx + r, cy + r, kind)
    x = torch.from_numpy(images.astype(np.float32))
    return x, torch.from_numpy(masks), torch.from_numpy(boxes)
