"""The label-irrelevant code z_u: KL against torch.distributions, the wide decoder, sampling shapes, an epoch on real MNIST."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from regene_search.config import DecoderConfig, EncoderConfig
from regene_search.generators.gaussian import ClassGaussians
from regene_search.generators.lr_livae import (
    NuisanceEncoder,
    kl_to_standard_normal,
    lr_livae_loss,
    nuisance_config,
    reparameterise,
    sample_images,
    sample_latents,
    split_decoder,
    train_one_epoch,
)
from regene_search.models import Classifier
from regene_search.runtime import encode_all, on_device, to_float

CPU = torch.device("cpu")
MNIST_ENCODER = EncoderConfig(image_size=28, channels=1, num_classes=10, blocks=2, base_width=8, latent_dim=32)


def test_the_nuisance_encoder_keeps_the_classifiers_depth_and_is_slimmer():
    wide = EncoderConfig(image_size=32, channels=3, num_classes=10, blocks=3, convs_per_block=2, base_width=64, latent_dim=1024, dropout=0.3)
    slim = nuisance_config(wide)
    assert (slim.blocks, slim.convs_per_block, slim.base_width, slim.dropout) == (3, 1, 16, 0.0)
    assert nuisance_config(MNIST_ENCODER) == MNIST_ENCODER  # already slim: unchanged
    size = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert size(NuisanceEncoder(slim, 8)) * 10 < size(Classifier(wide))
    mu, logvar = NuisanceEncoder(slim, 8)(torch.rand(2, 3, 32, 32))
    assert mu.shape == logvar.shape == (2, 8)


def test_kl_equals_torch_distributions_and_vanishes_at_the_prior():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(50, 7, generator=g, dtype=torch.float64), 2 * torch.randn(50, 7, generator=g, dtype=torch.float64)
    expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(1)
    torch.testing.assert_close(kl_to_standard_normal(mu, logvar), expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(kl_to_standard_normal(torch.zeros(3, 4), torch.zeros(3, 4)), torch.zeros(3))


def test_reparameterised_samples_have_the_encoded_mean_and_variance():
    mu, logvar = torch.tensor([[1.0, -2.0, 0.0]]).expand(40000, 3), torch.tensor([[0.0, 1.0, -2.0]]).expand(40000, 3)
    z = reparameterise(mu, logvar, torch.Generator().manual_seed(0))
    torch.testing.assert_close(z.mean(0), mu[0], atol=0.03, rtol=0)
    torch.testing.assert_close(z.var(0), logvar[0].exp(), atol=0.05, rtol=0.03)


def test_the_split_decoder_standardises_z_s_only_and_sampling_gives_one_image_per_class():
    s_dim, u_dim = 12, 5
    g = torch.Generator().manual_seed(0)
    s_mean, s_std = torch.rand(s_dim, generator=g), 0.5 + torch.rand(s_dim, generator=g)
    torch.manual_seed(0)
    decoder = split_decoder(DecoderConfig(image_size=28, channels=1, latent_dim=s_dim, base_width=8), s_mean, s_std, u_dim).eval()
    assert decoder.decoder.config.latent_dim == s_dim + u_dim
    z_s, z_u = torch.rand(4, s_dim, generator=g), torch.randn(4, u_dim, generator=g)
    with torch.no_grad():
        direct = decoder.decoder(torch.cat([(z_s - s_mean) / s_std, z_u], 1))
        torch.testing.assert_close(decoder(torch.cat([z_s, z_u], 1)), direct)
    latents = torch.relu(torch.randn(60, s_dim, generator=g))
    gaussians = ClassGaussians.fit(latents, torch.arange(60) % 3, 3, "relu")
    classes = torch.tensor([0, 1, 2, 2, 1])
    zs, zu = sample_latents(gaussians, classes, u_dim, torch.Generator().manual_seed(1))
    assert zs.shape == (5, s_dim) and zu.shape == (5, u_dim) and float(zs.min()) >= 0
    z_s2, images = sample_images(decoder, gaussians, classes, u_dim, torch.Generator().manual_seed(1))
    assert torch.equal(z_s2, zs)
    assert images.shape == (5, 1, 28, 28) and images.dtype == torch.uint8
    with torch.no_grad():  # the same draws, decoded by hand, round to the same pixels
        by_hand = decoder(torch.cat([zs, zu], 1)).clamp(0, 1).mul(255).round().to(torch.uint8)
    assert torch.equal(images, by_hand)


def test_the_loss_is_the_weighted_reconstruction_plus_the_weighted_kl():
    g = torch.Generator().manual_seed(0)
    target, recon = torch.rand(4, 1, 28, 28, generator=g), torch.rand(4, 1, 28, 28, generator=g)
    mu, logvar = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    one = lr_livae_loss(recon, target, mu, logvar, (1.0, 0.5, 0.0), 1.0, None)
    three = lr_livae_loss(recon, target, mu, logvar, (1.0, 0.5, 0.0), 3.0, None)
    torch.testing.assert_close(three["total"] - one["total"], 2 * kl_to_standard_normal(mu, logvar).mean())
    torch.testing.assert_close(one["total"], one["mae"] + 0.5 * one["ssim"] + one["kl"])
    with pytest.raises(ValueError, match="taps"):
        lr_livae_loss(recon, target, mu, logvar, (1.0, 0.5, 0.1), 1.0, None)


def _epochs(data, count: int, seed: int) -> tuple[list[dict[str, float]], NuisanceEncoder]:
    torch.manual_seed(seed)
    images = data.train_x[:384]
    classifier = on_device(Classifier(MNIST_ENCODER), CPU)
    z_s = encode_all(classifier, images, CPU)
    encoder_u = on_device(NuisanceEncoder(MNIST_ENCODER, u_dim=4), CPU)
    decoder = on_device(split_decoder(DecoderConfig(image_size=28, channels=1, latent_dim=32, base_width=8), z_s.mean(0), z_s.std(0).clamp_min(1e-6), 4), CPU)
    optimiser = torch.optim.Adam([*encoder_u.parameters(), *decoder.parameters()], lr=3e-3)
    order = torch.Generator().manual_seed(seed)
    rows = [train_one_epoch(encoder_u, decoder, optimiser, z_s, images, (1.0, 0.5, 0.0), 0.05, order, batch_size=64) for _ in range(count)]
    return rows, encoder_u


def test_an_epoch_on_real_mnist_lowers_the_loss_trains_e_u_and_is_seeded(mnist_2k):
    rows, encoder_u = _epochs(mnist_2k, 3, seed=0)
    assert set(rows[0]) == {"mae", "ssim", "perceptual", "kl", "total"}
    assert rows[-1]["total"] < rows[0]["total"] and rows[-1]["mae"] < rows[0]["mae"]
    assert rows[-1]["kl"] > 0  # z_u carries information about the image
    mu, logvar = encoder_u.eval()(to_float(mnist_2k.train_x[:8], CPU))
    assert mu.shape == logvar.shape == (8, 4)
    again, _ = _epochs(mnist_2k, 1, seed=0)
    assert again[0] == pytest.approx(rows[0], rel=1e-6)
