import torch

from regene_search.augment import augment_batch, random_hflip, random_translate


def test_translate_is_a_per_sample_shift_of_the_reflect_padded_image():
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    gen = torch.Generator().manual_seed(0)
    out = random_translate(images, 2, gen)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2), mode="reflect")
    for i in range(2):
        matches = [
            (dy, dx) for dy in range(5) for dx in range(5) if torch.equal(out[i], padded[i, :, dy : dy + 8, dx : dx + 8])
        ]
        assert matches, "each output image must be a crop of its own padded image"


def test_hflip_flips_some_and_keeps_others():
    images = torch.rand(64, 1, 4, 4)
    out = random_hflip(images, torch.Generator().manual_seed(1))
    flipped = [torch.equal(out[i], images[i].flip(2)) for i in range(64)]
    kept = [torch.equal(out[i], images[i]) for i in range(64)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 10 < sum(flipped) < 54


def test_augment_keeps_shape_and_range():
    images = torch.rand(16, 3, 32, 32)
    out = augment_batch(images, hflip=True, generator=torch.Generator().manual_seed(2))
    assert out.shape == images.shape
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
