"""A PNG grid of evaluation images with the question, the model's answer and the right one.

Logged to MLflow at each evaluation of an env with images, so one can see what the policy
sees and what it says (green: passed, red: failed).
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw

from envs.base import Task
from rollout.episode import Episode

CELL, SCALE, TEXT_H, COLS = 48, 3, 52, 4
LINE = 23  # characters of the default bitmap font that fit in a cell's width


def sample_grid(tasks: list[Task], episodes: list[Episode], n: int = 16) -> bytes | None:
    """PNG bytes of up to `n` (task, episode) pairs that carry an image; None when none does."""
    pairs = [(t, e) for t, e in zip(tasks, episodes) if t.images][:n]
    if not pairs:
        return None
    side = CELL * SCALE
    rows = (len(pairs) + COLS - 1) // COLS
    grid = Image.new("RGB", (COLS * side, rows * (side + TEXT_H)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for k, (task, ep) in enumerate(pairs):
        x, y = (k % COLS) * side, (k // COLS) * (side + TEXT_H)
        img = Image.open(io.BytesIO(task.images[0])).convert("RGB").resize((side, side), Image.NEAREST)
        grid.paste(img, (x, y))
        passed = bool(ep.verdict.get("passed"))
        answer = ep.completion_text.strip().replace("\n", " ")[:20] or "(empty)"
        question = textwrap.wrap(task.prompt, LINE)[:2]
        for i, line in enumerate(question):
            draw.text((x + 3, y + side + 2 + 11 * i), line, fill=(0, 0, 0))
        draw.text((x + 3, y + side + 26), f"model: {answer}", fill=(0, 140, 0) if passed else (200, 0, 0))
        draw.text((x + 3, y + side + 38), f"truth: {task.payload.get('answer', '?')}", fill=(90, 90, 90))
        draw.rectangle([x, y, x + side - 1, y + side + TEXT_H - 1], outline=(200, 200, 200))
    buf = io.BytesIO()
    grid.save(buf, format="PNG")
    return buf.getvalue()


def log_sample_grid(tracker, run_dir: Path, tasks: list[Task], episodes: list[Episode], step: int) -> Path | None:
    """Write the grid beside the run and log it as the artifact `samples/eval_step_<step>.png`."""
    png = sample_grid(tasks, episodes)
    if png is None:
        return None
    path = Path(run_dir) / "samples" / f"eval_step_{step:06d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    tracker.log_artifact(path, "samples")
    return path
