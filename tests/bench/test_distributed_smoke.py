"""bench/distributed.py on a small synthetic set, so it cannot rot: both paths run and agree."""

from __future__ import annotations

import pytest

pytest.importorskip("ray", reason="needs Ray Data (the 'distributed' extra: pip install -e '.[distributed]')")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")


def test_distributed_bench_runs_and_agrees(capsys) -> None:
    import ray

    from bench import distributed
    from bench.data import DATA_ROOT

    if not (DATA_ROOT / "synthetic.py").exists():
        pytest.skip(f"needs {DATA_ROOT / 'synthetic.py'} (the shared data folder, ../shared beside the repo)")

    try:
        out = distributed.main(
            ["--n", "3000", "--d", "32", "--nq", "300", "--M", "4", "--shards", "3", "--queries", "200"]
        )
    finally:
        ray.shutdown()
    assert out["codes_identical"] and out["rebuild_identical"]
    for key in ("encode_single_s", "encode_ray_s", "rebuild_single_s", "rebuild_ray_s"):
        assert out[key] > 0, key
    printed = capsys.readouterr().out
    assert "rebuild, single process:" in printed and "identical: True" in printed
