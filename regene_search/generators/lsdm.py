"""LSDM's second stage: a class-conditional generator of classifier latents, G(noise, class) -> latent.

Chong & Feng (2026) learn a latent space, then match the joint distribution of (latent, condition)
in it under the 1-Wasserstein distance, which gives one-step generation. Our interpretation (their
text here is an abstract):

- The latent space is the frozen ReGene classifier's latent; its first stage (a latent space
  learned from paired and unpaired data) is the classifier and the decoder the project already
  trains, so only the matching stage is here.
- W1 between the joint distributions of (latent, class) is minimised in its Kantorovich–Rubinstein
  dual with a critic on [standardised latent, one-hot class] kept near 1-Lipschitz by the gradient
  penalty of WGAN-GP (Gulrajani et al. 2017): penalty weight 10, `critic_steps` critic updates per
  generator update, Adam(betas=(0.5, 0.9)). Fake pairs take the classes of the real batch, so the
  class marginal is the data's and the penalty's interpolates share the class.
- G and the critic are small MLPs. G's output goes through the classifier's own latent activation
  (a ReLU latent comes out non-negative, with exact zeros) after undoing the per-unit
  standardisation, so generations live in the latent's domain.
- The loss rows' `w1_estimate` is the critic's E[D(real)] - E[D(fake)], the dual's value: only a
  lower-bound estimate of W1, and it depends on the critic, so tests judge G by the critic-free
  sliced W1 of `stages/quality.py`.

Seeded: parameters from `seed`, batches and noise from generators seeded with it; deterministic
on the CPU.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..models import _activation
from ..runtime import pick_device

LSDM_FORMAT = "regene-search/lsdm-v1"
LSDM_COLUMNS = ("step", "critic_loss", "generator_loss", "gradient_penalty", "w1_estimate", "seconds")


@dataclass(frozen=True)
class LSDMSettings:
    """How G trains: `steps` generator updates, each after `critic_steps` critic updates; a loss row
    every `log_every` generator updates (means over them)."""

    # Defaults sized for ~1-2 min on two CPU cores with 64-256-d latents (a few thousand of them).
    steps: int = 1000
    critic_steps: int = 5
    batch_size: int = 128
    noise_dim: int = 32
    hidden: int = 256
    lr: float = 2e-4
    gp_weight: float = 10.0
    log_every: int = 50
    seed: int = 0


def _mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, outputs))


class ConditionalGenerator(nn.Module):
    """G(z, c): noise and one-hot class -> an MLP -> de-standardised -> the latent activation."""

    def __init__(self, latent_dim: int, num_classes: int, activation: str, mean: torch.Tensor, std: torch.Tensor, noise_dim: int = 32, hidden: int = 256) -> None:
        super().__init__()
        self.latent_dim, self.num_classes, self.activation, self.noise_dim, self.hidden = latent_dim, num_classes, activation, noise_dim, hidden
        self.net = _mlp(noise_dim + num_classes, hidden, latent_dim)
        self.act = _activation(activation)
        self.register_buffer("mean", mean.reshape(1, -1).float().clone())
        self.register_buffer("std", std.reshape(1, -1).float().clone())

    def forward(self, noise: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        onehot = F.one_hot(classes, self.num_classes).to(noise.dtype)
        return self.act(self.mean + self.std * self.net(torch.cat([noise, onehot], 1)))

    @torch.no_grad()
    def sample(self, classes: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One latent per entry of `classes`, noise from the seeded CPU `generator` (same draws on any device)."""
        device = self.mean.device
        noise = torch.randn(len(classes), self.noise_dim, generator=generator).to(device)
        return self.forward(noise, classes.to(device=device, dtype=torch.int64))


