"""A generated corpus of fictional entities, each with a few two-digit attributes.

Names are consonant-vowel-consonant pseudo-words (`kob`, `tam`), so one entity is three
characters for the character-level policies. The corpus is a pure function of its seed.
"""

from __future__ import annotations

import numpy as np

CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"
ATTRIBUTES = ("age", "pin")


def all_names() -> list[str]:
    return [a + b + c for a in CONSONANTS for b in VOWELS for c in CONSONANTS]


class Corpus:
    """`size` entities drawn from all CVC names; `facts[name][attr]` is an int in [10, 99]."""

    def __init__(self, size: int = 600, seed: int = 0):
        names = all_names()
        if not 1 <= size <= len(names):
            raise ValueError(f"corpus size must be in [1, {len(names)}], got {size}")
        rng = np.random.default_rng(seed)
        picked = sorted(rng.choice(len(names), size=size, replace=False).tolist())
        self.names = [names[i] for i in picked]
        self.facts = {n: {a: int(rng.integers(10, 100)) for a in ATTRIBUTES} for n in self.names}

    def record(self, name: str) -> str | None:
        """The document of `name` (`age 42 pin 17`), or None when there is none."""
        facts = self.facts.get(name)
        return None if facts is None else " ".join(f"{a} {v}" for a, v in facts.items())
