"""docker/docker-compose.yml in real containers (podman + podman-compose, prepared by
../shared/containers/setup.sh, which .ci/run runs first).

The first deployment as the docs describe it: the API comes up on an empty index volume and is ready; the
one-shot rebuild job publishes the first version and tells the API, which serves the new name without a
restart; a second run with new embeddings changes ``index_version`` in the responses; the keys come from
the ``.env``. The compose file is used as written, copied next to its own ``.env`` and ``rebuild.toml``
with three changes for this machine: the build context is the repository, the port is a free one (the
containers share the host's network here), and the job trains small codebooks.

Skips, naming why, when this machine cannot build or run containers (no podman, no base image, no
podman-compose); it never skips where they are.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import recsys_arrays
from vqrec.index.embeddings import save_embeddings

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
BASE_IMAGE = "docker.io/library/python:3.11-slim"
BUILD_ARGS = "--isolation chroot -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro"
WAIT = 240.0  # bound on the API start (the first build installs the dependencies)


def why_not() -> str | None:
    """Why containers cannot run here, or None."""
    if shutil.which("podman") is None:
        return "podman is not installed (run ../shared/containers/setup.sh)"
    compose = Path(sys.executable).parent / "podman-compose"
    if not compose.exists() and shutil.which("podman-compose") is None:
        return "podman-compose is not installed (the test extra installs it)"
    r = subprocess.run(["podman", "image", "exists", BASE_IMAGE], capture_output=True, timeout=60)
    if r.returncode != 0:
        return f"the base image {BASE_IMAGE} is not there (../shared/containers/setup.sh builds a local stand-in)"
    return None


def compose_cmd() -> str:
    local = Path(sys.executable).parent / "podman-compose"
    return str(local) if local.exists() else "podman-compose"


@pytest.mark.slow
def test_first_deploy_rebuild_and_hot_swap_in_real_containers(tmp_path: Path, free_port) -> None:
    reason = why_not()
    if reason:
        pytest.skip(f"containers cannot run on this machine: {reason}")
    port = free_port()
    project = f"vqrec-test-{os.getpid()}"
    work = tmp_path / "deploy"
    (work / "docker").mkdir(parents=True)
    (work / "indexes").mkdir()
    (work / "data").mkdir()
    compose = (DOCKER / "docker-compose.yml").read_text()
    assert compose.count("context: ..") == 2 and compose.count("8000") == 5  # port, mapping, healthcheck, url
    compose = compose.replace("context: ..", f"context: {ROOT}").replace("8000", str(port))
    (work / "docker" / "docker-compose.yml").write_text(compose)
    shutil.copy(DOCKER / ".env.example", work / "docker" / ".env")
    env_file = dict(
        line.split("=", 1)
        for line in (DOCKER / ".env.example").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    toml = (DOCKER / "rebuild.toml.example").read_text()
    toml = toml.replace("M = 16\nnbits = 8", "M = 4\nnbits = 4\nniter = 8\neval_queries = 30")
    toml = toml.replace("recall_floor = 0.8\nmax_drop = 0.02", "recall_floor = 0.2\nmax_drop = 0.5\nqueries = 60")
    toml = toml.replace('url = "http://api:8000"', f'url = "http://api:{port}"')
    assert f"http://api:{port}" in toml and "M = 4" in toml
    (work / "docker" / "rebuild.toml").write_text(toml)
    xb, xq, _ = recsys_arrays(n=800, d=16, nq=60)
    ids, uids = [f"i{i}" for i in range(len(xb))], [f"u{i}" for i in range(len(xq))]
    save_embeddings(str(work / "data" / "items.npz"), ids, xb)
    save_embeddings(str(work / "data" / "users.npz"), uids, xq)

    def compose_run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        argv = [compose_cmd(), "-p", project, "-f", str(work / "docker" / "docker-compose.yml")]
        argv += ["--podman-build-args", BUILD_ARGS, *args]
        return subprocess.run(argv, cwd=work / "docker", capture_output=True, text=True, timeout=timeout)

    base = f"http://127.0.0.1:{port}"
    read = {"Authorization": f"Bearer {env_file['VQREC_API_KEYS'].split(',')[0]}"}
    try:
        up = compose_run("up", "-d", "--build", "api")
        assert up.returncode == 0, up.stdout + up.stderr
        # the API on an empty volume: up and ready (what the job's depends_on: service_healthy waits for)
        deadline = time.monotonic() + WAIT
        while True:
            try:
                ready = httpx.get(f"{base}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, compose_run("logs", "api").stdout[-3000:]
            time.sleep(1)
        assert ready.json()["indexes"] == {}
        url = f"{base}/v1/indexes/items/recommend"
        assert httpx.post(url, json={"user_id": "u1"}, headers=read, timeout=10).status_code == 404

        # the scheduled job, first run: publishes, activates and tells the running API
        # (podman-compose enables a profile's service only when named; Docker Compose's `run` does it itself)
        job = compose_run("--profile", "jobs", "run", "--rm", "rebuild")
        assert job.returncode == 0, job.stdout + job.stderr
        assert "notified" in job.stdout and "HTTP 200" in job.stdout, job.stdout
        assert httpx.post(url, json={"user_id": "u1"}, timeout=10).status_code == 401  # keys from the .env
        r1 = httpx.post(url, json={"user_id": "u1", "k": 5}, headers=read, timeout=10)
        assert r1.status_code == 200 and len(r1.json()["results"]) == 5, r1.text
        v1 = r1.json()["index_version"]

        # new embeddings, second run: a new version, served without restarting the API
        moved = xb + 0.01 * np.random.default_rng(3).standard_normal(xb.shape).astype(np.float32)
        save_embeddings(str(work / "data" / "items.npz"), ids, moved)
        job = compose_run("--profile", "jobs", "run", "--rm", "rebuild")
        assert job.returncode == 0, job.stdout + job.stderr
        r2 = httpx.post(url, json={"user_id": "u1", "k": 5}, headers=read, timeout=10)
        assert r2.status_code == 200 and r2.json()["index_version"] != v1
        versions = sorted(p.name for p in (work / "indexes" / "items" / "versions").iterdir())
        assert r2.json()["index_version"] in versions and v1 in versions
    finally:
        compose_run("down", "-t", "5", timeout=180)
