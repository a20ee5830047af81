"""Run untrusted code in a separate, isolated process.

Every execution: its own scratch directory (removed afterwards), its own unprivileged uid from a
rotating range, rlimits (CPU seconds, address space, file size, open files, processes, no core
files), and `bwrap` with every namespace unshared: no network (not even loopback), a read-only
/usr, a private /tmp, no view of the caller's home, files or environment variables. A wall-clock
timeout kills bwrap; since the program is in bwrap's PID namespace, the kernel then kills every
process in it, including children that started their own session. Output is read with a cap:
a program that prints without end is killed when the cap is reached.
"""

from __future__ import annotations

import math
import os
import resource
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

from envs.sandbox.result import SandboxResult
from envs.sandbox.uids import next_uid

PYTHON = "/usr/bin/python3"
OUTPUT_LIMIT = 1 << 20  # bytes per stream


class SandboxUnavailable(RuntimeError):
    """Isolation (bwrap + uid switching) is not available and unisolated runs were not allowed."""


def isolation_available() -> bool:
    return shutil.which("bwrap") is not None and os.geteuid() == 0


def _bwrap_argv(scratch: Path, binds: list[tuple[str, str]]) -> list[str]:
    argv = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--clearenv", "--ro-bind", "/usr", "/usr"]
    for link in ("bin", "lib", "lib64", "sbin"):
        target = Path("/") / link
        if target.is_symlink():
            argv += ["--symlink", os.readlink(target), f"/{link}"]
    argv += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--bind", str(scratch), "/work", "--chdir", "/work"]
    for src, dst in binds:
        argv += ["--ro-bind", src, dst]
    argv += ["--remount-ro", "/"]  # the sandbox's own root tmpfs: only /work and /tmp stay writable
    argv += ["--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/work", "--setenv", "LANG", "C.UTF-8"]
    return argv + ["--"]


def _limits(cpu_s: int, memory_mb: int, file_mb: int, nofile: int, nproc: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_mb << 20, file_mb << 20))
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def run_command(
    argv: list[str],
    *,
    files: dict[str, str | bytes] | None = None,
    stdin: str = "",
    timeout_s: float = 5.0,
    memory_mb: int = 512,
    file_mb: int = 16,
    nofile: int = 64,
    nproc: int = 32,
    output_limit: int = OUTPUT_LIMIT,
    binds: list[tuple[str, str]] | None = None,
    allow_unisolated: bool = False,
) -> SandboxResult:
    """Run `argv` (paths as seen inside the sandbox) with `files` written to its scratch dir `/work`."""
    isolated = isolation_available()
    if not isolated and not allow_unisolated:
        raise SandboxUnavailable(
            "refusing to run untrusted code: bwrap is missing or we are not root (uid switching needs it). "
            "Install the `bubblewrap` package, or set sandbox.allow_unisolated: true to run without isolation."
        )
    scratch = Path(tempfile.mkdtemp(prefix="swarmrl-sbx-"))
    try:
        uid = next_uid() if isolated else None
        for name, content in (files or {}).items():
            path = scratch / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content.encode() if isinstance(content, str) else content)
        if isolated:
            for p in [scratch, *scratch.rglob("*")]:
                os.chown(p, uid, uid)
            full = _bwrap_argv(scratch, binds or []) + argv
            extra = {"user": uid, "group": uid, "extra_groups": []}
        else:
            warnings.warn("running untrusted code WITHOUT isolation (sandbox.allow_unisolated)", RuntimeWarning, stacklevel=2)
            full = [a.replace("/work", str(scratch), 1) if a.startswith("/work") else a for a in argv]
            extra = {"cwd": scratch, "env": {"PATH": "/usr/bin:/bin", "HOME": str(scratch)}}
        cpu_s = max(1, math.ceil(timeout_s))
        return _execute(full, stdin, timeout_s, output_limit, _limits(cpu_s, memory_mb, file_mb, nofile, nproc), isolated, extra)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _execute(argv, stdin, timeout_s, output_limit, preexec, isolated, extra) -> SandboxResult:
    t0 = time.monotonic()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=preexec,
        close_fds=True,
        **extra,
    )
    out, err = bytearray(), bytearray()
    truncated = timed_out = False
    try:
        if stdin:
            proc.stdin.write(stdin.encode()[:output_limit])
    except (BrokenPipeError, OSError):
        pass
    finally:
        proc.stdin.close()
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, out)
    sel.register(proc.stderr, selectors.EVENT_READ, err)
    open_streams = 2
    while open_streams:
        remaining = timeout_s - (time.monotonic() - t0)
        if remaining <= 0:
            timed_out = True
            break
        for key, _ in sel.select(timeout=remaining):
            chunk = os.read(key.fileobj.fileno(), 65536)
            if not chunk:
                sel.unregister(key.fileobj)
                open_streams -= 1
                continue
            buf = key.data
            buf += chunk[: max(0, output_limit - len(buf))]
            if len(buf) >= output_limit:
                truncated = True
        if truncated:
            break
    if timed_out or truncated:
        _kill(proc)
    try:
        proc.wait(timeout=max(0.1, timeout_s - (time.monotonic() - t0)) if not (timed_out or truncated) else 5)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill(proc)
        proc.wait()
    sel.close()
    proc.stdout.close()
    proc.stderr.close()
    wall = time.monotonic() - t0
    rc = proc.returncode
    stderr = err.decode(errors="replace")
    if timed_out or rc in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
        status = "timeout"
    elif truncated:
        status = "killed"
    elif "MemoryError" in stderr[-2000:] or "Cannot allocate memory" in stderr[-2000:]:
        status = "memory"
    elif rc == 0:
        status = "ok"
    elif rc is not None and (rc < 0 or rc >= 128):
        status = "killed"
    else:
        status = "error"
    return SandboxResult(status, rc, out.decode(errors="replace"), stderr, wall, truncated, isolated)


def _kill(proc: subprocess.Popen) -> None:
    # bwrap leads its own session; killing its group takes its PID namespace (and everything the
    # program spawned, detached or not) down with it.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_python(source: str, *, stdin: str = "", timeout_s: float = 5.0, memory_mb: int = 512, allow_unisolated: bool = False) -> SandboxResult:
    """Run a Python program in the sandbox (system interpreter, isolated mode)."""
    return run_command(
        [PYTHON, "-I", "-B", "/work/main.py"],
        files={"main.py": source},
        stdin=stdin,
        timeout_s=timeout_s,
        memory_mb=memory_mb,
        allow_unisolated=allow_unisolated,
    )
