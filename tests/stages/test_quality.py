"""KID, precision/recall/density/coverage and sliced W1 against their reference libraries on the same vectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from prdc import compute_prdc
from scipy.stats import wasserstein_distance
from torch import nn
from torchmetrics.image.kid import KernelInceptionDistance

from regene_search.stages.quality import classwise_sliced_w1, kid, mmd2_unbiased, prdc, sliced_w1, wasserstein_1d

pytestmark = pytest.mark.usefixtures("cpu_threads")  # small matrices: 2 threads on 2 busy cores run 100x slower


def _vectors(n: int, d: int, seed: int, shift: float = 0.0, scale: float = 1.0) -> torch.Tensor:
    """n vectors of one fixed correlated Gaussian per d (the seed draws the samples), shifted and scaled."""
    mixing = torch.randn(d, d, generator=torch.Generator().manual_seed(100)) / d**0.5
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g) @ mixing) * scale + shift


def _torchmetrics_kid(real: torch.Tensor, fake: torch.Tensor, subset_size: int) -> float:
    # nn.Identity as the "feature extractor": the metric gets our vectors as its features.
    metric = KernelInceptionDistance(feature=nn.Identity(), subsets=1, subset_size=subset_size)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    mean, _ = metric.compute()
    return float(mean)


@pytest.mark.parametrize("shift", [0.0, 0.3, 1.0])
def test_kid_equals_torchmetrics_on_the_same_vectors(shift):
    real, fake = _vectors(300, 32, 0).double(), _vectors(300, 32, 1, shift=shift).double()
    ours, std = kid(real, fake, subset_size=1000)
    assert std == 0.0  # both sets are one subset
    assert ours == pytest.approx(_torchmetrics_kid(real, fake, 300), rel=1e-9, abs=1e-12)


def test_kid_grows_with_the_shift_and_subsets_estimate_the_full_value():
    real = _vectors(800, 16, 0)
    values = [kid(real, _vectors(800, 16, 1, shift=s), subset_size=800)[0] for s in (0.0, 0.5, 1.0)]
    assert abs(values[0]) < 0.01 < values[1] < values[2]
    fake = _vectors(800, 16, 1, shift=0.5)
    mean, std = kid(real, fake, subsets=50, subset_size=200, seed=3)
    assert std > 0 and mean == pytest.approx(values[1], rel=0.15)
    assert kid(real, fake, subsets=50, subset_size=200, seed=3) == (mean, std)  # seeded
    assert kid(real, fake, subsets=50, subset_size=200, seed=4) != (mean, std)


def test_mmd_of_unequal_sizes_matches_the_explicit_double_sum():
    x, y = _vectors(40, 5, 0).double(), _vectors(25, 5, 1, shift=0.2).double()
    k = lambda a, b: (a @ b / 5 + 1) ** 3  # noqa: E731
    xx = sum(float(k(x[i], x[j])) for i in range(40) for j in range(40) if i != j) / (40 * 39)
    yy = sum(float(k(y[i], y[j])) for i in range(25) for j in range(25) if i != j) / (25 * 24)
    xy = sum(float(k(x[i], y[j])) for i in range(40) for j in range(25)) / (40 * 25)
    assert mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-10)


@pytest.mark.parametrize(("n_real", "n_fake", "shift", "scale", "k"), [(400, 300, 0.0, 1.0, 5), (500, 500, 0.7, 0.6, 3), (300, 450, -0.4, 1.5, 10)])
def test_prdc_equals_the_prdc_package_on_the_same_vectors(n_real, n_fake, shift, scale, k, monkeypatch):
    real = _vectors(n_real, 24, 0).double()
    fake = _vectors(n_fake, 24, 1, shift=shift, scale=scale).double()
    monkeypatch.setattr("regene_search.stages.quality.CHUNK", 128)  # several chunks
    ours = prdc(real, fake, nearest_k=k)
    reference = compute_prdc(real.numpy(), fake.numpy(), nearest_k=k)
    assert ours == pytest.approx({key: float(v) for key, v in reference.items()}, abs=1e-12)
    assert 0 < ours["precision"] < 1 or 0 < ours["recall"] < 1  # not a degenerate case


def test_prdc_sees_mode_dropping_as_low_recall_and_coverage_but_high_precision():
    real, full = _vectors(600, 8, 0), _vectors(600, 8, 1)
    dropped = full[full[:, 0] > 0.0]  # half the space never generated
    whole, half = prdc(real, full, nearest_k=5), prdc(real, dropped, nearest_k=5)
    assert half["precision"] >= whole["precision"] - 0.05 and whole["precision"] > 0.6
    assert half["recall"] < whole["recall"] - 0.15 and half["coverage"] < whole["coverage"] - 0.3


def test_exact_1d_w1_equals_scipy():
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(3, 57, generator=g, dtype=torch.float64), 2 * torch.rand(3, 31, generator=g, dtype=torch.float64)
    ours = wasserstein_1d(u, v)
    for row in range(3):
        assert float(ours[row]) == pytest.approx(wasserstein_distance(u[row].numpy(), v[row].numpy()), rel=1e-12)


def test_sliced_w1_is_the_mean_of_scipy_w1_over_the_projections_and_ranks_shifts():
    a, b = _vectors(200, 6, 0), _vectors(150, 6, 1, shift=0.5)
    directions = torch.randn(6, 16, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    directions /= directions.norm(dim=0, keepdim=True)
    pa, pb = (a.double() @ directions).numpy(), (b.double() @ directions).numpy()
    expected = np.mean([wasserstein_distance(pa[:, j], pb[:, j]) for j in range(16)])
    assert sliced_w1(a, b, projections=16, seed=7) == pytest.approx(expected, rel=1e-12)
    near, far = sliced_w1(a, _vectors(150, 6, 2, shift=0.1)), sliced_w1(a, _vectors(150, 6, 2, shift=1.0))
    assert near < far


def test_classwise_sliced_w1_sees_swapped_labels_that_the_pooled_distance_misses():
    a = torch.cat([_vectors(200, 4, 0, shift=-1.0), _vectors(200, 4, 1, shift=1.0)])
    labels = torch.cat([torch.zeros(200), torch.ones(200)]).long()
    b = torch.cat([_vectors(200, 4, 2, shift=-1.0), _vectors(200, 4, 3, shift=1.0)])
    right = classwise_sliced_w1(a, labels, b, labels)
    swapped = classwise_sliced_w1(a, labels, b, 1 - labels)
    assert right < 0.2 < 1.0 < swapped
    assert sliced_w1(a, b) < 0.2  # the same pooled sets
