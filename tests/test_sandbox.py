"""The sandbox against hostile programs: isolation, limits, cleanup, throughput."""

from __future__ import annotations

import os
import socket
import tempfile
import time
import warnings
from pathlib import Path

import psutil
import pytest

from envs import sandbox
from envs.sandbox import SandboxPool, SandboxUnavailable, isolation_available, run_python
from envs.sandbox.uids import UID_RANGE


def test_isolation_is_available_here():
    # CI installs bubblewrap (Makefile); without it every test below would be meaningless
    assert isolation_available(), "bwrap missing or not root: install the bubblewrap package"


def test_ok_and_exit_codes():
    r = run_python("import sys; print(input()[::-1]); sys.stderr.write('e')", stdin="abc\n")
    assert (r.status, r.returncode, r.stdout, r.stderr) == ("ok", 0, "cba\n", "e")
    r = run_python("raise SystemExit(3)")
    assert (r.status, r.returncode) == ("error", 3)
    assert run_python("1/0").stderr.rstrip().endswith("ZeroDivisionError: division by zero")


def test_runs_as_unprivileged_uid_in_another_process():
    r = run_python("import os; print(os.getuid(), os.getgid(), os.getpid(), os.getppid())")
    uid, gid, pid, ppid = map(int, r.stdout.split())
    assert uid in UID_RANGE and gid in UID_RANGE and uid != os.getuid()
    assert pid != os.getpid()


def test_no_environment_no_home_no_caller_files(monkeypatch):
    monkeypatch.setenv("SWARMRL_SECRET", "hunter2")
    src = f"""
import os
print(sorted(os.environ))
print(os.path.exists({str(Path.home())!r}), os.path.exists({str(Path(__file__).resolve())!r}), os.path.exists('/work/main.py'))
"""
    r = run_python(src)
    env_line, exists_line = r.stdout.splitlines()
    assert "SWARMRL_SECRET" not in env_line and "hunter2" not in r.stdout
    assert exists_line == "False False True"


def test_no_network_even_loopback():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        r = run_python(f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2); print('connected')")
        assert "connected" not in r.stdout and r.status == "error"
        r = run_python("import socket; socket.getaddrinfo('pypi.org', 443)")
        assert r.status == "error"
    finally:
        server.close()


def test_cannot_write_outside_scratch_and_tmp_is_private():
    marker = Path(tempfile.gettempdir()) / f"swarmrl-escape-{os.getpid()}"
    src = f"""
import os
for path in ['/usr/evil', '/etc/evil', '/evil']:
    try:
        open(path, 'w').write('x'); print('wrote', path)
    except OSError as e:
        print('denied', path)
open({str(marker)!r}, 'w').write('x')  # private /tmp: lands in the sandbox's own tmpfs
open('/work/ok.txt', 'w').write('x'); print('scratch ok')
"""
    r = run_python(src)
    assert "wrote" not in r.stdout and r.stdout.count("denied") == 3 and "scratch ok" in r.stdout
    assert not marker.exists()


def test_scratch_dirs_are_removed():
    before = set(Path(tempfile.gettempdir()).glob("swarmrl-sbx-*"))
    run_python("open('/work/big.bin','wb').write(b'0'*1000)")
    assert set(Path(tempfile.gettempdir()).glob("swarmrl-sbx-*")) == before


def test_wall_timeout_kills_detached_children():
    src = """
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        while True: time.sleep(0.05)
    os._exit(0)
while True: time.sleep(0.05)
"""
    t0 = time.monotonic()
    r = run_python(src, timeout_s=1.0)
    assert r.status == "timeout" and time.monotonic() - t0 < 4
    time.sleep(0.5)
    # dead-but-unreaped entries (zombies) are not running code; anything else is a leak
    leftovers = [
        p for p in psutil.process_iter(["uids", "status"]) if p.info["uids"] and p.info["uids"].real in UID_RANGE and p.info["status"] != psutil.STATUS_ZOMBIE
    ]
    assert leftovers == []


def test_cpu_limit_and_memory_limit():
    assert run_python("while True: pass", timeout_s=1.0).status == "timeout"
    r = run_python("x = bytearray(600 * 2**20)", memory_mb=256)
    assert r.status == "memory"
    assert run_python("x = bytearray(50 * 2**20); print(len(x))", memory_mb=256).status == "ok"


def test_output_flood_returns_promptly_truncated():
    t0 = time.monotonic()
    r = run_python("import sys\nwhile True: sys.stdout.write('x' * 65536)", timeout_s=20)
    assert time.monotonic() - t0 < 10
    assert r.truncated and r.status == "killed" and len(r.stdout) <= sandbox.runner.OUTPUT_LIMIT


def test_file_size_and_fork_bomb_are_bounded():
    r = run_python("open('/work/f', 'wb').write(b'0' * (64 * 2**20))")
    assert r.status in ("error", "killed")
    t0 = time.monotonic()
    r = run_python("import os\nwhile True:\n    try: os.fork()\n    except OSError: pass", timeout_s=2.0)
    assert r.status in ("timeout", "killed") and time.monotonic() - t0 < 8
    time.sleep(0.5)
    assert run_python("print('alive')").stdout == "alive\n"


def test_refuses_without_isolation_unless_allowed(monkeypatch):
    monkeypatch.setattr(sandbox.runner, "isolation_available", lambda: False)
    with pytest.raises(SandboxUnavailable, match="allow_unisolated"):
        run_python("print(1)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = run_python("print(1)", allow_unisolated=True)
    assert r.stdout == "1\n" and not r.isolated
    assert any("WITHOUT isolation" in str(w.message) for w in caught)


def test_pool_runs_many_back_to_back_without_fork_failures():
    with SandboxPool(workers=4) as pool:
        results = pool.map_python([f"print({i} * 2)" for i in range(120)])
    assert [r.status for r in results] == ["ok"] * 120
    assert [int(r.stdout) for r in results] == [i * 2 for i in range(120)]
    with pytest.raises(ValueError):
        SandboxPool(workers=len(UID_RANGE) + 1)


def test_killing_the_parent_and_segfault_are_contained():
    r = run_python("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(1, signal.SIGKILL)\nprint('still here')")
    assert os.getpid() > 0  # we are alive; the program only sees its own PID namespace
    assert r.status in ("ok", "error", "killed")
    r = run_python("import ctypes; ctypes.string_at(0)")
    assert r.status == "killed" and r.returncode != 0


def test_reading_callers_home_fails():
    secret = Path.home() / ".swarmrl-sandbox-test-secret"
    secret.write_text("hunter2")
    try:
        r = run_python(f"print(open({str(secret)!r}).read())")
        assert "hunter2" not in r.stdout and r.status == "error"
    finally:
        secret.unlink()
