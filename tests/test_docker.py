"""docker/: no container engine runs here, so the compose file is parsed and its api service's command
is run directly (with its environment, against a temporary index root), then its healthcheck."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import yaml

from index import Embeddings, build_index, save_index
from trainers.config import TrainConfig
from trainers.quantizers import train

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker" / "docker-compose.yml").read_text())
DOCKERFILE = (ROOT / "docker" / "service.Dockerfile").read_text()


def test_service_image_has_no_torch_and_serves() -> None:
    assert 'pip install --no-cache-dir ".[service]"' in DOCKERFILE
    installs = [ln for ln in DOCKERFILE.splitlines() if "pip install" in ln]
    assert installs and not any("torch" in ln or "train" in ln for ln in installs)
    assert 'CMD ["vqrec", "serve"]' in DOCKERFILE
    api = COMPOSE["services"]["api"]
    assert api["build"]["dockerfile"] == "docker/service.Dockerfile"
    assert api["command"] == ["vqrec", "serve"]
    assert "/readyz" in " ".join(api["healthcheck"]["test"])


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
    exe = shutil.which(api["command"][0], path=str(Path(sys.executable).parent)) or api["command"][0]
    with server([exe, *api["command"][1:]], port, env=env):
        check = [c.replace("127.0.0.1:8000", f"127.0.0.1:{port}") for c in api["healthcheck"]["test"][1:]]
        assert check[0] == "python"
        assert subprocess.run([sys.executable, *check[1:]], timeout=30).returncode == 0
        r = httpx.post(f"http://127.0.0.1:{port}/v1/indexes/items/similar", json={"item_id": "i3", "k": 5})
        assert r.status_code == 200 and len(r.json()["results"]) == 5
