"""One Gaussian per class over the frozen classifier's latents: Ledoit–Wolf covariance, seeded sampling.

The label-relevant code of Zheng & Sun (CVPR 2019) follows a Gaussian mixture with one component
per class. Our interpretation (their text here is an abstract): the components are not learned
jointly with an encoder; they are fitted after the fact to the latents of ReGene's frozen
classifier, one full-covariance Gaussian per class. The covariance is the Ledoit–Wolf shrinkage
estimate (the same formula as `sklearn.covariance.LedoitWolf`, which the tests check it against),
so it is positive definite even with fewer samples than latent units or with dead units.

Samples are put back into the domain of the classifier's latent activation (models.py): clamped
to its range (ReLU >= 0, sigmoid in [0, 1], tanh in [-1, 1], GELU >= its minimum). For a ReLU
latent, a unit of class c is exactly 0 in a share p of that class's training latents. A sample's
unit is set to 0 when it falls below the p-quantile of its own fitted marginal (and below 0 in
any case), so each unit keeps its observed share of exact zeros in expectation. The rule is
monotone in the sampled value, as a ReLU is in its pre-activation, so units that are low (zero)
together in the data stay zero together in the samples through the fitted correlations. This
zero-share rule is our addition, not a detail of either paper.

Device-agnostic: the fit runs in float64 on the latents' device; noise is drawn on the CPU from
the caller's seeded generator, so a seed gives the same samples on a CPU and a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..config import LATENT_ACTIVATIONS

# GELU(x) = x * Phi(x) is smallest at x = -0.7518: its minimum value.
GELU_MIN = -0.16997120747
# (low, high) of each latent activation's outputs; None is unbounded. tests/generators check it
# against models.py's activations, so a new activation fails there until it is added here.
LATENT_RANGE: dict[str, tuple[float | None, float | None]] = {
    "relu": (0.0, None),
    "leaky_relu": (None, None),
    "gelu": (GELU_MIN, None),
    "tanh": (-1.0, 1.0),
    "sigmoid": (0.0, 1.0),
    "identity": (None, None),
}
GAUSSIAN_FORMAT = "regene-search/class-gaussians-v1"


def ledoit_wolf(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(mean, covariance, shrinkage) of (n, p) samples, as sklearn's `LedoitWolf()` (not assuming centred data).

    Covariance = (1 - s) * S + s * (tr(S) / p) * I with S the maximum-likelihood covariance
    (divided by n) and s the Ledoit–Wolf (2004) shrinkage. float64 on the input's device.
    """
    x = x.double()
    n, p = x.shape
    if n < 2:
        raise ValueError(f"need at least 2 samples to fit a covariance, got {n}")
    mean = x.mean(0)
    xc = x - mean
    emp = xc.T @ xc / n
    mu = torch.diagonal(emp).sum() / p
    # sklearn's beta_ = sum((X**2).T @ X**2) = sum_i (sum_j x_ij^2)^2: O(n p), no second p x p product.
    beta_ = xc.pow(2).sum(1).pow(2).sum()
    delta_ = emp.pow(2).sum()  # = sum((X.T @ X)**2) / n**2
    beta = (beta_ / n - delta_) / (p * n)
    delta = (delta_ - 2.0 * mu * torch.diagonal(emp).sum() + p * mu**2) / p
    beta = torch.minimum(beta, delta)
    shrinkage = 0.0 if float(beta) == 0.0 else float(beta / delta)
    cov = (1.0 - shrinkage) * emp
    cov.diagonal().add_(shrinkage * mu)
    return mean, cov, shrinkage


def _cholesky(cov: torch.Tensor) -> torch.Tensor:
    """Cholesky factor of `cov`, with the smallest jitter (x10 steps) on the diagonal that makes it work.

    Ledoit–Wolf is positive definite whenever it shrinks, but it does not shrink at n = 2 and a
    class whose latents are all equal (all units dead) has a zero covariance.
    """
    scale = max(float(torch.diagonal(cov).mean()), 1e-12)
    jitter = 0.0
    while True:
        tril, info = torch.linalg.cholesky_ex(cov + jitter * torch.eye(len(cov), dtype=cov.dtype, device=cov.device))
        if int(info) == 0:
            return tril
        jitter = scale * 1e-10 if jitter == 0.0 else jitter * 10


