"""docker/: no container engine runs here, so the compose file is parsed and its services' commands are run
directly (with their environment and the .env example, against a temporary index root on loopback): the api
passes its healthcheck, and the rebuild job publishes a new version that the running api then serves."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import yaml

from tests.conftest import recsys_arrays
from vqrec.index import Embeddings, build_index, save_index
from vqrec.index.embeddings import save_embeddings
from vqrec.index.store import IndexStore
from vqrec.trainers.config import TrainConfig
from vqrec.trainers.quantizers import train
from vqrec.trainers.rebuild import load_rebuild_config

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
DOCKERFILE = (DOCKER / "service.Dockerfile").read_text()
REBUILD_DOCKERFILE = (DOCKER / "rebuild.Dockerfile").read_text()


def env_example() -> dict[str, str]:
    """docker/.env.example as compose reads an env_file: KEY=VALUE lines, # comments."""
    out = {}
    for line in (DOCKER / ".env.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def exe(argv: list[str]) -> list[str]:
    """The container's command with its program taken from this interpreter's environment."""
    return [shutil.which(argv[0], path=str(Path(sys.executable).parent)) or argv[0], *argv[1:]]


def volume(service: dict, target: str) -> tuple[str, str]:
    """(source, mode) of the service's bind mount at ``target`` (mode "rw" unless ":ro")."""
    for v in service["volumes"]:
        src, dst, *mode = v.split(":")
        if dst == target:
            return src, (mode[0] if mode else "rw")
    raise AssertionError(f"no volume at {target}: {service['volumes']}")


def test_service_image_has_no_torch_and_serves() -> None:
    assert 'pip install --no-cache-dir ".[service]"' in DOCKERFILE
    installs = [ln for ln in DOCKERFILE.splitlines() if "pip install" in ln]
    assert installs and not any("torch" in ln or "train" in ln for ln in installs)
    assert 'CMD ["vqrec", "serve"]' in DOCKERFILE
    api = COMPOSE["services"]["api"]
    assert api["build"]["dockerfile"] == "docker/service.Dockerfile"
    assert api["command"] == ["vqrec", "serve"]
    assert "/readyz" in " ".join(api["healthcheck"]["test"])
    assert api["env_file"] == ".env" and "profiles" not in api


def test_rebuild_job_is_one_shot_and_shares_the_index_volume() -> None:
    installs = [ln for ln in REBUILD_DOCKERFILE.splitlines() if ln.startswith("RUN") and "pip install" in ln]
    # base deps (numpy, faiss, typer, tqdm), plus the extras named by the EXTRAS build arg (default none)
    assert installs == ['RUN pip install --no-cache-dir ".${EXTRAS:+[$EXTRAS]}"']
    assert 'ARG EXTRAS=""' in REBUILD_DOCKERFILE
    api, job = COMPOSE["services"]["api"], COMPOSE["services"]["rebuild"]
    assert job["build"]["args"] == {"EXTRAS": "${VQREC_REBUILD_EXTRAS:-}"}
    assert job["build"]["dockerfile"] == "docker/rebuild.Dockerfile"
    assert job["profiles"] == ["jobs"]  # not started by `docker compose up`; run by the operator's schedule
    assert job["restart"] == "no"
    assert job["command"][:2] == ["vqrec", "rebuild"]
    assert f"CMD {job['command']}".replace("'", '"') in REBUILD_DOCKERFILE
    config = job["command"][job["command"].index("--config") + 1]
    assert volume(job, config) == ("./rebuild.toml", "ro")
    # the same host directory as the api's index root, writable by the job
    assert volume(job, "/indexes") == volume(api, "/indexes") == ("../indexes", "rw")
    assert api["environment"]["VQREC_INDEX_ROOT"] == "/indexes"
    assert job["depends_on"]["api"]["condition"] == "service_healthy"
    assert job["env_file"] == ".env"
    env = env_example()
    assert {"VQREC_API_KEYS", "VQREC_ADMIN_KEYS", "VQREC_ADMIN_KEY", "VQREC_LOG_LEVEL"} <= set(env)
    assert env["VQREC_ADMIN_KEY"] in env["VQREC_ADMIN_KEYS"].split(",")
    # the example config parses, points at the shared volume, notifies the api with the .env admin key
    cfg = load_rebuild_config(str(DOCKER / "rebuild.toml.example"))
    assert cfg.root == "/indexes" and cfg.notify_url == "http://api:8000" and cfg.admin_key_env == "VQREC_ADMIN_KEY"


def test_compose_api_command_runs_and_passes_its_healthcheck(tmp_path: Path, server, free_port) -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((400, 8)).astype(np.float32)
    items = Embeddings([f"i{j}" for j in range(400)], x, "synthetic")
    cb = train(items, TrainConfig(method="pq", M=2, nbits=4, niter=5, eval_queries=10), show_progress=False)
    save_index(build_index(cb, items, show_progress=False), str(tmp_path / "indexes" / "items"))

    api = COMPOSE["services"]["api"]
    port = free_port()
    env = {k: str(v) for k, v in api["environment"].items()}
    # the container's paths and bind address, mapped onto this machine's loopback and a temp root
    assert env["VQREC_INDEX_ROOT"] == "/indexes" and env["VQREC_PORT"] == "8000"
    env.update(VQREC_INDEX_ROOT=str(tmp_path / "indexes"), VQREC_HOST="127.0.0.1", VQREC_PORT=str(port))
    with server(exe(api["command"]), port, env=env):
        check = [c.replace("127.0.0.1:8000", f"127.0.0.1:{port}") for c in api["healthcheck"]["test"][1:]]
        assert check[0] == "python"
        assert subprocess.run([sys.executable, *check[1:]], timeout=30).returncode == 0
        r = httpx.post(f"http://127.0.0.1:{port}/v1/indexes/items/similar", json={"item_id": "i3", "k": 5})
        assert r.status_code == 200 and len(r.json()["results"]) == 5


def test_rebuild_job_publishes_and_the_running_api_serves_the_new_version(tmp_path: Path, server, free_port) -> None:
    api, job = COMPOSE["services"]["api"], COMPOSE["services"]["rebuild"]
    dotenv = env_example()
    root, data = tmp_path / "indexes", tmp_path / "data"
    data.mkdir()
    xb, xq, _ = recsys_arrays(n=800, d=16, nq=60)
    ids, uids = [f"i{i}" for i in range(len(xb))], [f"u{i}" for i in range(len(xq))]
    save_embeddings(str(data / "items_v1.npz"), ids, xb)
    save_embeddings(str(data / "users.npz"), uids, xq)
    moved = xb + 0.01 * np.random.default_rng(3).standard_normal(xb.shape).astype(np.float32)
    save_embeddings(str(data / "items_v2.npz"), ids, moved)

    # the example config with the container's paths mapped onto the temp root, data and running api
    example = (DOCKER / "rebuild.toml.example").read_text()

    def config(items: str, notify: str | None) -> Path:
        text = (
            example.replace('root = "/indexes"', f'root = "{root}"')
            .replace('"/data/items.npz"', f'"{data / items}"')
            .replace('"/data/users.npz"', f'"{data / "users.npz"}"')
            .replace("M = 16\nnbits = 8", "M = 4\nnbits = 4\nniter = 8\neval_queries = 30")
            .replace("recall_floor = 0.8\nmax_drop = 0.02", "recall_floor = 0.2\nmax_drop = 0.5\nqueries = 60")
        )
        assert text.count(str(root)) == 1 and text.count(str(data)) == 2
        if notify is None:
            text = text.replace('url = "http://api:8000"', "")
        else:
            assert 'url = "http://api:8000"' in text
            text = text.replace('url = "http://api:8000"', f'url = "{notify}"')
        path = tmp_path / "rebuild.toml"
        path.write_text(text)
        return path

    def run_job(cfg: Path) -> subprocess.CompletedProcess[str]:
        argv = list(job["command"])
        argv[argv.index("--config") + 1] = str(cfg)
        env = {**os.environ, **dotenv, **{k: str(v) for k, v in job["environment"].items()}, "OMP_NUM_THREADS": "1"}
        return subprocess.run(exe(argv), capture_output=True, text=True, env=env, timeout=180, cwd=tmp_path)

    # v1: the job's first run, before the api is up (no notify)
    r = run_job(config("items_v1.npz", None))
    assert r.returncode == 0, r.stdout + r.stderr
    store = IndexStore(str(root))
    v1 = store.active("items")
    assert v1

    port = free_port()
    env = {**{k: str(v) for k, v in api["environment"].items()}, **dotenv}
    env.update(VQREC_INDEX_ROOT=str(root), VQREC_HOST="127.0.0.1", VQREC_PORT=str(port))
    read = {"Authorization": f"Bearer {dotenv['VQREC_API_KEYS'].split(',')[0]}"}
    with server(exe(api["command"]), port, env=env) as base:
        url = f"{base}/v1/indexes/items/recommend"
        assert httpx.post(url, json={"user_id": "u1", "k": 5}, timeout=10).status_code == 401  # keys from .env
        r1 = httpx.post(url, json={"user_id": "u1", "k": 5}, headers=read, timeout=10)
        assert r1.status_code == 200 and r1.json()["index_version"] == v1

        # the scheduled job: new embeddings -> published, activated, and the api told (admin key from .env)
        r = run_job(config("items_v2.npz", base))
        assert r.returncode == 0, r.stdout + r.stderr
        v2 = store.active("items")
        assert v2 != v1 and store.previous("items") == v1
        assert f"published and activated {v2}" in r.stdout

        # the job's notify (POST /v1/admin/indexes/items/reload with the .env admin key) answered 200 before
        # the job exited: the very next query, with no restart, answers with the new version
        notified = [ln.split() for ln in r.stdout.splitlines() if ln.strip().startswith("notified")]
        assert notified == [["notified", f"{base}/v1/admin/indexes/items/reload:", "HTTP", "200"]]
        r2 = httpx.post(url, json={"user_id": "u1", "k": 5}, headers=read, timeout=10)
        assert r2.status_code == 200 and r2.json()["index_version"] == v2 == store.active("items")
        assert len(r2.json()["results"]) == 5
        batch = httpx.post(
            f"{url}/batch", json={"queries": [{"user_id": u} for u in uids[:3]]}, headers=read, timeout=10
        )
        assert batch.status_code == 200 and batch.json()["index_version"] == v2
