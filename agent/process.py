"""Running a command for a tool: never through a shell, bounded in time, output and resources.

`run(argv, cwd, env, limits)` starts `argv[0]` directly (`asyncio.create_subprocess_exec`) in
its own session (so a timeout kills the whole process group), with a minimal environment, stdin
from /dev/null, and rlimits applied in the child before exec (CPU seconds, address space, file
size, process count, no core dumps). stdout and stderr are read concurrently, each kept up to
`max_output_bytes` and drained beyond that so the child never blocks on a full pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
from dataclasses import dataclass
from pathlib import Path

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
KILL_GRACE_S = 2.0


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 60.0
    max_output_bytes: int = 64 * 1024
    cpu_seconds: int = 60
    memory_mb: int = 2048
    file_size_mb: int = 128
    max_processes: int = 512


@dataclass
class ProcessResult:
    exit_code: int | None  # None: killed after the timeout
    stdout: str
    stderr: str
    timed_out: bool = False
    truncated: bool = False

    def render(self) -> str:
        """The text the model sees: stdout, then stderr, then how it ended."""
        parts = [self.stdout.rstrip("\n")] if self.stdout else []
        if self.stderr:
            parts.append("STDERR:\n" + self.stderr.rstrip("\n"))
        if self.truncated:
            parts.append("[output over the limit was discarded]")
        if self.timed_out:
            parts.append("[killed: timed out]")
        elif self.exit_code:
            parts.append(f"[exit code {self.exit_code}]")
        return "\n".join(parts) if parts else "(command completed with no output)"

    @property
    def ok(self) -> bool:
        return not self.timed_out and self.exit_code == 0


def minimal_env(workspace: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """No inherited variables (the gateway's DSN, tokens and keys stay out of the child)."""
    env = {
        "PATH": SAFE_PATH,
        "HOME": str(workspace),
        "TMPDIR": os.environ.get("TMPDIR", "/tmp"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    for key, value in (extra or {}).items():
        if isinstance(key, str) and isinstance(value, str) and key and "=" not in key and "\x00" not in key + value:
            env[key] = value
    return env


def _limiter(limits: Limits):
    def apply() -> None:  # runs in the child between fork and exec: only async-signal-safe-ish calls
        def cap(kind: int, value: int) -> None:
            with contextlib.suppress(ValueError, OSError):
                _soft, hard = resource.getrlimit(kind)
                if hard != resource.RLIM_INFINITY:
                    value = min(value, hard)
                resource.setrlimit(kind, (value, value))

        cap(resource.RLIMIT_CPU, max(1, int(limits.cpu_seconds)))
        cap(resource.RLIMIT_AS, int(limits.memory_mb) << 20)
        cap(resource.RLIMIT_FSIZE, int(limits.file_size_mb) << 20)
        cap(resource.RLIMIT_NPROC, max(1, int(limits.max_processes)))
        cap(resource.RLIMIT_CORE, 0)

    return apply


async def _drain(stream: asyncio.StreamReader, sink: bytearray, cap: int, overflow: list[bool]) -> None:
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            return
        room = cap - len(sink)
        if room > 0:
            sink += chunk[:room]
        if len(chunk) > max(room, 0):
            overflow[0] = True


def _kill_group(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        process.kill()


async def run(argv: list[str], cwd: Path, env: dict[str, str], limits: Limits) -> ProcessResult:
    """Run `argv` (no shell) and collect its bounded output. Raises OSError if it cannot start."""
    if not argv or not argv[0]:
        raise ValueError("empty command")
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=str(cwd),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_limiter(limits),
    )
    out, err = bytearray(), bytearray()
    overflow = [False]
    readers = [
        asyncio.ensure_future(_drain(process.stdout, out, limits.max_output_bytes, overflow)),
        asyncio.ensure_future(_drain(process.stderr, err, limits.max_output_bytes, overflow)),
    ]
    waiter = asyncio.ensure_future(process.wait())
    timed_out = False
    try:
        await asyncio.wait([waiter, *readers], timeout=limits.timeout_s)
        if not waiter.done() or not all(r.done() for r in readers):
            # still running, or exited while a grandchild holds the pipes open
            timed_out = not waiter.done()
            _kill_group(process)
            await asyncio.wait([waiter, *readers], timeout=KILL_GRACE_S)
    finally:
        for task in (waiter, *readers):
            if not task.done():
                task.cancel()
        if process.returncode is None:
            _kill_group(process)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(process.wait(), KILL_GRACE_S)
    return ProcessResult(
        exit_code=None if timed_out else process.returncode,
        stdout=out.decode("utf-8", "replace"),
        stderr=err.decode("utf-8", "replace"),
        timed_out=timed_out,
        truncated=overflow[0],
    )
