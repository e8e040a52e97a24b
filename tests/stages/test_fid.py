"""Fréchet distance against an independent scipy computation, and Inception weights loading."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
import torchvision

from regene_search.errors import UserError
from regene_search.stages.fid import feature_stats, fid, frechet_distance, inception_features, load_inception


def scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook formula with scipy's general matrix square root."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_shift():
    features = np.random.default_rng(0).normal(size=(500, 16))
    assert fid(features, features) == pytest.approx(0.0, abs=1e-8)
    assert fid(features, features + 0.5) == pytest.approx(16 * 0.25, rel=1e-6)
    assert fid(features, features * 2.0) > 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fid_matches_scipy_sqrtm_on_random_gaussians(seed):
    rng = np.random.default_rng(seed)
    dim = 12
    mix_a, mix_b = rng.normal(size=(dim, dim)), rng.normal(size=(dim, dim))
    a = rng.normal(size=(400, dim)) @ mix_a + rng.normal(size=dim)
    b = rng.normal(size=(300, dim)) @ mix_b + rng.normal(size=dim)
    assert fid(a, b) == pytest.approx(scipy_fid(a, b), rel=1e-6)
    assert fid(torch.from_numpy(a).float(), torch.from_numpy(b).float()) == pytest.approx(scipy_fid(a, b), rel=1e-4)


@pytest.mark.parametrize("n_a, n_b", [(5, 40), (30, 20), (49, 49)])
def test_few_samples_path_equals_the_covariance_formula(n_a, n_b):
    # Fewer samples than dimensions takes the nuclear-norm path; it must agree with eigen-based sqrt.
    rng = np.random.default_rng(n_a)
    a, b = rng.normal(size=(n_a, 50)), rng.normal(size=(n_b, 50)) * 1.5 + 0.3
    assert fid(a, b) == pytest.approx(frechet_distance(*feature_stats(a), *feature_stats(b)), rel=1e-7)


def test_frechet_distance_of_known_gaussians():
    # N(0, I) vs N(m, 4I) in d dims: |m|^2 + d + 4d - 2 * 2d = |m|^2 + d.
    d = 5
    mu = np.arange(d, dtype=float)
    assert frechet_distance(np.zeros(d), np.eye(d), mu, 4 * np.eye(d)) == pytest.approx(mu @ mu + d)


def test_feature_sets_need_two_samples_and_equal_sizes():
    with pytest.raises(ValueError, match="N >= 2"):
        feature_stats(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="differ"):
        fid(np.zeros((3, 4)), np.zeros((3, 5)))


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """A freshly initialised torchvision inception_v3 state dict, standing in for real weights."""
    path = tmp_path_factory.mktemp("inception") / "inception.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), path)
    return path


def test_inception_weights_load_and_give_2048_d_features_and_a_fid(inception_file, cpu_threads):
    model = load_inception(inception_file)
    saved = torch.load(inception_file, weights_only=True)
    torch.testing.assert_close(model.Conv2d_1a_3x3.conv.weight, saved["Conv2d_1a_3x3.conv.weight"])
    images = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8)
    features = inception_features(model, images, torch.device("cpu"))
    assert features.shape == (6, 2048) and torch.isfinite(features).all()
    assert fid(features[:3], features[:3]) == pytest.approx(0.0, abs=1e-6)
    assert fid(features[:3], features[3:]) > 0


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x00garbage, not a zip or pickle", "not a loadable state dict"),
        (None, "does not exist"),
        ({"Conv2d_1a_3x3.conv.weight": torch.zeros(1)}, "does not fit"),
        (torch.zeros(3), "not a state dict"),
    ],
)
def test_bad_inception_files_are_one_line_user_errors(tmp_path, content, message):
    path = tmp_path / "weights.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(UserError, match=message) as info:
        load_inception(path)
    assert "\n" not in str(info.value)
