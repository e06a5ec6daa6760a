"""One hypervolume for the report (raw area) and the bench (normalized): the numbers each gave
before they shared it, on fixed points."""

from __future__ import annotations

import pytest

from search.bench.metrics import Point
from search.bench.metrics import hypervolume as bench_hypervolume
from search.report.hypervolume import hypervolume

# (accuracy, latency ms); the second point is dominated by the first.
POINTS = [(0.96, 8.0), (0.95, 9.0), (0.90, 2.0), (0.80, 12.0)]


def _old_report_area(points, ref):
    # search/report.py's _hv2d before the merge, kept here as the reference.
    area, best = 0.0, ref[0]
    for acc, lat in sorted(points, key=lambda p: (p[1], -p[0])):
        if acc > best and lat < ref[1]:
            area += (acc - best) * (ref[1] - lat)
            best = acc
    return area


def _old_bench(points, *, base_accuracy, base_latency_ms, ref_drop):
    # search/bench/metrics.py's hypervolume before the merge (latency as a ratio).
    ref_acc = base_accuracy - ref_drop
    pts = sorted(
        (lat / base_latency_ms, -acc)
        for acc, lat in points
        if lat < base_latency_ms and acc > ref_acc
    )
    volume, best = 0.0, -ref_acc
    for f1, f2 in pts:
        if f2 < best:
            volume += (1.0 - f1) * (best - f2)
            best = f2
    return volume / ref_drop


def test_raw_area_is_the_reports_as_before() -> None:
    # 0.9 * (11 - 2) + (0.96 - 0.9) * (11 - 8), worked out by hand
    assert hypervolume(POINTS[:1] + POINTS[2:3], reference=(0.0, 11.0)) == pytest.approx(8.28)
    for ref in ((0.0, 11.0), (0.85, 10.0), (0.5, 13.2)):
        assert hypervolume(POINTS, reference=ref) == pytest.approx(_old_report_area(POINTS, ref))
    assert hypervolume([], reference=(0.0, 1.0)) == 0.0


@pytest.mark.parametrize(("base_lat", "ref_drop"), [(10.0, 0.05), (8.5, 0.2), (3.0, 0.1)])
def test_normalized_is_the_benchs_as_before(base_lat: float, ref_drop: float) -> None:
    kw = {"base_accuracy": 0.95, "base_latency_ms": base_lat, "ref_drop": ref_drop}
    pts = [Point(accuracy=a, latency_ms=lat) for a, lat in POINTS]
    assert bench_hypervolume(pts, **kw) == pytest.approx(_old_bench(POINTS, **kw), abs=1e-12)


def test_the_bench_is_the_area_over_its_largest_value() -> None:
    pts = [Point(accuracy=a, latency_ms=lat) for a, lat in POINTS]
    area = hypervolume(POINTS, reference=(0.95 - 0.2, 8.5))
    normalized = bench_hypervolume(pts, base_accuracy=0.95, base_latency_ms=8.5, ref_drop=0.2)
    assert normalized == pytest.approx(area / (8.5 * 0.2))


def test_scale_must_be_positive() -> None:
    with pytest.raises(ValueError, match="scale must be > 0"):
        hypervolume(POINTS, reference=(0.0, 1.0), scale=0.0)
