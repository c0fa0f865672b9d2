"""The serving image installs vqrec without its trainers (setup.py leaves out a room whose folder is absent):
``vqrec serve`` never imports them, and a trainer command there says what is missing instead of a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vqrec.cli import root as cli

ROOT = Path(__file__).resolve().parents[2]


def test_a_trainer_command_without_trainers_is_a_clear_error(monkeypatch, capsys, tmp_path: Path) -> None:
    for name in [m for m in sys.modules if m.startswith("vqrec.trainers")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "vqrec.trainers", None)  # import vqrec.trainers.* -> ModuleNotFoundError
    out = str(tmp_path / "cb")
    monkeypatch.setattr(sys, "argv", ["vqrec", "train", "pq", "--embeddings", "x.npy", "--out", out])
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: this vqrec is installed without its trainers (vqrec.trainers")
    assert "Traceback" not in err and not Path(out).exists()


def test_serve_and_help_import_no_trainer() -> None:
    code = (
        "import sys\n"
        "from vqrec.cli import app\n"
        "from typer.testing import CliRunner\n"
        "r = CliRunner().invoke(app, ['serve', '--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('vqrec.trainers', 'torch', 'numpy', 'faiss')))\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