class Critic(nn.Module):
    """D(x, c) on the standardised latent and the one-hot class; no normalisation layers (the gradient penalty is per sample)."""

    def __init__(self, latent_dim: int, num_classes: int, mean: torch.Tensor, std: torch.Tensor, hidden: int = 256) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.net = _mlp(latent_dim + num_classes, hidden, 1)
        self.register_buffer("mean", mean.reshape(1, -1).float().clone())
        self.register_buffer("std", std.reshape(1, -1).float().clone())

    def forward(self, latents: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        onehot = F.one_hot(classes, self.num_classes).to(latents.dtype)
        return self.net(torch.cat([(latents - self.mean) / self.std, onehot], 1)).squeeze(1)


def gradient_penalty(critic: Critic, real: torch.Tensor, fake: torch.Tensor, classes: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """WGAN-GP: E[(|grad_x D(x_hat, c)| - 1)^2] at x_hat uniformly between paired real and fake latents of class c."""
    alpha = torch.rand(len(real), 1, generator=generator, device=real.device)
    between = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(between, classes).sum(), between, create_graph=True)
    return (grad.norm(dim=1) - 1).pow(2).mean()


def build(latents: torch.Tensor, num_classes: int, activation: str, settings: LSDMSettings) -> tuple[ConditionalGenerator, Critic]:
    """G and its critic for `latents`, initialised from `settings.seed` without touching the global RNG."""
    mean, std = latents.float().mean(0).cpu(), latents.float().std(0).clamp_min(1e-6).cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        generator = ConditionalGenerator(latents.shape[1], num_classes, activation, mean, std, settings.noise_dim, settings.hidden)
        critic = Critic(latents.shape[1], num_classes, mean, std, settings.hidden)
    return generator, critic


def train_lsdm(
    latents: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    activation: str,
    settings: LSDMSettings = LSDMSettings(),
    device: torch.device | None = None,
    report: Callable[[str], None] | None = None,
) -> tuple[ConditionalGenerator, list[dict[str, Any]]]:
    """Train G on (N, p) frozen-encoder `latents` with (N,) `labels`; return (G in eval mode, loss rows `LSDM_COLUMNS`)."""
    device = device or pick_device()
    generator, critic = build(latents, num_classes, activation, settings)
    generator, critic = generator.to(device), critic.to(device)
    data, classes = latents.float().to(device), labels.to(device=device, dtype=torch.int64)
    g_opt = torch.optim.Adam(generator.parameters(), lr=settings.lr, betas=(0.5, 0.9))
    c_opt = torch.optim.Adam(critic.parameters(), lr=settings.lr, betas=(0.5, 0.9))
    rng = torch.Generator(device=device).manual_seed(settings.seed + 1)

    def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        index = torch.randint(len(data), (settings.batch_size,), generator=rng, device=device)
        return data[index], classes[index], torch.randn(settings.batch_size, settings.noise_dim, generator=rng, device=device)

    rows: list[dict[str, Any]] = []
    sums = torch.zeros(4, device=device)  # critic loss, generator loss, penalty, W1 estimate; no sync per step
    started = time.perf_counter()
    for step in range(1, settings.steps + 1):
        for _ in range(settings.critic_steps):
            real, c, noise = batch()
            with torch.no_grad():
                fake = generator(noise, c)
            w1 = critic(real, c).mean() - critic(fake, c).mean()
            penalty = gradient_penalty(critic, real, fake, c, rng)
            critic_loss = -w1 + settings.gp_weight * penalty
            c_opt.zero_grad(set_to_none=True)
            critic_loss.backward()
            c_opt.step()
            sums[[0, 2, 3]] += torch.stack([critic_loss, penalty, w1]).detach() / settings.critic_steps
        _, c, noise = batch()
        generator_loss = -critic(generator(noise, c), c).mean()
        g_opt.zero_grad(set_to_none=True)
        generator_loss.backward()
        g_opt.step()
        sums[1] += generator_loss.detach()
        if step % settings.log_every == 0 or step == settings.steps:
            count = settings.log_every if step % settings.log_every == 0 else step % settings.log_every
            means = (sums.double().cpu() / count).tolist()
            rows.append({"step": step, "critic_loss": means[0], "generator_loss": means[1], "gradient_penalty": means[2], "w1_estimate": means[3], "seconds": time.perf_counter() - started})
            sums.zero_()
            started = time.perf_counter()
            if report:
                report(f"lsdm: step {step}/{settings.steps}  W1 estimate {means[3]:.4f}  critic {means[0]:.4f}  generator {means[1]:.4f}")
    return generator.eval(), rows


def lsdm_state(generator: ConditionalGenerator, settings: LSDMSettings) -> dict[str, Any]:
    """A checkpoint dict of G (CPU tensors and plain values), loadable with `torch.load(weights_only=True)`."""
    return {
        "format": LSDM_FORMAT,
        "latent_dim": generator.latent_dim,
        "num_classes": generator.num_classes,
        "activation": generator.activation,
        "settings": dataclasses.asdict(settings),
        "model": {k: v.cpu() for k, v in generator.state_dict().items()},
    }


def load_lsdm(state: dict[str, Any], device: torch.device | str = "cpu") -> ConditionalGenerator:
    if state.get("format") != LSDM_FORMAT:
        raise ValueError(f"not an LSDM generator checkpoint (format={state.get('format')!r})")
    settings = LSDMSettings(**state["settings"])
    model = state["model"]
    generator = ConditionalGenerator(
        state["latent_dim"], state["num_classes"], state["activation"], model["mean"], model["std"], settings.noise_dim, settings.hidden
    )
    generator.load_state_dict(model)
    return generator.to(device).eval()
