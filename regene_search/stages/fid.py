"""Fréchet distance between feature sets, and Inception-v3 pool features from a local weights file.

FID = |mu1 - mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^(1/2)) between Gaussians fitted to two
feature sets. Tr((S1 S2)^(1/2)) is computed as the sum of square roots of the eigenvalues of
the symmetric PSD matrix S1^(1/2) S2 S1^(1/2) (same spectrum as S1 S2), which stays real and
stable where `scipy.linalg.sqrtm` of the non-symmetric S1 S2 can return complex noise.

Inception FID is comparable to published numbers only with the standard weights and the same
preprocessing; the weights cannot be downloaded here, so they come from `--inception-weights`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from ..errors import UserError
from ..runtime import concat, infer, on_device, to_float
from ..weights import load_state_dict_file

INCEPTION_SIZE = 299
INCEPTION_BATCH = 32


def _as_features(features: np.ndarray | torch.Tensor) -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need (N, D) features with N >= 2, got shape {x.shape}")
    return x


def feature_stats(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of (N, D) features, in float64."""
    x = _as_features(features)
    return x.mean(0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    root1 = _psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(max(0.0, diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt))


def fid(features_a: np.ndarray | torch.Tensor, features_b: np.ndarray | torch.Tensor) -> float:
    """Fréchet distance between the Gaussians fitted to two (N, D) feature sets."""
    a, b = _as_features(features_a), _as_features(features_b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} vs {b.shape[1]}")
    if min(len(a), len(b)) >= a.shape[1]:
        return frechet_distance(*feature_stats(a), *feature_stats(b))
    # Fewer samples than dimensions (e.g. a few hundred 2048-d Inception features): with centred
    # X1, X2, the nonzero eigenvalues of S1 S2 are the squared singular values of X1 X2^T / sqrt(c),
    # c = (N1 - 1)(N2 - 1), so Tr((S1 S2)^(1/2)) is a nuclear norm and no D x D matrix is needed.
    xa, xb = a - a.mean(0), b - b.mean(0)
    trace_sqrt = np.linalg.svd(xa @ xb.T, compute_uv=False).sum() / np.sqrt((len(a) - 1) * (len(b) - 1))
    diff = a.mean(0) - b.mean(0)
    traces = (xa**2).sum() / (len(a) - 1) + (xb**2).sum() / (len(b) - 1)
    return float(max(0.0, diff @ diff + traces - 2.0 * trace_sqrt))


def load_inception(path: str | Path) -> nn.Module:
    """torchvision Inception-v3 with the weights in `path` and `fc` replaced by Identity (2048-d).

    Accepts torchvision's `inception_v3_google-*.pth` or any state dict with the same backbone
    keys; `fc.*` and the auxiliary head are not used. A missing, corrupt or mismatched file is a
    `UserError`.
    """
    path = Path(path)
    state = load_state_dict_file(path, "Inception weights")
    model = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    model.AuxLogits = None  # only used in training mode; absent from the features we need
    model.fc = nn.Identity()
    backbone = {k: v for k, v in state.items() if not k.startswith(("fc.", "AuxLogits."))}
    try:
        model.load_state_dict(backbone, strict=True)
    except RuntimeError as exc:
        raise UserError(f"Inception weights file {path} does not fit torchvision's inception_v3 ({_first_line(exc)})") from None
    return model.eval().requires_grad_(False)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def inception_features(model: nn.Module, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """2048-d pool features of uint8 (N, C, H, W) images: grey -> RGB, bilinear to 299 px, [-1, 1]."""
    model = on_device(model, device).eval()

    def forward(batch: torch.Tensor) -> torch.Tensor:
        x = to_float(batch, device)
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
        return model(x * 2.0 - 1.0).float().cpu()

    return concat(infer(forward, images, device=device, batch=INCEPTION_BATCH), torch.zeros(0, 2048))
