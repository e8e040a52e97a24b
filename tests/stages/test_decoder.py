"""Decoder loss schedule, perceptual backbones and a short training run on real MNIST."""

from __future__ import annotations

import dataclasses
import io
from types import SimpleNamespace

import pytest
import torch
import torchvision
from PIL import Image

from regene_search.errors import UserError
from regene_search.generators.lr_livae import KL_BETA, U_DIM, NuisanceEncoder, posterior_means
from regene_search.config import EncoderConfig
from regene_search.stages.decoder import (
    DecoderTraining,
    decode_all,
    decoder_images,
    decoder_kinds,
    load_decoder,
    perceptual_backbone,
    reconstruction_quality,
    reconstruction_sample,
    train_decoder,
    write_reconstructions,
)
from regene_search.stages.losses import (
    NEUTRAL_BACKBONE,
    VGG_BACKBONE,
    LossSchedule,
    build_taps,
    load_vgg_state,
    perceptual_loss,
    reconstruction_loss,
    ssim_loss,
    ssim_window,
)
from regene_search.stages.neutral import RECIPES, NeutralConfig, NeutralResNet, train_neutral
from regene_search.models import load_classifier
from regene_search.runtime import encode_all
from regene_search.storage import Location


def test_schedule_starts_high_decays_to_the_end_values_and_keeps_mae_constant():
    schedule = LossSchedule(mae=1.0, ssim_start=1.0, ssim_end=0.1, perceptual_start=0.8, perceptual_end=0.0)
    weights = [schedule.weights(epoch, 6) for epoch in range(1, 7)]
    assert weights[0] == (1.0, 1.0, 0.8)
    assert weights[-1] == pytest.approx((1.0, 0.1, 0.0))
    assert all(w[0] == 1.0 for w in weights)
    for earlier, later in zip(weights, weights[1:]):
        assert later[1] < earlier[1] and later[2] < earlier[2]
    assert schedule.weights(1, 1) == (1.0, 1.0, 0.8)


def test_ssim_window_by_resolution_and_ssim_loss_of_identical_images_is_zero():
    assert (ssim_window(28), ssim_window(32), ssim_window(64)) == (7, 7, 11)
    x = torch.rand(4, 1, 28, 28)
    assert float(ssim_loss(x, x)) == pytest.approx(0.0, abs=1e-5)
    assert float(ssim_loss(x, torch.rand(4, 1, 28, 28))) > 0.5


def _vgg_features_file(tmp_path):
    """torchvision's own VGG16 feature layers, randomly initialised, saved as a `features.*` state dict."""
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    path = tmp_path / "vgg16-features.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return path, features


def test_vgg_weights_load_into_torchvision_layout_and_tap_relu_layers(tmp_path):
    path, features = _vgg_features_file(tmp_path)
    taps = build_taps({"name": VGG_BACKBONE, "state": load_vgg_state(path)})
    images = torch.rand(2, 1, 28, 28)
    got = taps(images)
    assert [t.shape[1:] for t in got] == [(64, 28, 28), (128, 14, 14), (256, 7, 7)]
    # The relu3_3 tap equals torchvision's own layers 0..15 on the same normalised input.
    normalised = (images.expand(-1, 3, -1, -1) - taps.mean) / taps.std
    torch.testing.assert_close(got[-1], features[:16](normalised))
    assert float(perceptual_loss(taps, images, images)) == pytest.approx(0.0, abs=1e-6)
    assert float(perceptual_loss(taps, images, torch.rand(2, 1, 28, 28))) > 0


@pytest.mark.parametrize(
    "content, message",
    [(b"not a torch file", "not a loadable state dict"), (None, "does not exist"), ({"features.0.weight": torch.zeros(3)}, "lacks features.0.weight")],
)
def test_bad_vgg_weights_are_a_user_error(tmp_path, content, message):
    path = tmp_path / "vgg.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(UserError, match=message):
        load_vgg_state(path)


def test_backbone_is_vgg_when_weights_are_given(tmp_path):
    path, _ = _vgg_features_file(tmp_path)
    ctx = SimpleNamespace(spec=SimpleNamespace(vgg_weights=str(path)))
    backbone, source = perceptual_backbone(ctx)
    assert backbone["name"] == VGG_BACKBONE and source == str(path)


def test_neutral_resnet_shapes_and_depth_validation():
    model = NeutralResNet(NeutralConfig(image_size=28, channels=1, num_classes=10, depth=8))
    x = torch.rand(3, 1, 28, 28)
    assert [f.shape[1:] for f in model.feature_maps(x)] == [(16, 28, 28), (32, 14, 14)]
    assert model.features(x).shape == (3, 64) and model(x).shape == (3, 10)
    with pytest.raises(UserError, match="6k"):
        NeutralConfig(image_size=28, channels=1, num_classes=10, depth=10)


