"""The tools of the swarm env: `search` over the corpus and a small integer calculator.

Both return short strings (the observation text without its `>` prefix) and never raise.
"""

from __future__ import annotations

import ast
import operator

from envs.swarm.corpus import Corpus

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}
MAX_CALC_CHARS = 32


def search(corpus: Corpus, query: str) -> str:
    """The record of the entity named exactly `query`, else `none`."""
    return corpus.record(query.strip()) or "none"


def calc(expr: str) -> str:
    """Integer +, -, * and parentheses; anything else (or too long) is `err`."""
    if len(expr) > MAX_CALC_CHARS:
        return "err"
    try:
        return str(_eval(ast.parse(expr.strip(), mode="eval").body))
    except (SyntaxError, ValueError, TypeError, RecursionError):
        return "err"


def _eval(node: ast.AST) -> int:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_eval(node.left), _eval(node.right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_eval(node.operand)
    raise ValueError("unsupported expression")
