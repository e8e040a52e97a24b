"""PNG images: single images as PNG bytes (for Parquet) and labelled grids and strips of images."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = 96  # mid grey: separates cells from both black (MNIST) and white backgrounds
TEXT = 255
FONT_SIZE = 11


def encode_png(image: torch.Tensor) -> bytes:
    """A uint8 (C, H, W) image with C in (1, 3) -> lossless PNG bytes."""
    buffer = io.BytesIO()
    _to_pil(image).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def decode_png(data: bytes, channels: int) -> torch.Tensor:
    """PNG bytes -> a uint8 (channels, H, W) image."""
    with Image.open(io.BytesIO(data)) as img:
        array = np.asarray(img.convert("L" if channels == 1 else "RGB"))
    array = array[None] if channels == 1 else array.transpose(2, 0, 1)
    return torch.from_numpy(array.copy())


def _to_pil(image: torch.Tensor) -> Image.Image:
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"expected a uint8 (C, H, W) image with 1 or 3 channels, got {image.dtype} {tuple(image.shape)}")
    array = image.cpu().numpy()
    return Image.fromarray(array[0], "L") if array.shape[0] == 1 else Image.fromarray(array.transpose(1, 2, 0), "RGB")


def grid_png(
    rows: Sequence[Sequence[torch.Tensor]],
    *,
    row_labels: Sequence[str] | None = None,
    column_labels: Sequence[str] | None = None,
    scale: int = 2,
    pad: int = 2,
) -> bytes:
    """Rows of uint8 (C, H, W) images (rows may be short or empty) -> one RGB PNG.

    Images are enlarged `scale` times (nearest neighbour, so pixels stay visible); missing cells
    are left grey. Optional labels go left of each row and above each column.
    """
    sample = next((img for row in rows for img in row), None)
    if sample is None:
        raise ValueError("grid_png needs at least one image")
    _, height, width = sample.shape
    cell_h, cell_w = height * scale, width * scale
    columns = max(len(row) for row in rows)
    font = ImageFont.load_default(size=FONT_SIZE)
    left = _text_width(row_labels, font) + 2 * pad if row_labels else 0
    top = FONT_SIZE + 2 * pad if column_labels else 0
    canvas = Image.new("RGB", (left + pad + columns * (cell_w + pad), top + pad + len(rows) * (cell_h + pad)), (BACKGROUND,) * 3)
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(rows):
        y = top + pad + r * (cell_h + pad)
        if row_labels:
            draw.text((pad, y + cell_h // 2), row_labels[r], fill=(TEXT,) * 3, font=font, anchor="lm")
        for c, image in enumerate(row):
            cell = _to_pil(image).convert("RGB").resize((cell_w, cell_h), Image.NEAREST)
            canvas.paste(cell, (left + pad + c * (cell_w + pad), y))
    for c, label in enumerate(column_labels or ()):
        draw.text((left + pad + c * (cell_w + pad) + cell_w // 2, pad), label, fill=(TEXT,) * 3, font=font, anchor="mt")
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def strip_png(images: Sequence[torch.Tensor], *, labels: Sequence[str] | None = None, scale: int = 3) -> bytes:
    """One row of images with a caption above each (e.g. an interpolation at ratios 0.1 ... 0.9)."""
    return grid_png([list(images)], column_labels=labels, scale=scale)


def _text_width(labels: Sequence[str], font: ImageFont.ImageFont) -> int:
    return int(max(font.getlength(label) for label in labels)) if labels else 0