def test_decoder_loss_decreases_on_a_few_hundred_mnist_images(mnist_2k, encoder_checkpoint, cpu_threads, tmp_path):
    data = mnist_2k.subset(train=256, val=128, seed=1)
    neutral = train_neutral(data, NeutralConfig(28, 1, 10, depth=8), dataclasses.replace(RECIPES["quick"], epochs=1))
    training = DecoderTraining(epochs=4, batch_size=32, lr=3e-3)
    checkpoint, rows = train_decoder(data, "t1", encoder_checkpoint, training, {"name": NEUTRAL_BACKBONE, "state": neutral})
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["loss_mae"] < rows[0]["loss_mae"] and rows[-1]["loss_ssim"] < rows[0]["loss_ssim"]
    assert rows[-1]["val_mae"] < rows[0]["val_mae"]
    assert {r["perceptual_backbone"] for r in rows} == {NEUTRAL_BACKBONE}

    # The checkpoint loads with weights_only and decodes the same as in training.
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    decoder = load_decoder(torch.load(buffer, weights_only=True))
    latents = encode_all(load_classifier(encoder_checkpoint), data.val_x[:8], torch.device("cpu"))
    images = decode_all(decoder, latents, torch.device("cpu"))
    assert images.dtype == torch.uint8 and images.shape == (8, 1, 28, 28)
    assert checkpoint["encoder_trial_id"] == "t1" and checkpoint["decoder_config"]["base_width"] == 16

    # figures/TRIAL/reconstructions.png: a test image of each class (top row) above its reconstruction.
    path = Location.of(tmp_path / "reconstructions.png")
    write_reconstructions(data, encoder_checkpoint, torch.load(io.BytesIO(buffer.getvalue()), weights_only=True), path)
    with Image.open(io.BytesIO(path.read_bytes())) as picture:
        assert picture.format == "PNG" and picture.height == 2 + 2 * (56 + 2) and picture.width > 10 * (56 + 2)
        picture = picture.convert("L")
        first = picture.width - 10 * (56 + 2)  # ten 28 px images at scale 2, 2 px apart, labels to their left
        shown = torch.tensor([[picture.getpixel((first + 2 * x, 2 + 2 * y)) for x in range(28)] for y in range(28)], dtype=torch.uint8)
    assert torch.equal(shown, data.test_x[reconstruction_sample(data.test_y, 10)[0], 0])


def test_a_semi_supervised_run_trains_its_decoders_on_every_training_image(mnist_2k):
    semi = mnist_2k.with_labelled_fraction(0.1, seed=0)
    assert len(semi.train_x) == 200
    images = decoder_images(semi)
    assert len(images) == len(mnist_2k.train_x) == 2000
    assert torch.equal(images.sort(0).values, mnist_2k.train_x.sort(0).values)  # the same images, labelled or not
    assert decoder_images(mnist_2k) is mnist_2k.train_x  # a fully labelled run: no copy


class _Taps(torch.nn.Module):
    """Two fixed 'feature maps': the images themselves and the images times a channel of constants."""

    def forward(self, images):
        return [images.repeat(1, 3, 1, 1), torch.cat([images, torch.ones_like(images)], 1)]


def test_the_perceptual_loss_compares_unit_length_features_and_ignores_their_scale():
    taps = _Taps()
    images = torch.rand(4, 1, 6, 6) + 0.1
    assert float(perceptual_loss(taps, images, images)) == pytest.approx(0.0, abs=1e-6)
    scale_only = lambda x: [x.repeat(1, 3, 1, 1)]  # noqa: E731 - features proportional to the image
    assert float(perceptual_loss(scale_only, images, 5 * images)) == pytest.approx(0.0, abs=1e-6)  # a larger scale, the same direction
    # By hand: tap 1 is the same direction everywhere (0); tap 2 compares (x, 1) / |(x, 1)| at each position.
    other = torch.rand(4, 1, 6, 6) + 0.1
    unit = lambda x: torch.cat([x, torch.ones_like(x)], 1) / (x.pow(2) + 1).sqrt()  # noqa: E731
    by_hand = (unit(images) - unit(other)).pow(2).sum(1).mean() / 2
    assert float(perceptual_loss(taps, images, other)) == pytest.approx(float(by_hand), rel=1e-5)
    assert 0 <= float(perceptual_loss(taps, images, -images)) <= 4


