"""What the service writes to its log: one line per record whatever a client sends (control characters and
line separators escaped once, by a filter on the service's handlers), and ``vqrec serve`` writing the JSON
access line per request by default (INFO; ``VQREC_LOG_LEVEL`` / ``--log-level``) while the other commands
stay at WARNING.

Servers are ``vqrec serve`` on 127.0.0.1 (the ``server`` fixture: bounded wait, always stopped), started
through ``bash -c 'exec ...'`` so that their output lands in a file the test reads.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

EVIL = "x\nFAKE ERROR vqrec.service.reload [-]: forged line\r\u2028FAKE2 \x1b[31m\x00\t\x85\u2029end"


def vqrec_exe() -> str:
    exe = Path(sys.executable).parent / "vqrec"
    return str(exe) if exe.exists() else "vqrec"


def wait_for(read: Callable[[], str], pred: Callable[[str], bool], timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = read()
        if pred(text) or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


def access_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if " vqrec.access " in line and "]: {" in line:
            out.append(json.loads(line.split("]: ", 1)[1]))
    return out


# ---- the filter -----------------------------------------------------------------------------------
def test_escape_filter_makes_one_line_of_any_message() -> None:
    from vqrec.service.metrics import EscapeControlChars, escape_control

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(EscapeControlChars())
    log = logging.getLogger("vqrec.test_logging.unit")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.error("reload failed (target %s)", EVIL)
        log.warning("plain %d", 3)
        log.error("%s", {"v": EVIL})  # a non-str argument
    finally:
        log.removeHandler(handler)
        log.propagate = True
    lines = stream.getvalue().splitlines()  # splits on \r, \x1c-\x1e, \x85, \u2028, \u2029 too
    assert len(lines) == 3, lines
    assert lines[0] == (
        "ERROR vqrec.test_logging.unit: reload failed (target x\\nFAKE ERROR vqrec.service.reload [-]: forged "
        "line\\r\\u2028FAKE2 \\x1b[31m\\x00\\t\\x85\\u2029end)"
    ), lines[0]
    assert lines[1] == "WARNING vqrec.test_logging.unit: plain 3"
    assert escape_control("tab\there é ü 日本") == "tab\\there é ü 日本"  # printable non-ASCII is kept


def test_configure_logging_installs_the_filter() -> None:
    """The handler the service installs (no host handler) escapes every record, from any logger."""
    code = (
        "import logging\n"
        "from vqrec.service.main import configure_logging\n"
        "configure_logging('info')\n"
        f"logging.getLogger('vqrec.service.reload').error('target %s', {EVIL!r})\n"
        f"logging.getLogger('uvicorn.error').info({EVIL!r})\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    lines = out.stderr.splitlines()
    assert len(lines) == 2, out.stderr
    assert all("x\\nFAKE ERROR" in ln and "[-]: " in ln for ln in lines), lines


# ---- vqrec serve ----------------------------------------------------------------------------------
def serve_argv(logfile: Path, index_root: str, port: int, *extra: str) -> list[str]:
    return ["bash", "-c", 'exec "$@" >"$0" 2>&1', str(logfile), vqrec_exe(), "serve",
            "--index-root", index_root, "--host", "127.0.0.1", "--port", str(port), *extra]  # fmt: skip


def test_vqrec_serve_writes_access_lines_and_escapes_a_forged_version(
    index_root: str, server: Any, free_port: Any, tmp_path: Path
) -> None:
    port = free_port()
    logfile = tmp_path / "serve.log"
    with server(serve_argv(logfile, index_root, port), port, timeout=60) as base:
        read = logfile.read_text
        r = httpx.post(
            f"{base}/v1/indexes/demo/recommend", json={"user_id": "u1", "k": 3}, headers={"X-Request-ID": "acc-1"}
        )
        assert r.status_code == 200
        r = httpx.post(f"{base}/v1/admin/indexes/demo/reload", json={"version": EVIL}, timeout=30)
        assert r.status_code == 422 and r.json()["error"]["code"] == "reload_failed", r.text
        text = wait_for(read, lambda t: "vqrec.service.reload" in t)
        text = wait_for(read, lambda t: any(x["request_id"] == "acc-1" for x in access_lines(t)), timeout=2)
    lines = text.splitlines()
    forged = [ln for ln in lines if ln.startswith(("FAKE", "\x1b", "end"))]
    assert forged == [], forged
    with_version = [ln for ln in lines if "FAKE" in ln]
    assert len(with_version) == 1, with_version
    assert " ERROR vqrec.service.reload [" in with_version[0], with_version
    assert "(target x\\nFAKE ERROR vqrec.service.reload [-]: forged line\\r\\u2028FAKE2" in with_version[0]
    mine = [x for x in access_lines(text) if x["request_id"] == "acc-1"]
    assert len(mine) == 1, text[-3000:]
    assert mine[0]["route"] == "/v1/indexes/{name}/recommend" and mine[0]["status"] == 200, mine
    assert mine[0]["method"] == "POST" and mine[0]["index"] == "demo" and mine[0]["duration_ms"] >= 0
    # one access line per request: the service's JSON line (uvicorn's own text line is off)
    assert not [ln for ln in lines if '"POST /v1/indexes/demo/recommend HTTP/1.1" 200' in ln], lines


def test_log_level_setting_turns_the_access_lines_off(
    index_root: str, server: Any, free_port: Any, tmp_path: Path
) -> None:
    port = free_port()
    logfile = tmp_path / "serve.log"
    with server(serve_argv(logfile, index_root, port), port, env={"VQREC_LOG_LEVEL": "warning"}, timeout=60) as base:
        r = httpx.post(
            f"{base}/v1/indexes/demo/recommend", json={"user_id": "u1", "k": 3}, headers={"X-Request-ID": "acc-2"}
        )
        assert r.status_code == 200
        assert httpx.get(f"{base}/nowhere").status_code == 404
        time.sleep(0.5)
        text = logfile.read_text()
    assert access_lines(text) == [], text[-2000:]
    assert "no API key configured" in text  # WARNING still written


@pytest.fixture
def store_root(svc_data: Any, tmp_path: Path) -> tuple[str, str]:
    from vqrec.index.store import IndexStore

    root = tmp_path / "store"
    store = IndexStore(str(root))
    version = store.publish(svc_data.index, "movies")
    return str(root), version


def test_other_commands_stay_at_warning(store_root: tuple[str, str]) -> None:
    """Only serving turns INFO on: `vqrec activate` (which loads and verifies the version, an INFO record)
    writes its summary and no log line."""
    root, version = store_root
    out = subprocess.run(
        [vqrec_exe(), "activate", "movies", version, "--index-root", root],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "INFO" not in out.stderr + out.stdout, out.stderr
