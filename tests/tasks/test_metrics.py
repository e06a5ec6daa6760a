"""COCO mAP (faster-coco-eval), mean IoU, pixel and token accuracy on known cases."""

from __future__ import annotations

import numpy as np
import pytest

from search.tasks.metrics import (
    coco_stats,
    detection_map,
    mean_iou,
    pixel_accuracy,
    token_accuracy,
)


def _det(boxes, scores, labels):
    return {
        "boxes": np.array(boxes, float),
        "scores": np.array(scores),
        "labels": np.array(labels),
    }


def test_map_is_one_for_exact_boxes_and_counts_each_class():
    labels = np.array([[[0, 0, 10, 10, 1], [20, 20, 40, 40, 2]], [[5, 5, 25, 25, 1], [-1] * 5]])
    perfect = [_det([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.8], [1, 2]),
               _det([[5, 5, 25, 25]], [0.7], [1])]  # fmt: skip
    assert detection_map(perfect, labels) == pytest.approx(1.0)
    missing_class_2 = [_det([[0, 0, 10, 10]], [0.9], [1]), _det([[5, 5, 25, 25]], [0.7], [1])]
    assert detection_map(missing_class_2, labels) == pytest.approx(0.5)  # AP 1 and AP 0


def test_map_at_iou_half_counts_a_loose_box_that_coco_map_half_counts():
    labels = np.array([[[0, 0, 10, 10, 1]]])
    loose = [_det([[0, 0, 10, 14]], [0.9], [1])]  # IoU 100/140 = 0.71
    stats = coco_stats(loose, labels)
    assert stats["mAP50"] == pytest.approx(1.0) and 0.3 < stats["mAP"] < 0.7


def test_map_without_detections_or_boxes_is_zero():
    labels = np.array([[[0, 0, 10, 10, 1]]])
    assert detection_map([_det(np.zeros((0, 4)), [], [])], labels) == 0.0
    assert detection_map([_det([[0, 0, 1, 1]], [0.5], [1])], np.full((1, 1, 5), -1.0)) == 0.0
    with pytest.raises(ValueError):
        coco_stats([], labels)


def test_segmentation_and_token_scores_skip_negative_labels():
    logits = np.zeros((1, 3, 2, 2))
    logits[0, 1] = 1.0  # predicts class 1 everywhere
    labels = np.array([[[1, 1], [2, -1]]])
    assert pixel_accuracy(logits, labels) == pytest.approx(2 / 3)
    # class 1: IoU 2/3; class 2: IoU 0 -> mean 1/3 (class 0 absent from both)
    assert mean_iou(logits, labels) == pytest.approx(1 / 3)
    tokens = np.zeros((1, 3, 4))
    tokens[0, :, 2] = 1.0
    assert token_accuracy(tokens, np.array([[2, 0, -1]])) == pytest.approx(0.5)
