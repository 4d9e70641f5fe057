"""Shared bench plumbing: a database, gateway processes, wrk runs, printed figures."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.processes import TEST_TOKEN, Database, free_port, start_gateway, wait_until  # noqa: E402

__all__ = ["ROOT", "TEST_TOKEN", "Database", "answers", "free_port", "start_gateway", "start_stub", "wait_until",
           "workdir", "wrk"]


def answers(url: str) -> bool:
    """True once `url` answers 200."""
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def start_stub() -> tuple[subprocess.Popen, str]:
    """The LLM stub upstream (tests/stubs/llm_stub.py) on a free port; returns (process, root URL)."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tests.stubs.llm_stub", "--port", str(port)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    if not wait_until(lambda: answers(url + "/_stats"), timeout=20):
        process.kill()
        raise RuntimeError("the LLM stub did not start")
    return process, url


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="gcb-", dir="/tmp"))


def wrk(url: str, *, seconds: int = 8, connections: int = 32, threads: int = 1, headers: dict | None = None,
        script: str | None = None) -> dict:
    """Run wrk; returns requests/s and latency percentiles (ms)."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk (make bench does this)")
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    if script:
        command += ["-s", script]
    output = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    percentiles = {p: _ms(v, u) for p, v, u in re.findall(r"\s(50|90|99)%\s+([\d.]+)(us|ms|s)", output)}
    return {"rps": rps, "p50": percentiles.get("50"), "p99": percentiles.get("99"),
            "errors": int(non2xx.group(1)) if non2xx else 0}


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
