"""A dataset small enough that a tiny policy learns it in seconds: "Which is larger: 37 or 52?".

Every ordered pair of distinct two-digit numbers (8010 rows), shuffled with a seed, in the
dataset env's layout: `question`, `answer` (the larger number), and `solution` (`\\boxed{52}`),
the completion SFT teaches. Answering takes copying one of the prompt's numbers, which a
2-layer model picks up within a few hundred SFT steps, and comparing them, which it learns
more slowly: a short bootstrap leaves it right on some held-out pairs and guessing on others,
so RL has a gain to show within a CI test's minutes (`tests/test_learning.py`).
"""

from __future__ import annotations

import random

from envs.dataset.word_problems import Row


def generate(seed: int = 0) -> list[Row]:
    rows: list[Row] = [
        {"question": f"Which is larger: {a} or {b}?", "answer": str(max(a, b)), "solution": f"\\boxed{{{max(a, b)}}}"}
        for a in range(10, 100)
        for b in range(10, 100)
        if a != b
    ]
    random.Random(seed).shuffle(rows)
    return rows
