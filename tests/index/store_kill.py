"""Kill a real ``vqrec publish`` process with SIGKILL at a chosen point (tests of the store's leftovers).

The command runs under ``sys.executable`` from its own typer app (vqrec/cli/store.py). A patch in the child
makes it stop at ``at`` ("mid-copy": two files copied into the staging directory; "before-activate": the
version renamed into versions/, the alias not flipped yet), write a marker file and wait; the test process
then sends SIGKILL, as an operator's ``kill -9`` or the OOM killer would. The store's lock (an flock) is
released by the kernel.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time

_REPO = str(pathlib.Path(__file__).resolve().parents[2])

_CHILD = r"""
import sys, time
import vqrec.index.store as store_mod

marker, at, argv = sys.argv[1], sys.argv[2], sys.argv[3:]


def stop_here():
    open(marker, "w").close()
    time.sleep(600)  # killed with SIGKILL by the test long before


if at == "mid-copy":
    real_copy = store_mod.shutil.copyfile
    copied = [0]

    def copyfile(src, dst, *a, **k):
        out = real_copy(src, dst, *a, **k)
        copied[0] += 1
        if copied[0] == 2:
            stop_here()
        return out

    store_mod.shutil.copyfile = copyfile
elif at == "before-activate":
    store_mod.IndexStore.activate = lambda self, *a, **k: stop_here()
else:
    raise SystemExit(f"unknown kill point {at!r}")

from vqrec.cli.store import app

app(args=argv, prog_name="vqrec")
"""

POINTS = ("mid-copy", "before-activate")


def kill_publish(argv: list[str], at: str, *, timeout: float = 120.0) -> int:
    """Run ``vqrec publish ARGV...`` in a child process, SIGKILL it at ``at``; returns its return code (-9)."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1", "PYTHONPATH": _REPO}
    with tempfile.TemporaryDirectory() as tmp:
        marker = os.path.join(tmp, "stopped")
        proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, marker, at, "publish", *argv],
            cwd=_REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + timeout
            while not os.path.exists(marker):
                if proc.poll() is not None:
                    out, err = proc.communicate()
                    raise AssertionError(f"publish ended ({proc.returncode}) before {at}:\n{out}\n{err}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"publish did not reach {at} within {timeout}s")
                time.sleep(0.05)
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        return proc.returncode


def stagings(versions_dir: str | os.PathLike[str]) -> list[str]:
    """The ``.publish-*`` staging directories under a name's versions/ directory."""
    if not os.path.isdir(versions_dir):
        return []
    return sorted(n for n in os.listdir(versions_dir) if n.startswith(".publish-"))