def test_reconstruction_sample_takes_the_classes_in_turn():
    assert reconstruction_sample(torch.tensor([1, 1, 0, 2, 0]), 4).tolist() == [2, 0, 3, 4]
    assert reconstruction_sample(torch.tensor([1, 1, 0]), 8).tolist() == [2, 0, 1]


def test_the_reconstruction_loss_is_the_weighted_sum_of_its_terms_and_skips_an_unweighted_backbone():
    g = torch.Generator().manual_seed(0)
    target, recon = torch.rand(4, 1, 28, 28, generator=g), torch.rand(4, 1, 28, 28, generator=g)
    terms = reconstruction_loss(recon, target, (1.0, 0.5, 0.0), None)
    torch.testing.assert_close(terms["mae"], (recon - target).abs().mean())
    torch.testing.assert_close(terms["ssim"], ssim_loss(recon, target))
    assert float(terms["perceptual"]) == 0.0
    torch.testing.assert_close(terms["total"], terms["mae"] + 0.5 * terms["ssim"])
    with pytest.raises(ValueError, match="taps"):
        reconstruction_loss(recon, target, (1.0, 0.5, 0.1), None)


def test_the_lr_livae_decoder_is_trained_only_when_its_strategy_is_asked_for():
    assert decoder_kinds(("convex", "gaussian", "lsdm")) == ("regene",)
    assert decoder_kinds(("lr-livae",)) == decoder_kinds(("convex", "lr-livae")) == ("regene", "lr-livae")


def test_the_lr_livae_decoder_trains_with_the_same_schedule_plus_the_kl_on_real_mnist(mnist_2k, encoder_checkpoint, cpu_threads, tmp_path):
    data = mnist_2k.subset(train=256, val=128, seed=1)
    # No perceptual term here (the ReGene test above has it; both decoders compute it with the same function).
    training = DecoderTraining(epochs=3, batch_size=32, lr=3e-3, schedule=LossSchedule(perceptual_start=0.0))
    backbone = {"name": VGG_BACKBONE, "state": load_vgg_state(_vgg_features_file(tmp_path)[0])}
    checkpoint, rows = train_decoder(data, "t1", encoder_checkpoint, training, backbone, "lr-livae")
    regene, regene_rows = train_decoder(data, "t1", encoder_checkpoint, training, backbone)
    assert [(r["decoder"], r["epoch"]) for r in rows] == [("lr-livae", e) for e in (1, 2, 3)]
    assert all(r["decoder"] == "regene" and r["loss_kl"] is None and r["w_kl"] is None for r in regene_rows)
    # The same schedule of reconstruction weights, plus the KL at its weight per pixel value.
    assert [(r["w_mae"], r["w_ssim"], r["w_perceptual"]) for r in rows] == [(r["w_mae"], r["w_ssim"], r["w_perceptual"]) for r in regene_rows]
    assert all(r["w_kl"] == pytest.approx(KL_BETA / 784) and r["loss_kl"] > 0 for r in rows)
    for r in rows:
        assert r["loss_total"] == pytest.approx(r["w_mae"] * r["loss_mae"] + r["w_ssim"] * r["loss_ssim"] + r["w_kl"] * r["loss_kl"], rel=1e-5)
    assert rows[-1]["loss_mae"] < rows[0]["loss_mae"] and rows[-1]["val_mae"] < rows[0]["val_mae"]

    # The checkpoint: a decoder on [z_s, z_u] that load_decoder rebuilds, and E_u beside it; it reproduces the last val MAE.
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    state = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    assert state["decoder"] == "lr-livae" and regene["decoder"] == "regene" and state["u_dim"] == U_DIM
    decoder = load_decoder(state)
    assert decoder.decoder.config.latent_dim == regene["decoder_config"]["latent_dim"] + U_DIM
    nuisance = NuisanceEncoder(EncoderConfig(**state["nuisance_encoder_config"]), state["u_dim"])
    nuisance.load_state_dict(state["nuisance_encoder"])
    cpu = torch.device("cpu")
    z_s = encode_all(load_classifier(encoder_checkpoint), data.val_x, cpu)
    codes = torch.cat([z_s, posterior_means(nuisance, data.val_x, cpu)], 1)
    assert reconstruction_quality(decoder, codes, data.val_x, cpu) == pytest.approx((rows[-1]["val_mae"], rows[-1]["val_ssim"]), rel=1e-4)
    # z_u matters to the decoder: other codes give other images.
    shifted = decode_all(decoder, torch.cat([z_s[:8], torch.full((8, U_DIM), 2.0)], 1), cpu)
    assert not torch.equal(shifted, decode_all(decoder, codes[:8], cpu))
