"""Per-class Gaussians: Ledoit–Wolf against sklearn, recovery of known moments, the latent domain, real MNIST latents."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from sklearn.covariance import LedoitWolf

from regene_search.config import LATENT_ACTIVATIONS
from regene_search.generators.gaussian import LATENT_RANGE, ClassGaussians, ledoit_wolf, to_domain
from regene_search.models import _activation, load_classifier
from regene_search.runtime import encode_all, pick_device


def _correlated(n: int, mean: torch.Tensor, cov: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return mean + torch.randn(n, len(mean), generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T


def _known(p: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(p, p, generator=g, dtype=torch.float64) / p**0.5
    return torch.randn(p, generator=g, dtype=torch.float64), a @ a.T + 0.1 * torch.eye(p, dtype=torch.float64)


@pytest.mark.parametrize(("n", "p"), [(500, 12), (40, 150), (3, 8)])
def test_ledoit_wolf_equals_sklearn_with_fewer_or_more_samples_than_units_and_a_dead_unit(n, p):
    x = torch.relu(_correlated(n, *_known(p, 0), seed=1))
    x[:, 3] = 0.0  # a dead unit: zero variance
    mean, cov, shrinkage = ledoit_wolf(x)
    reference = LedoitWolf().fit(x.numpy())
    assert shrinkage == pytest.approx(reference.shrinkage_, rel=1e-10)
    np.testing.assert_allclose(cov.numpy(), reference.covariance_, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(mean.numpy(), reference.location_, rtol=1e-12, atol=1e-14)
    assert float(torch.linalg.eigvalsh(cov).min()) > 0  # shrinkage keeps it positive definite


def test_fit_recovers_each_class_mean_and_covariance_and_samples_follow_it():
    p = 6
    (m0, c0), (m1, c1) = _known(p, 0), _known(p, 1)
    latents = torch.cat([_correlated(20000, m0, c0, 2), _correlated(20000, m1, c1, 3)]).float()
    labels = torch.cat([torch.zeros(20000), torch.ones(20000)]).long()
    fitted = ClassGaussians.fit(latents, labels, 2, "identity")
    for c, (mean, cov) in enumerate([(m0, c0), (m1, c1)]):
        # Tolerances ~4 standard errors at n = 20000 (variances up to ~1.8).
        np.testing.assert_allclose(fitted.means[c].numpy(), mean.numpy(), atol=0.04)
        np.testing.assert_allclose(fitted.covariances[c].numpy(), cov.numpy(), atol=0.07)
        assert fitted.shrinkage[c] < 0.01  # plenty of samples: barely shrunk
    classes = torch.tensor([0, 1]).repeat_interleave(20000)
    drawn = fitted.sample(classes, torch.Generator().manual_seed(0)).double()
    for c in range(2):
        mine = drawn[classes == c]
        np.testing.assert_allclose(mine.mean(0).numpy(), fitted.means[c].numpy(), atol=0.04)
        np.testing.assert_allclose(torch.cov(mine.T).numpy(), fitted.covariances[c].numpy(), atol=0.07)


def test_relu_samples_are_non_negative_and_keep_each_units_share_of_exact_zeros():
    p = 8
    mean, cov = _known(p, 4)
    mean = torch.linspace(-1.5, 1.5, p, dtype=torch.float64)  # units from mostly-zero to mostly-active
    latents = torch.relu(_correlated(30000, mean, cov, 5)).float()
    labels = torch.zeros(30000, dtype=torch.int64)
    fitted = ClassGaussians.fit(latents, labels, 1, "relu")
    drawn = fitted.sample(torch.zeros(30000, dtype=torch.int64), torch.Generator().manual_seed(1))
    assert float(drawn.min()) == 0.0
    observed = (latents == 0).double().mean(0)
    np.testing.assert_allclose((drawn == 0).double().mean(0).numpy(), observed.numpy(), atol=0.015)
    # A plain clamp of the same Gaussian would not: it zeroes far fewer of the mostly-zero units.
    clamped = torch.relu(fitted.means[0] + torch.randn(30000, p, generator=torch.Generator().manual_seed(1), dtype=torch.float64) @ fitted.scale_tril[0].T)
    assert float(((clamped == 0).double().mean(0) - observed).abs().max()) > 0.1
    # Units that are zero together in the data are zero together in the samples.
    both = lambda x: float(((x[:, 0] == 0) & (x[:, 1] == 0)).double().mean())  # noqa: E731
    assert both(drawn) == pytest.approx(both(latents), abs=0.03)


@pytest.mark.parametrize("activation", LATENT_ACTIVATIONS)
def test_the_range_table_matches_the_classifiers_activations_and_samples_stay_inside(activation):
    assert set(LATENT_RANGE) == set(LATENT_ACTIVATIONS)
    outputs = _activation(activation)(torch.linspace(-60, 60, 400001, dtype=torch.float64))
    low, high = LATENT_RANGE[activation]
    assert float(outputs.min()) == pytest.approx(low, abs=1e-6) if low is not None else float(outputs.min()) < -10
    assert float(outputs.max()) == pytest.approx(high, abs=1e-6) if high is not None else float(outputs.max()) > 10
    latents = _activation(activation)(3 * torch.randn(500, 4, generator=torch.Generator().manual_seed(0)))
    fitted = ClassGaussians.fit(latents, torch.zeros(500, dtype=torch.int64), 1, activation)
    drawn = fitted.sample(torch.zeros(5000, dtype=torch.int64), torch.Generator().manual_seed(0))
    assert torch.equal(to_domain(drawn, activation), drawn)
    if low is not None:  # the bound as float32 rounds it (GELU's minimum is not a float32)
        assert float(drawn.min()) >= float(torch.tensor(low, dtype=torch.float32))


def test_sampling_is_seeded_and_survives_a_checkpoint_round_trip_on_the_device():
    p = 16
    latents = torch.relu(_correlated(300, *_known(p, 0), seed=1)).float()
    labels = torch.arange(300) % 3
    device = pick_device()
    fitted = ClassGaussians.fit(latents.to(device), labels, 3, "relu")
    classes = torch.tensor([2, 0, 1, 1])
    first = fitted.sample(classes, torch.Generator().manual_seed(7))
    assert first.device.type == device.type and first.shape == (4, p) and first.dtype == torch.float32
    assert torch.equal(first, fitted.sample(classes, torch.Generator().manual_seed(7)))
    assert not torch.equal(first, fitted.sample(classes, torch.Generator().manual_seed(8)))
    buffer = io.BytesIO()
    torch.save(fitted.state(), buffer)
    loaded = ClassGaussians.from_state(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True), "cpu")
    on_cpu = ClassGaussians.fit(latents, labels, 3, "relu").sample(classes, torch.Generator().manual_seed(7))
    torch.testing.assert_close(loaded.sample(classes, torch.Generator().manual_seed(7)), first.cpu())
    torch.testing.assert_close(on_cpu, first.cpu(), rtol=1e-5, atol=1e-5)  # the same samples on any device


def test_2048_unit_latents_with_fewer_samples_than_units_fit_and_sample_quickly():
    import time

    g = torch.Generator().manual_seed(0)
    latents = torch.relu(torch.randn(2, 2048, generator=g)[torch.arange(600) % 2] + torch.randn(600, 2048, generator=g))
    started = time.perf_counter()
    fitted = ClassGaussians.fit(latents, torch.arange(600) % 2, 2, "relu")
    drawn = fitted.sample(torch.arange(2000) % 2, torch.Generator().manual_seed(1))
    seconds = time.perf_counter() - started
    print(f"2 classes x 300 latents of 2048 units: fit + 2000 samples in {seconds:.1f} s")
    assert drawn.shape == (2000, 2048) and float(drawn.min()) >= 0 and bool(torch.isfinite(drawn).all())
    assert float(fitted.shrinkage.min()) > 0  # n < p: shrunk, hence positive definite
    observed = (latents[::2] == 0).double().mean(0)
    assert float(((drawn[::2] == 0).double().mean(0) - observed).abs().mean()) < 0.05


def test_a_class_needs_two_latents_and_degenerate_classes_still_sample():
    with pytest.raises(ValueError, match="class 1 has 1"):
        ClassGaussians.fit(torch.rand(3, 4), torch.tensor([0, 0, 1]), 2, "relu")
    # Two latents (Ledoit-Wolf does not shrink at n = 2) and an all-zero class (every unit dead).
    latents = torch.cat([torch.rand(2, 4), torch.zeros(5, 4)])
    fitted = ClassGaussians.fit(latents, torch.tensor([0, 0, 1, 1, 1, 1, 1]), 2, "relu")
    drawn = fitted.sample(torch.tensor([0] * 50 + [1] * 50), torch.Generator().manual_seed(0))
    assert torch.isfinite(drawn).all() and float(drawn.min()) >= 0
    assert float(drawn[:50].std(0).min()) > 0 and torch.equal(drawn[50:], torch.zeros(50, 4))


@pytest.mark.slow  # the shared encoder fixture trains a classifier: ~90 s on two busy cores
def test_samples_of_real_mnist_latents_are_classified_as_their_class_by_the_frozen_head(mnist_2k, encoder_checkpoint):
    device = pick_device()
    classifier = load_classifier(encoder_checkpoint, device)
    assert classifier.config.latent_activation == "relu"
    latents = encode_all(classifier, mnist_2k.train_x, device)
    fitted = ClassGaussians.fit(latents, mnist_2k.train_y, mnist_2k.num_classes, "relu")
    classes = torch.arange(10).repeat_interleave(100)
    drawn = fitted.sample(classes, torch.Generator().manual_seed(0))
    assert float(drawn.min()) >= 0
    with torch.no_grad():
        predicted = classifier.head(drawn).argmax(1).cpu()
    assert float((predicted == classes).double().mean()) > 0.8
    observed = torch.stack([(latents[mnist_2k.train_y.to(device) == c] == 0).double().mean(0) for c in range(10)]).cpu()
    sampled = torch.stack([(drawn[classes.to(device) == c] == 0).double().mean(0) for c in range(10)]).cpu()
    assert float((sampled - observed).abs().mean()) < 0.05
