"""Scenes → images. A scene is a plain dict (JSON-able); rendering is a pure function of it.

Everything is drawn without anti-aliasing on a small RGB canvas, so the same scene gives the
same pixels, and the same PNG bytes, on every machine and in every process.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

CANVAS = 48
BACKGROUND = (255, 255, 255)
COLORS = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (40, 60, 220),
    "yellow": (230, 200, 20),
    "purple": (140, 40, 170),
    "orange": (245, 130, 20),
}
SHAPES = ("circle", "square", "triangle")


def draw_shape(draw: ImageDraw.ImageDraw, kind: str, color: str, x: int, y: int, r: int) -> None:
    """A filled shape of half-size `r` centred on (x, y)."""
    fill = COLORS[color]
    if kind == "circle":
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
    elif kind == "square":
        draw.rectangle([x - r, y - r, x + r, y + r], fill=fill)
    elif kind == "triangle":
        draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=fill)
    else:
        raise ValueError(f"unknown shape {kind!r}")


def render_shapes(shapes: list[dict]) -> Image.Image:
    img = Image.new("RGB", (CANVAS, CANVAS), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for s in shapes:
        draw_shape(draw, s["kind"], s["color"], s["x"], s["y"], s["r"])
    return img


def render_bars(heights: list[int], colors: list[str], unit: int) -> Image.Image:
    """A bar chart: bars standing on an x axis, a y axis with one tick per `unit` pixels."""
    img = Image.new("RGB", (CANVAS, CANVAS), BACKGROUND)
    draw = ImageDraw.Draw(img)
    base, left = CANVAS - 4, 4
    draw.line([(left, base), (CANVAS - 2, base)], fill=(0, 0, 0))
    draw.line([(left, 2), (left, base)], fill=(0, 0, 0))
    for k in range(1, (base - 2) // unit + 1):  # ticks: the scale the heights are read against
        draw.line([(left - 2, base - k * unit), (left, base - k * unit)], fill=(0, 0, 0))
    width = (CANVAS - left - 4) // len(heights)
    for i, (h, c) in enumerate(zip(heights, colors)):
        x0 = left + 2 + i * width
        draw.rectangle([x0, base - h * unit, x0 + width - 3, base - 1], fill=COLORS[c])
    return img


def render_digits(glyphs: list[np.ndarray], x0: int, y0: int, scale: int) -> Image.Image:
    """8x8 digit bitmaps (sklearn's, values 0-16, ink high) side by side, dark ink on white."""
    canvas = np.full((CANVAS, CANVAS), 255, dtype=np.uint8)
    size = 8 * scale
    for i, g in enumerate(glyphs):
        tile = np.kron(np.asarray(g, dtype=np.float64), np.ones((scale, scale)))  # [8s, 8s]
        tile = (255 - tile * (255 / 16)).round().astype(np.uint8)
        canvas[y0 : y0 + size, x0 + i * size : x0 + (i + 1) * size] = tile
    return Image.fromarray(canvas).convert("RGB")


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def decode_png(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")
