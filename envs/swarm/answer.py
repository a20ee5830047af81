"""The final answer of a swarm task and its item-level F1 (as in WideSearch).

An answer is `=name value,name value,...`, the last `=` action of the transcript (`envs.actions.final_answer`).
"""

from __future__ import annotations


def format_table(rows: dict[str, int]) -> str:
    return ",".join(f"{name} {value}" for name, value in rows.items())


def parse_table(text: str) -> set[tuple[str, str]]:
    """`kob 42,tam 17` → {(kob, 42), (tam, 17)}; items that are not `name value` are dropped."""
    items = set()
    for item in text.split(","):
        parts = item.split()
        if len(parts) == 2:
            items.add((parts[0], parts[1]))
    return items


def item_f1(predicted: set[tuple[str, str]], gold: set[tuple[str, str]]) -> float:
    """Harmonic mean of item precision and recall; 0 when nothing is right."""
    hits = len(predicted & gold)
    if not hits:
        return 0.0
    precision, recall = hits / len(predicted), hits / len(gold)
    return 2 * precision * recall / (precision + recall)
