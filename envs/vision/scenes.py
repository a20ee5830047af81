"""Task generators: (level, rng) → a scene, the question about it, and the exact answer.

Five task kinds, levels 1-3 each (harder = more objects, distractors, finer distinctions):

| kind     | question                                   | answer            |
|----------|--------------------------------------------|-------------------|
| count    | how many shapes / how many <shape>s        | an integer        |
| identify | colour or shape of the (named) object      | a colour / shape  |
| spatial  | is the A left of / above the B             | yes / no          |
| digits   | the number written (sklearn digit glyphs)  | an integer        |
| chart    | tallest bar / height of bar k              | an integer        |

A scene is a JSON-able dict; `render_scene` draws it (`envs.vision.render`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from PIL import Image

from envs.vision import digits as digit_data
from envs.vision.render import CANVAS, COLORS, SHAPES, render_bars, render_digits, render_shapes

KINDS = ("count", "identify", "spatial", "digits", "chart")
LEVELS = (1, 2, 3)
BASE_COLORS = ("red", "green", "blue", "yellow")


def _place(rng: np.random.Generator, n: int, r_range: tuple[int, int], margin: int = 2) -> list[tuple[int, int, int]]:
    """`n` non-overlapping (x, y, r) boxes inside the canvas (rejection sampling, then restart)."""
    for _ in range(200):
        boxes: list[tuple[int, int, int]] = []
        for _ in range(400):
            if len(boxes) == n:
                return boxes
            r = int(rng.integers(r_range[0], r_range[1] + 1))
            x, y = (int(v) for v in rng.integers(r + 1, CANVAS - r - 1, size=2))
            if all(max(abs(x - bx), abs(y - by)) > r + br + margin for bx, by, br in boxes):
                boxes.append((x, y, r))
        if len(boxes) == n:
            return boxes
    raise RuntimeError(f"could not place {n} shapes")


def _shape(kind: str, color: str, box: tuple[int, int, int]) -> dict:
    x, y, r = box
    return {"kind": kind, "color": color, "x": x, "y": y, "r": r}


def _pick(rng: np.random.Generator, items, k: int = 1) -> list:
    return [items[i] for i in rng.choice(len(items), size=k, replace=False)]


def make_count(level: int, rng: np.random.Generator, **_) -> tuple[dict, str, str]:
    if level < 3:
        n = int(rng.integers(1, 4 if level == 1 else 6))
        kind = _pick(rng, SHAPES)[0]
        colors = [_pick(rng, BASE_COLORS)[0]] * n if level == 1 else [BASE_COLORS[int(i)] for i in rng.integers(len(BASE_COLORS), size=n)]
        shapes = [_shape(kind, c, b) for c, b in zip(colors, _place(rng, n, (3, 5)))]
        return {"shapes": shapes}, "how many shapes?", str(n)
    target, other = _pick(rng, SHAPES, 2)
    n, m = int(rng.integers(1, 5)), int(rng.integers(1, 4))
    kinds = [target] * n + [other] * m
    order = rng.permutation(len(kinds))
    boxes = _place(rng, len(kinds), (3, 5))
    shapes = [_shape(kinds[i], BASE_COLORS[int(rng.integers(len(BASE_COLORS)))], b) for i, b in zip(order, boxes)]
    return {"shapes": shapes}, f"how many {target}s?", str(n)


def make_identify(level: int, rng: np.random.Generator, **_) -> tuple[dict, str, str]:
    n = level
    kinds = _pick(rng, SHAPES, n)
    colors = _pick(rng, list(COLORS) if level == 3 else list(BASE_COLORS), n)
    shapes = [_shape(k, c, b) for k, c, b in zip(kinds, colors, _place(rng, n, (6, 10) if n == 1 else (5, 8)))]
    ask_color = bool(rng.integers(2))
    if level == 1:
        return {"shapes": shapes}, ("what color?" if ask_color else "what shape?"), (colors[0] if ask_color else kinds[0])
    i = int(rng.integers(n))
    if ask_color:
        return {"shapes": shapes}, f"color of the {kinds[i]}?", colors[i]
    return {"shapes": shapes}, f"shape of the {colors[i]} one?", kinds[i]


def make_spatial(level: int, rng: np.random.Generator, **_) -> tuple[dict, str, str]:
    """Two shapes of different kinds; the pair is re-drawn until the relation asked is clear-cut
    (centres at least `gap` pixels apart along its axis): no answer hinges on a pixel."""
    gap = {1: 14, 2: 8, 3: 4}[level]
    axis = "x" if level == 1 or rng.integers(2) == 0 else "y"
    while True:
        a, b = _pick(rng, SHAPES, 2)
        ca, cb = _pick(rng, BASE_COLORS, 2)
        boxes = _place(rng, 2, (4, 7))
        sa, sb = _shape(a, ca, boxes[0]), _shape(b, cb, boxes[1])
        if abs(sa[axis] - sb[axis]) >= gap:
            break
    if axis == "x":
        return {"shapes": [sa, sb]}, f"is the {a} left of the {b}?", "yes" if sa["x"] < sb["x"] else "no"
    return {"shapes": [sa, sb]}, f"is the {a} above the {b}?", "yes" if sa["y"] < sb["y"] else "no"


def make_digits(level: int, rng: np.random.Generator, *, heldout: bool, fraction: float) -> tuple[dict, str, str]:
    """`level` digits side by side (no leading zero), each an sklearn glyph scaled up."""
    train, held = digit_data.pools(fraction)
    pool = held if heldout else train
    values = [int(rng.integers(1 if level > 1 else 0, 10))] + [int(v) for v in rng.integers(0, 10, size=level - 1)]
    glyphs = [int(pool[v][int(rng.integers(len(pool[v])))]) for v in values]
    scale = 2
    x0 = int(rng.integers(0, CANVAS - 8 * scale * level + 1))
    y0 = int(rng.integers(0, CANVAS - 8 * scale + 1))
    scene = {"glyphs": glyphs, "x0": x0, "y0": y0, "scale": scale}
    return scene, "what number?", "".join(map(str, values))


def make_chart(level: int, rng: np.random.Generator, **_) -> tuple[dict, str, str]:
    n = {1: 2, 2: 3, 3: 4}[level]
    top = {1: 5, 2: 5, 3: 8}[level]
    unit = 40 // top
    colors = [BASE_COLORS[int(i)] for i in rng.integers(len(BASE_COLORS), size=n)]
    if level == 1:
        heights = [int(h) for h in rng.choice(np.arange(1, top + 1), size=n, replace=False)]  # a unique tallest bar
        scene = {"bars": heights, "colors": colors, "unit": unit}
        return scene, "which bar is tallest?", str(int(np.argmax(heights)) + 1)
    heights = [int(h) for h in rng.integers(1, top + 1, size=n)]
    k = int(rng.integers(n))
    return {"bars": heights, "colors": colors, "unit": unit}, f"height of bar {k + 1}?", str(heights[k])


GENERATORS: dict[str, Callable[..., tuple[dict, str, str]]] = {
    "count": make_count,
    "identify": make_identify,
    "spatial": make_spatial,
    "digits": make_digits,
    "chart": make_chart,
}


def render_scene(scene: dict) -> Image.Image:
    if "shapes" in scene:
        return render_shapes(scene["shapes"])
    if "bars" in scene:
        return render_bars(scene["bars"], scene["colors"], scene["unit"])
    if "glyphs" in scene:
        return render_digits([digit_data.glyph(i) for i in scene["glyphs"]], scene["x0"], scene["y0"], scene["scale"])
    raise ValueError(f"unknown scene {sorted(scene)}")
