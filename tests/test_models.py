import pytest
import torch

from regene_search.models import Classifier, Decoder, DecoderConfig, EncoderConfig


@pytest.mark.parametrize("size", [28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("blocks,convs", [(1, 1), (2, 2), (4, 1)])
def test_classifier_and_decoder_shapes(size, channels, blocks, convs):
    config = EncoderConfig(image_size=size, channels=channels, num_classes=7, blocks=blocks, convs_per_block=convs, base_width=8, latent_dim=40)
    model = Classifier(config)
    images = torch.rand(3, channels, size, size)
    z = model.encode(images)
    assert z.shape == (3, 40)
    assert model(images).shape == (3, 7)
    decoder = Decoder(DecoderConfig(image_size=size, channels=channels, latent_dim=40, base_width=8))
    out = decoder(z).detach()
    assert out.shape == images.shape
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "gelu", "tanh", "sigmoid", "identity"])
def test_latent_activation_applies(activation):
    model = Classifier(EncoderConfig(image_size=28, channels=1, num_classes=10, latent_activation=activation, base_width=8, latent_dim=16))
    z = model.encode(torch.rand(4, 1, 28, 28)).detach()
    if activation == "relu":
        assert float(z.min()) >= 0.0
    if activation in ("tanh", "sigmoid"):
        assert float(z.abs().max()) <= 1.0


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"image_size": 30}, "image_size"),
        ({"channels": 2}, "channels"),
        ({"blocks": 6}, "blocks"),
        ({"latent_activation": "swish"}, "latent_activation"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_encoder_config_rejects_bad_values(kwargs, match):
    base = {"image_size": 28, "channels": 1, "num_classes": 10}
    with pytest.raises(ValueError, match=match):
        EncoderConfig(**(base | kwargs))


def test_decoder_upsampling_plan():
    assert DecoderConfig(28, 1, 8).start_size == 7
    assert DecoderConfig(32, 3, 8).start_size == 4
    assert DecoderConfig(64, 3, 8).start_size == 4
