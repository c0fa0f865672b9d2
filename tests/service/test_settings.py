"""Settings from the environment (VQREC_*), their bounds, and the two ways to start the server."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest
from pydantic import ValidationError

from vqrec.service.settings import Settings


def test_defaults(tmp_path):
    s = Settings(index_root=str(tmp_path))
    assert (s.indexes, s.default_k, s.max_k, s.max_batch, s.max_exclude) == (None, 10, 1000, 256, 10000)
    assert (s.verify_checksums, s.host, s.port, s.log_level) == (True, "127.0.0.1", 8000, "info")


def test_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("VQREC_INDEX_ROOT", str(tmp_path))
    monkeypatch.setenv("VQREC_INDEXES", "movies, books")
    monkeypatch.setenv("VQREC_MAX_K", "100")
    monkeypatch.setenv("VQREC_VERIFY_CHECKSUMS", "false")
    monkeypatch.setenv("VQREC_LOG_LEVEL", "DEBUG")
    s = Settings()
    assert s.index_root == str(tmp_path)
    assert s.indexes == ["movies", "books"]
    assert s.max_k == 100 and s.verify_checksums is False and s.log_level == "debug"
    monkeypatch.setenv("VQREC_INDEXES", '["a", "b"]')
    assert Settings().indexes == ["a", "b"]


def test_index_root_is_required(monkeypatch):
    monkeypatch.delenv("VQREC_INDEX_ROOT", raising=False)
    with pytest.raises(ValidationError, match="index_root"):
        Settings()


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"max_k": 0}, "max_k"),
        ({"max_k": 1001}, "max_k"),
        ({"default_k": 20, "max_k": 10}, "default_k (20) must not exceed max_k (10)"),
        ({"max_batch": 0}, "max_batch"),
        ({"log_level": "loud"}, "log_level"),
    ],
)
def test_bounds(tmp_path, kwargs, words):
    with pytest.raises(ValidationError, match=words.replace("(", r"\(").replace(")", r"\)")):
        Settings(index_root=str(tmp_path), **kwargs)


def test_import_does_no_work_and_no_torch():
    """Importing the service reads no environment, loads nothing, and never imports torch."""
    code = "import service.main, sys; print('torch' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VQREC_")}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    assert out.stdout.strip() == "False"


def test_run_starts_uvicorn_with_settings(monkeypatch, tmp_path):
    import uvicorn

    from vqrec.service import main

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    main.run(Settings(index_root=str(tmp_path), host="0.0.0.0", port=9123, log_level="warning"))
    assert seen["host"] == "0.0.0.0" and seen["port"] == 9123 and seen["log_level"] == "warning"
    assert seen["app"].state.settings.port == 9123


def test_uvicorn_factory_reads_environment(index_root, svc_data, server, free_port):
    """`uvicorn service.main:create_app --factory` serves the indexes named by VQREC_INDEX_ROOT."""
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "vqrec.service.main:create_app", "--factory", "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "warning"]  # fmt: skip
    env = {"VQREC_INDEX_ROOT": index_root, "VQREC_INDEXES": "demo"}
    with server(
        argv, port, env=env, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))), timeout=30
    ) as base:
        r = httpx.get(f"{base}/readyz", timeout=2)
        assert r.status_code == 200
        assert r.json() == {"status": "ready", "indexes": {"demo": svc_data.index.version}, "removed": {}}
        q = httpx.post(f"{base}/v1/indexes/demo/recommend", json={"user_id": "u1", "k": 3})
        assert q.status_code == 200 and len(q.json()["results"]) == 3