def to_domain(latents: torch.Tensor, activation: str) -> torch.Tensor:
    """`latents` clamped into the output range of the latent activation `activation`."""
    low, high = LATENT_RANGE[activation]
    return latents.clamp(min=low, max=high) if (low, high) != (None, None) else latents


@dataclass
class ClassGaussians:
    """Per-class mean (C, p), Cholesky factor of the covariance (C, p, p), and for ReLU latents the
    per-class share of exact zeros per unit (C, p). Build with `fit`; draw with `sample`."""

    means: torch.Tensor
    scale_tril: torch.Tensor
    shrinkage: torch.Tensor
    zero_share: torch.Tensor | None
    activation: str

    @classmethod
    def fit(cls, latents: torch.Tensor, labels: torch.Tensor, num_classes: int, activation: str) -> ClassGaussians:
        """Fit one Gaussian per class to (N, p) `latents` with (N,) integer `labels`; every class needs >= 2 latents."""
        if activation not in LATENT_ACTIVATIONS:
            raise ValueError(f"unknown latent activation {activation!r}; one of {LATENT_ACTIVATIONS}")
        labels = labels.to(latents.device)
        means, trils, shrinkages, zeros = [], [], [], []
        for c in range(num_classes):
            members = latents[labels == c]
            if len(members) < 2:
                raise ValueError(f"class {c} has {len(members)} latents; a Gaussian needs at least 2")
            mean, cov, shrinkage = ledoit_wolf(members)
            means.append(mean)
            trils.append(_cholesky(cov))
            shrinkages.append(shrinkage)
            zeros.append((members == 0).double().mean(0))
        return cls(
            means=torch.stack(means),
            scale_tril=torch.stack(trils),
            shrinkage=torch.tensor(shrinkages, dtype=torch.float64),
            zero_share=torch.stack(zeros) if activation == "relu" else None,
            activation=activation,
        )

    @property
    def covariances(self) -> torch.Tensor:
        return self.scale_tril @ self.scale_tril.transpose(1, 2)

    def sample(self, classes: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One latent (float32, on the fit's device) for each entry of the (M,) class tensor `classes`.

        `generator` is a seeded CPU `torch.Generator`; the noise comes from it alone.
        """
        device = self.means.device
        classes = classes.to(device=device, dtype=torch.int64)
        noise = torch.randn(len(classes), self.means.shape[1], generator=generator, dtype=torch.float64).to(device)
        x = torch.empty_like(noise)
        for c in classes.unique().tolist():  # one (n_c, p) x (p, p) product per class, no (M, p, p) gather
            rows = classes == c
            x[rows] = self.means[c] + noise[rows] @ self.scale_tril[c].T
        if self.zero_share is not None:
            # Zero below the unit's observed zero-share quantile of its own marginal (see the module doc).
            sd = self.scale_tril.pow(2).sum(2).sqrt()[classes]  # sqrt(diag(L L^T))
            cut = self.means[classes] + sd * torch.special.ndtri(self.zero_share[classes])
            x = torch.where(x < cut.clamp_min(0.0), torch.zeros_like(x), x)
        return to_domain(x, self.activation).float()

    def state(self) -> dict[str, Any]:
        """A checkpoint dict (CPU tensors and plain values), loadable with `torch.load(weights_only=True)`."""
        return {
            "format": GAUSSIAN_FORMAT,
            "means": self.means.cpu(),
            "scale_tril": self.scale_tril.cpu(),
            "shrinkage": self.shrinkage.cpu(),
            "zero_share": None if self.zero_share is None else self.zero_share.cpu(),
            "activation": self.activation,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], device: torch.device | str = "cpu") -> ClassGaussians:
        if state.get("format") != GAUSSIAN_FORMAT:
            raise ValueError(f"not a class-Gaussians checkpoint (format={state.get('format')!r})")
        zero = state["zero_share"]
        return cls(
            means=state["means"].to(device),
            scale_tril=state["scale_tril"].to(device),
            shrinkage=state["shrinkage"],
            zero_share=None if zero is None else zero.to(device),
            activation=state["activation"],
        )
