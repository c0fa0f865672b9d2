"""vqrec benchmarks: ``python -m bench.run`` (see bench/run.py). Output goes to bench/out/ (gitignored)."""
