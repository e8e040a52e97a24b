"""Label-relevant / label-irrelevant latents (Zheng & Sun, CVPR 2019) on top of ReGene's classifier.

The paper splits the code of an image into a label-relevant z_s (a Gaussian-mixture prior, one
component per class) and a label-irrelevant z_u (a standard Gaussian prior, amortised like a VAE),
and decodes [z_s, z_u]. Our interpretation (their text here is an abstract):

- z_s is the frozen ReGene classifier's latent; its per-class Gaussians are fitted after the
  fact (`gaussian.ClassGaussians`) instead of being learned with the encoder by label supervision.
- z_u comes from `NuisanceEncoder`, the project's VGG-style classifier body (models.Classifier,
  no head) whose dense layer gives (mu, logvar); z_u = mu + exp(logvar / 2) * eps. It has the
  classifier's depth but is slimmer (`nuisance_config`: one conv per block, at most
  `NUISANCE_WIDTH` base channels): 8 units of style need less than the class does, and a copy
  of a wide searched classifier made an lr-livae epoch cost 3x the ReGene decoder's.
- The decoder is the project's (`stages.decoder.LatentDecoder` over `models.Decoder`) with a wider
  input, [z_s, z_u]: the standardisation of z_s it was trained with, and none for z_u.
- Loss = the ReGene decoder's scheduled reconstruction loss (MAE + SSIM + perceptual,
  `losses.reconstruction_loss`) + `kl_weight` * KL(q(z_u | x) || N(0, I)) (per image, summed over
  units), with `kl_weight` = 1 / (pixel values per image) (`kl_weight_for`) and `U_DIM` = 8 units.
  Nothing here stops z_u from also carrying class information, and the paper's GAN extension
  (a pixel discriminator) is left out.
- Training: the decoder stage (`stages.decoder.train_decoder(..., "lr-livae")`), beside the ReGene
  decoder, with its schedule, epochs and epoch loop (`stages.decoder.train_epoch`).
- Generation (the generate stage): z_s from the class's Gaussian, z_u from N(0, I), decoded.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from ..config import DecoderConfig, EncoderConfig
from ..models import Classifier
from ..runtime import autocast, concat, infer, to_float
from ..stages.decoder import LatentDecoder, decode_all, train_epoch
from ..stages.losses import reconstruction_loss
from .gaussian import ClassGaussians

# Size of z_u, and the KL's weight per pixel value (`kl_weight_for`). 8 units leave room for
# style (stroke, slant, thickness) while z_s (64+ units) carries the class.
U_DIM = 8
KL_BETA = 1.0
NUISANCE_WIDTH = 16


def nuisance_config(encoder: EncoderConfig) -> EncoderConfig:
    """E_u's body: the classifier's depth (so it pools to the same size), slimmed (see the module docstring)."""
    return dataclasses.replace(encoder, convs_per_block=1, base_width=min(encoder.base_width, NUISANCE_WIDTH), dropout=0.0)


class NuisanceEncoder(nn.Module):
    """E_u(image) -> (mu, logvar) of z_u, on [0, 1] images (N, C, H, W)."""

    def __init__(self, config: EncoderConfig, u_dim: int) -> None:
        super().__init__()
        # The classifier's body with a linear (identity) latent of 2 * u_dim units: mu and logvar.
        body_config = dataclasses.replace(config, latent_dim=2 * u_dim, latent_activation="identity", num_classes=1)
        self.body = Classifier(body_config)
        self.body.head = nn.Identity()  # no class head: E_u is not a classifier
        self.u_dim = u_dim

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.body.encode(images).float().chunk(2, dim=1)
        return mu, logvar


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per row: 0.5 * sum(mu^2 + exp(logvar) - 1 - logvar)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)


def reparameterise(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + (0.5 * logvar).exp() * noise


def split_decoder(config: DecoderConfig, s_mean: torch.Tensor, s_std: torch.Tensor, u_dim: int) -> LatentDecoder:
    """The project's decoder on [z_s, z_u]: `config.latent_dim` is z_s's size; z_s standardised, z_u as is."""
    wide = dataclasses.replace(config, latent_dim=config.latent_dim + u_dim)
    mean = torch.cat([s_mean.reshape(-1).float(), torch.zeros(u_dim)])
    std = torch.cat([s_std.reshape(-1).float(), torch.ones(u_dim)])
    return LatentDecoder(wide, mean, std)


def kl_weight_for(channels: int, image_size: int) -> float:
    """The KL's weight against the per-pixel-mean reconstruction loss: `KL_BETA` / (pixel values per image).

    A VAE's ELBO weighs the KL once per image against a log-likelihood summed over pixels; our
    reconstruction terms are means over pixels, so the KL is divided by their number (our reading).
    """
    return KL_BETA / (channels * image_size * image_size)


def lr_livae_loss(
    recon: torch.Tensor,
    target: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    weights: tuple[float, float, float],
    kl_weight: float,
    taps: nn.Module | None,
) -> dict[str, torch.Tensor]:
    """The decoder's reconstruction terms (`losses.reconstruction_loss`; weights (w_mae, w_ssim, w_perceptual)
    as `LossSchedule.weights` gives them) plus `kl_weight` * the batch-mean KL; returns every term and `total`.
    Call it outside autocast, as `reconstruction_loss`."""
    terms = reconstruction_loss(recon, target, weights, taps)
    terms["kl"] = kl_to_standard_normal(mu.float(), logvar.float()).mean()
    terms["total"] = terms["total"] + kl_weight * terms["kl"]
    return terms


def train_one_epoch(
    encoder_u: NuisanceEncoder,
    decoder: LatentDecoder,
    optimiser: torch.optim.Optimizer,
    z_s: torch.Tensor,
    images: torch.Tensor,
    weights: tuple[float, float, float],
    kl_weight: float,
    generator: torch.Generator,
    *,
    taps: nn.Module | None = None,
    batch_size: int = 64,
    scheduler: Any = None,
) -> dict[str, float]:
    """One pass over (N, p) frozen classifier latents `z_s` and their uint8 `images` (same device as the models).

    `generator` (a seeded CPU generator) orders the batches; the reparameterisation noise comes
    from a device generator seeded from it. Returns the image-weighted means of every loss term.
    """
    device = z_s.device
    encoder_u.train()
    decoder.train()
    noise = torch.Generator(device=device).manual_seed(int(torch.randint(2**62, (1,), generator=generator)))

    def batch_loss(idx: torch.Tensor) -> dict[str, torch.Tensor]:
        target = to_float(images[idx], device)
        with autocast(device):
            mu, logvar = encoder_u(target)
            z_u = reparameterise(mu.float(), logvar.float(), noise)
            recon = decoder(torch.cat([z_s[idx], z_u], 1))
        return lr_livae_loss(recon, target, mu, logvar, weights, kl_weight, taps)

    return train_epoch(batch_loss, optimiser, len(z_s), generator, device, batch_size=batch_size, scheduler=scheduler)


def load_nuisance_encoder(state: dict[str, Any], device: torch.device | str = "cpu") -> NuisanceEncoder:
    """E_u of an lr-livae decoder checkpoint (the decoder stage's), in eval mode."""
    encoder_u = NuisanceEncoder(EncoderConfig(**state["nuisance_encoder_config"]), int(state["u_dim"]))
    encoder_u.load_state_dict(state["nuisance_encoder"])
    return encoder_u.to(device).eval()


def reconstruct(decoder: LatentDecoder, encoder_u: NuisanceEncoder, z_s: torch.Tensor, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 reconstructions of `images` from their classifier latents `z_s` and E_u's mean z_u."""
    return decode_all(decoder, torch.cat([z_s.cpu(), posterior_means(encoder_u, images, device)], 1), device)


def posterior_means(encoder_u: NuisanceEncoder, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """E_u's mean code mu(x) (float32, on the CPU) of uint8 images: the z_u a reconstruction uses."""
    encoder_u.eval()
    parts = infer(lambda x: encoder_u(to_float(x, device))[0].float().cpu(), images, device=device)
    return concat(parts, torch.zeros(0, encoder_u.u_dim))


@torch.no_grad()
def sample_latents(gaussians: ClassGaussians, classes: torch.Tensor, u_dim: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(z_s, z_u) for each entry of `classes`: z_s from its class's Gaussian, z_u from N(0, I); seeded CPU `generator`."""
    z_s = gaussians.sample(classes, generator)
    z_u = torch.randn(len(classes), u_dim, generator=generator).to(z_s.device)
    return z_s, z_u


def sample_images(decoder: LatentDecoder, gaussians: ClassGaussians, classes: torch.Tensor, u_dim: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(z_s, uint8 images on the CPU as `decode_all` gives them) for each entry of `classes`;
    the head's confidence on z_s feeds the two-step filter."""
    z_s, z_u = sample_latents(gaussians, classes, u_dim, generator)
    return z_s, decode_all(decoder, torch.cat([z_s, z_u], 1), decoder.mean.device)
