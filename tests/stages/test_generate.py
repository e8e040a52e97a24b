"""Convex weights, class thresholds and the two-step filter of the generate stage."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from regene_search.errors import UserError
from regene_search.config import DecoderConfig
from regene_search.generators.lr_livae import split_decoder
from regene_search.stages.decoder import decode_all
from regene_search.stages.generate import (
    GenerateSettings,
    TrainLatents,
    acceptance,
    class_gaussians,
    class_thresholds,
    convex_weights,
    filtered_rows,
    head_logits,
    interpolation_pairs,
    sample_plan,
    sampled_latents,
    true_class_confidence,
    two_step_accept,
    Thresholds,
    holdout_thresholds,
    image_thresholds,
    image_logits,
)
from regene_search.models import load_classifier
from regene_search.runtime import encode_all


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 12),
    count=st.integers(1, 40),
    kind=st.sampled_from(["uniform", "dirichlet"]),
    alpha=st.floats(0.01, 50.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_convex_weights_are_nonnegative_and_sum_to_one(n, count, kind, alpha, seed):
    weights = convex_weights(np.random.default_rng(seed), count, n, kind=kind, alpha=alpha)
    assert weights.shape == (count, n)
    assert np.all(weights >= 0) and np.all(np.isfinite(weights))
    np.testing.assert_allclose(weights.sum(1), 1.0, atol=1e-12)


def test_uniform_weights_are_one_over_n_and_dirichlet_is_seeded():
    np.testing.assert_array_equal(convex_weights(np.random.default_rng(0), 3, 5), np.full((3, 5), 0.2))
    a = convex_weights(np.random.default_rng(4), 6, 3, kind="dirichlet", alpha=0.5)
    b = convex_weights(np.random.default_rng(4), 6, 3, kind="dirichlet", alpha=0.5)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, 1 / 3)


def test_threshold_is_the_mean_holdout_confidence_of_each_class():
    confidence = torch.tensor([0.9, 0.7, 0.6, 1.0, 0.2])
    labels = torch.tensor([0, 0, 1, 1, 1])
    thresholds = class_thresholds(confidence, labels, num_classes=3)
    assert thresholds[:2].tolist() == pytest.approx([0.8, 0.6])
    assert math.isnan(thresholds[2])  # no holdout sample: accepts nothing


def test_true_class_confidence_is_the_softmax_probability_of_the_given_class():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    got = true_class_confidence(logits, torch.tensor([0, 1]))
    assert got.tolist() == pytest.approx([math.exp(2) / (math.exp(2) + 1), 0.5])


def test_accepted_iff_both_confidences_reach_the_class_threshold():
    latent = torch.tensor([0.95, 0.95, 0.50, 0.80, 0.80, 0.99])
    image = torch.tensor([0.95, 0.50, 0.95, 0.80, 0.79, 0.99])
    threshold = torch.tensor([0.9, 0.9, 0.9, 0.8, 0.8, float("nan")])
    assert two_step_accept(latent, image, threshold).tolist() == [True, False, False, True, False, False]
    # The image step held to its own threshold (the reconstructions'), the latent step to the holdout's.
    image_threshold = torch.tensor([0.9, 0.4, 0.9, 0.8, 0.7, 0.5])
    assert two_step_accept(latent, image, threshold, image_threshold).tolist() == [True, True, False, True, True, False]


def test_image_thresholds_are_the_mean_confidence_on_the_decoders_reconstructions(mnist_2k, encoder_checkpoint):
    cpu = torch.device("cpu")
    classifier = load_classifier(encoder_checkpoint)
    ctx = SimpleNamespace(data=mnist_2k, console=Console(quiet=True))
    settings = GenerateSettings()
    holdout = holdout_thresholds(ctx, classifier, settings, cpu)
    real = true_class_confidence(image_logits(classifier, mnist_2k.val_x, cpu), mnist_2k.val_y)
    torch.testing.assert_close(holdout.latent, class_thresholds(real, mnist_2k.val_y, 10))
    torch.testing.assert_close(holdout.image, holdout.latent)
    # A perfect decoder's reconstructions are the holdout images: the image step keeps the paper's threshold.
    perfect = image_thresholds(ctx, classifier, settings, holdout, lambda: mnist_2k.val_x, cpu)
    torch.testing.assert_close(perfect.image, holdout.latent)
    torch.testing.assert_close(perfect.latent, holdout.latent)
    # A blurrier decoder lowers the bar of the image step only, class by class.
    blurred = torch.nn.functional.avg_pool2d(mnist_2k.val_x.float(), 3, stride=1, padding=1).round().to(torch.uint8)
    blurry = image_thresholds(ctx, classifier, settings, holdout, lambda: blurred, cpu)
    expected = class_thresholds(true_class_confidence(image_logits(classifier, blurred, cpu), mnist_2k.val_y), mnist_2k.val_y, 10)
    torch.testing.assert_close(blurry.image, expected)
    torch.testing.assert_close(blurry.latent, holdout.latent)
    assert (blurry.image < holdout.image).sum() >= 8
    # The paper's rule, or a fixed threshold: the reconstructions are not even made.
    def never() -> torch.Tensor:
        raise AssertionError("reconstructed although the rule does not use reconstructions")
    assert image_thresholds(ctx, classifier, GenerateSettings(image_threshold="holdout"), holdout, never, cpu) is holdout
    fixed = holdout_thresholds(ctx, classifier, GenerateSettings(threshold=0.7), cpu)
    assert image_thresholds(ctx, classifier, GenerateSettings(threshold=0.7), fixed, never, cpu) is fixed and fixed.image.tolist() == [0.7] * 10
    # A floor raises the image step's thresholds below it and leaves the rest, under either rule.
    floor = float(blurry.image.median())
    raised = image_thresholds(ctx, classifier, GenerateSettings(min_image_confidence=floor), holdout, lambda: blurred, cpu)
    torch.testing.assert_close(raised.image, expected.clamp(min=floor))
    torch.testing.assert_close(raised.latent, holdout.latent)
    assert (raised.image > expected).sum() >= 4 and (raised.image == expected).sum() >= 5
    paper_raised = image_thresholds(ctx, classifier, GenerateSettings(image_threshold="holdout", min_image_confidence=0.999), holdout, never, cpu)
    torch.testing.assert_close(paper_raised.image, holdout.image.clamp(min=0.999))


def test_acceptance_rates_per_n_and_class():
    rows = [{"n": n, "class": c, "accepted": ok} for n, c, ok in [(2, 0, True), (2, 0, False), (2, 1, True), (3, 0, False)]]
    rates = acceptance(rows)
    assert rates["generated"] == 4 and rates["accepted"] == 2 and rates["accept_rate"] == 0.5
    assert rates["accept_rate_by_n"] == {"2": pytest.approx(2 / 3), "3": 0.0}
    assert rates["accept_rate_by_n_class"]["2"] == {"0": 0.5, "1": 1.0}
    assert rates["accept_rate_by_n_class"]["3"] == {"0": 0.0, "1": None}


@pytest.mark.parametrize(
    "kwargs, message",
    [({"ns": (1, 2)}, ">= 2"), ({"weights": "softmax"}, "uniform, dirichlet"), ({"dirichlet_alpha": 0.0}, "alpha"), ({"threshold": 1.5}, r"\[0, 1\]"),
     ({"image_threshold": "real"}, "reconstructions, holdout"), ({"min_image_confidence": -0.1}, r"min image confidence must be in \[0, 1\]")],
)
def test_bad_generate_settings_are_user_errors(kwargs, message):
    with pytest.raises(UserError, match=message):
        GenerateSettings(**kwargs)


def test_plan_draws_distinct_same_class_sources_reproducibly(mnist_2k):
    ctx = SimpleNamespace(data=mnist_2k, console=Console(quiet=True))
    settings = GenerateSettings(ns=(2, 5), per_class=7, weights="dirichlet", seed=5)
    plan = sample_plan(ctx, settings)
    assert sorted(plan) == [(c, n) for c in range(10) for n in (2, 5)]
    for (c, n), (sources, weights) in plan.items():
        assert sources.shape == weights.shape == (7, n)
        assert all(len(set(row)) == n for row in sources.tolist())
        assert (mnist_2k.train_y[torch.from_numpy(sources)] == c).all()
    again = sample_plan(ctx, settings)
    assert all(np.array_equal(plan[k][0], again[k][0]) and np.array_equal(plan[k][1], again[k][1]) for k in plan)
    pairs = interpolation_pairs(ctx, seed=5)
    assert all(a != b and mnist_2k.train_y[a] == mnist_2k.train_y[b] == c for c, (a, b) in pairs.items())


def test_train_latents_encode_only_the_used_images_and_match_the_full_encoding(mnist_2k, encoder_checkpoint):
    classifier = load_classifier(encoder_checkpoint)
    indices = np.array([[5, 17], [17, 3], [900, 5]])
    latents = TrainLatents(classifier, mnist_2k.train_x, indices, torch.device("cpu"))
    assert latents.latents.shape[0] == 4
    full = encode_all(classifier, mnist_2k.train_x[:901], torch.device("cpu"))
    torch.testing.assert_close(latents[indices], full[torch.from_numpy(indices)], atol=1e-5, rtol=1e-5)


def test_lr_livae_draws_z_s_from_the_class_gaussians_and_z_u_from_the_prior_and_decodes_both(mnist_2k, encoder_checkpoint):
    cpu = torch.device("cpu")
    classifier = load_classifier(encoder_checkpoint)
    ctx = SimpleNamespace(data=mnist_2k, console=Console(quiet=True))
    settings = GenerateSettings(ns=(2, 3), per_class=20, strategies=("gaussian", "lr-livae"), seed=2)
    gaussians = class_gaussians(ctx, classifier, cpu)
    z_s, classes, codes = sampled_latents("lr-livae", gaussians, ctx, settings, None, 8, cpu)
    assert classes.tolist() == [c for c in range(10) for _ in range(40)]
    assert codes.shape == (400, 64 + 8) and torch.equal(codes[:, :64], z_s)
    z_u = codes[:, 64:]
    torch.testing.assert_close(z_u.mean(0), torch.zeros(8), atol=0.2, rtol=0)
    torch.testing.assert_close(z_u.std(0), torch.ones(8), atol=0.15, rtol=0)
    # z_s is a draw of the class's Gaussian: the head reads the class from most of them.
    assert float((head_logits(classifier, z_s, cpu).argmax(1) == classes).float().mean()) > 0.8
    again = sampled_latents("lr-livae", gaussians, ctx, settings, None, 8, cpu)
    assert torch.equal(again[2], codes)  # seeded
    assert not torch.equal(sampled_latents("gaussian", gaussians, ctx, settings, None, 0, cpu)[0], z_s)  # its own draws

    # The filter: the head judges z_s, the decoder decodes [z_s, z_u].
    torch.manual_seed(0)
    decoder = split_decoder(DecoderConfig(image_size=28, channels=1, latent_dim=64, base_width=8), z_s.mean(0), z_s.std(0).clamp_min(1e-6), 8).eval()
    thresholds = Thresholds(latent=torch.full((10,), 0.5, dtype=torch.float64), image=torch.full((10,), 0.25, dtype=torch.float64))
    rows, images = filtered_rows(ctx, "t", "lr-livae", classifier, decoder, z_s[:30], classes[:30], thresholds, cpu, codes=codes[:30])
    assert {(r["threshold"], r["image_threshold"]) for r in rows} == {(0.5, 0.25)}
    assert [r["accepted"] for r in rows] == [r["latent_confidence"] >= 0.5 and r["image_confidence"] >= 0.25 for r in rows]
    assert torch.equal(images, decode_all(decoder, codes[:30], cpu))
    latent_conf = true_class_confidence(head_logits(classifier, z_s[:30], cpu), classes[:30])
    assert [r["latent_confidence"] for r in rows] == pytest.approx(latent_conf.tolist())
    assert all(r["strategy"] == "lr-livae" and r["n"] is None and r["source_indices"] is None for r in rows)
