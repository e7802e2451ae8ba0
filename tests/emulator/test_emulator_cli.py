from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from acr_emulator.testing import make_client

from .helpers import RG, create_registry

ROOT = Path(__file__).resolve().parents[2]


def test_it_prints_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "acr_emulator", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0
    for option in ("--port", "--state", "--lro-polls", "--page-size", "--fault"):
        assert option in result.stdout


def test_it_refuses_a_bad_fault_spec() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "acr_emulator", "--port", "0", "--fault", "count=1,status=418"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--fault" in result.stderr


def test_it_serves_from_the_command_line(tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "acr_emulator",
            "--port",
            "0",
            "--state",
            str(state_file),
            "--page-size",
            "2",
            "--fault",
            "count=1,status=503,operation=registries.list",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "listening on http://127.0.0.1:" in line
        url = line.strip().rsplit(" ", 1)[1]
        with urllib.request.urlopen(f"{url}/_emulator/health", timeout=5) as response:
            assert json.loads(response.read()) == {"status": "ok"}
        with make_client(url) as client:
            for name in ("clireg001", "clireg002", "clireg003"):
                create_registry(client, name)
            # the 503 fault from the command line is retried away; paging at 2 per page
            assert len(list(client.registries.list_by_resource_group(RG))) == 3
        assert state_file.exists()
    finally:
        process.terminate()
        try:
            _, stderr = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - only when terminate is ignored
            process.kill()
            pytest.fail("the emulator did not stop on SIGTERM")
    assert process.returncode == 0
    # one log line per request: method, path, status, duration
    assert " GET /_emulator/health 200 " in stderr
    assert "registries 503 " in stderr
