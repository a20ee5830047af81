"""The test harness that runs a candidate solution and its tests inside the sandbox.

Reward hacking we close off here (the sandbox handles escapes; this handles lies):
- a result line only counts with a per-run nonce that the harness reads from stdin and closes
  before the solution runs, so printing a fake "all passed" line does not work, and neither
  does ending the process early (`sys.exit(0)`, `os._exit(0)`: no result line → fail);
- return values must be plain built-in data (exact types, recursively): an object whose
  `__eq__` always says True is rejected instead of passing every `assert f(x) == y`.
The solution and the tests share one interpreter (inside the sandbox); a solution that digs the
nonce out of the harness's frames could still forge a result. We accept that residual risk for
policies of the size trained here and keep the test counting in the verifier's hands.
"""

from __future__ import annotations

import re
import secrets

_TEMPLATE = '''import os, sys

def _swarmrl_run(solution, tests, entry_point):
    nonce = sys.stdin.readline().strip()
    sys.stdin.close()
    out = os.dup(1)
    plain = (int, float, complex, str, bytes, bool, type(None), list, tuple, dict, set, frozenset)

    def check_plain(value, depth=0):
        if type(value) not in plain or depth > 50:
            raise TypeError("result is not plain data: " + type(value).__name__)
        if type(value) in (list, tuple, set, frozenset):
            for item in value:
                check_plain(item, depth + 1)
        elif type(value) is dict:
            for k, v in value.items():
                check_plain(k, depth + 1)
                check_plain(v, depth + 1)
        return value

    ns = {"__name__": "__solution__"}
    try:
        exec(compile(solution, "solution.py", "exec"), ns)
        fn = ns[entry_point]
    except SyntaxError as e:
        os.write(out, ("\\n%s SYNTAX %s\\n" % (nonce, e.msg)).encode())
        return
    except BaseException as e:
        os.write(out, ("\\n%s LOADERR %s\\n" % (nonce, type(e).__name__)).encode())
        return

    def guarded(*args, **kwargs):
        return check_plain(fn(*args, **kwargs))

    passed = 0
    for i, test in enumerate(tests):
        # tests may call helpers the prompt defines (HumanEval's official harness allows it)
        env = dict(ns, __name__="__test__", candidate=guarded)
        env[entry_point] = guarded
        try:
            exec(compile(test, "test_%d.py" % i, "exec"), env)
            passed += 1
        except BaseException:
            pass
    os.write(out, ("\\n%s RESULT %d %d\\n" % (nonce, passed, len(tests))).encode())

_swarmrl_run(__SOLUTION__, __TESTS__, __ENTRY__)
'''


def build_program(solution: str, tests: list[str], entry_point: str) -> str:
    """A Python program that loads `solution`, runs each test (source text) and reports."""
    values = {"SOLUTION": repr(solution), "TESTS": repr(list(tests)), "ENTRY": repr(entry_point)}
    # one pass, so a solution that contains a placeholder's name is not expanded again
    return re.sub(r"__(SOLUTION|TESTS|ENTRY)__", lambda m: values[m.group(1)], _TEMPLATE)


def new_nonce() -> str:
    return secrets.token_hex(16)


def read_report(stdout: str, nonce: str) -> tuple[str, int, int]:
    """("result", passed, total) | ("syntax"|"loaderr"|"missing", 0, 0) from the harness output."""
    found = re.findall(rf"^{re.escape(nonce)} (RESULT (\d+) (\d+)|SYNTAX .*|LOADERR .*)$", stdout, re.M)
    if len(found) != 1:
        return "missing", 0, 0
    line, passed, total = found[0]
    if line.startswith("RESULT"):
        return "result", int(passed), int(total)
    return line.split(" ", 1)[0].lower(), 0, 0
