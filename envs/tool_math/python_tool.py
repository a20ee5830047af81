"""The `python` tool: a one-line program run in the sandbox, its output as the observation.

The argument is model-written code, so it runs like every other untrusted program of the project
(`envs.sandbox`): its own process with a scratch directory, no network, rlimits, killed at its
time limit. An expression prints its value (as a REPL would); statements print what they print.
The observation is one line: the output's first `MAX_OUTPUT` characters, or `err <reason>` for a
program that raised (`err ZeroDivisionError`), timed out, ran out of memory or was killed. A tool
error is an observation for the policy; the episode goes on.
"""

from __future__ import annotations

import ast

from envs.sandbox import run_command
from envs.sandbox.runner import PYTHON

MAX_OUTPUT = 40
MAX_CODE = 200


def program(code: str) -> str:
    """The program the sandbox runs for `code`: an expression's value is printed as a REPL
    would (its repr, nothing for None)."""
    try:
        ast.parse(code, mode="eval")
    except SyntaxError:
        return code + "\n"
    return f"_ = ({code})\nif _ is not None:\n    print(repr(_))\n"


def run_python_tool(code: str, *, timeout_s: float = 2.0, memory_mb: int = 256, allow_unisolated: bool = False) -> str:
    if len(code) > MAX_CODE:
        return "err too long"
    # -S: no site-packages (the tool offers the standard library), a third off the start-up time
    argv = [PYTHON, "-I", "-S", "-B", "/work/main.py"]
    result = run_command(argv, files={"main.py": program(code)}, timeout_s=timeout_s, memory_mb=memory_mb, allow_unisolated=allow_unisolated)
    if result.status == "ok":
        return " ".join(result.stdout.split())[:MAX_OUTPUT] or "ok"
    if result.status == "error":
        last = (result.stderr.strip().splitlines() or ["error"])[-1]
        return f"err {last.split(':')[0].strip()[:MAX_OUTPUT]}"
    return f"err {result.status}"
