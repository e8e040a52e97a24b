"""PNG encoding of single images and the grid/strip figures."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from regene_search.figures import decode_png, encode_png, grid_png, strip_png


@pytest.mark.parametrize("channels", [1, 3])
def test_png_round_trip_is_lossless(channels):
    image = torch.randint(0, 256, (channels, 28, 28), dtype=torch.uint8)
    data = encode_png(image)
    assert data.startswith(b"\x89PNG")
    assert torch.equal(decode_png(data, channels), image)


def test_grid_has_one_cell_per_column_and_row_and_tolerates_short_rows():
    image = torch.full((1, 10, 10), 255, dtype=torch.uint8)
    png = grid_png([[image] * 4, [], [image]], scale=2, pad=2)
    with Image.open(io.BytesIO(png)) as img:
        assert img.size == (2 + 4 * (20 + 2), 2 + 3 * (20 + 2))
        assert img.getpixel((2, 2)) == (255, 255, 255)  # first cell
        assert img.getpixel((2, 2 + 22)) != (255, 255, 255)  # the empty row stays background


def test_labels_widen_the_canvas_and_strips_are_one_row():
    image = torch.zeros((3, 8, 8), dtype=torch.uint8)
    plain = Image.open(io.BytesIO(grid_png([[image]])))
    labelled = Image.open(io.BytesIO(grid_png([[image]], row_labels=["airplane"], column_labels=["x"])))
    assert labelled.size[0] > plain.size[0] and labelled.size[1] > plain.size[1]
    strip = Image.open(io.BytesIO(strip_png([image] * 11, labels=[str(i) for i in range(11)], scale=1)))
    assert strip.size[0] > strip.size[1] * 4


def test_grid_needs_an_image_and_uint8_input():
    with pytest.raises(ValueError, match="at least one image"):
        grid_png([[], []])
    with pytest.raises(ValueError, match="uint8"):
        encode_png(torch.zeros(1, 4, 4))
