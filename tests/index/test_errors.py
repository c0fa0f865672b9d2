"""One error tree and a small public surface: every domain error is a VqrecError with its own code, defined
in vqrec.index.errors and drawn (with its code) in that module's docstring; ``vqrec.index.__all__`` is pinned."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import vqrec.index
from vqrec.index import errors

ROOT = Path(__file__).resolve().parents[2]

PUBLIC = [
    "INDEX_FORMAT_VERSION",
    "MAX_K",
    "ArtifactCorrupt",
    "ArtifactError",
    "ArtifactNotFound",
    "Codebooks",
    "CompressedIndex",
    "ConfigError",
    "DimensionMismatchError",
    "DistributedError",
    "Embeddings",
    "FormatVersionError",
    "IndexStore",
    "InputError",
    "InvalidCursorError",
    "InvalidPrefixError",
    "NonFiniteError",
    "RebuildError",
    "SearchResult",
    "StoreError",
    "TopK",
    "UnknownIdError",
    "UnknownItemError",
    "UnknownSemanticIdError",
    "UnknownUserError",
    "UserStore",
    "VqrecError",
    "adc_topk",
    "build_index",
    "exact_search",
    "kernel_available",
    "load_embeddings",
    "load_index",
    "save_embeddings",
    "save_index",
]


def error_classes() -> dict[str, type]:
    return {
        name: cls
        for name, cls in vars(errors).items()
        if inspect.isclass(cls) and issubclass(cls, Exception) and cls.__module__ == errors.__name__
    }


def test_the_public_surface_is_pinned() -> None:
    assert vqrec.index.__all__ == PUBLIC
    for name in PUBLIC:
        assert getattr(vqrec.index, name) is not None


def test_every_error_is_a_vqrec_error_with_its_own_code() -> None:
    classes = error_classes()
    assert len(classes) == 18
    codes = {}
    for name, cls in classes.items():
        assert issubclass(cls, errors.VqrecError) and issubclass(cls, ValueError), name
        assert "code" in vars(cls), f"{name} has no code of its own"
        codes[name] = cls.code
        assert getattr(vqrec.index, name) is cls, f"{name} is not exported by vqrec.index"
    assert len(set(codes.values())) == len(codes), codes
    assert errors.RebuildError("gate refused", 4).exit_code == 4


def test_the_docstring_draws_the_tree_as_it_is() -> None:
    """Each tree line names a class, its code, and sits under its direct base."""
    classes = error_classes()
    drawn: dict[str, tuple[int, str]] = {}
    parents: list[tuple[int, str]] = []
    for line in errors.__doc__.splitlines():
        m = re.match(r"^\s+([│ ]*)(?:[├└]── )?([A-Z]\w+)\b(?: \(ValueError\))?\s+(\w+)?", line)
        if not m or m.group(2) not in classes:
            continue
        depth, name = len(m.group(1)) // 4 + (1 if "──" in line else 0), m.group(2)
        while parents and parents[-1][0] >= depth:
            parents.pop()
        parent = parents[-1][1] if parents else "ValueError"
        drawn[name] = (depth, parent)
        parents.append((depth, name))
        if name != "VqrecError":
            assert m.group(3) == classes[name].code, (name, m.group(3), classes[name].code)
    assert set(drawn) == set(classes), set(classes) ^ set(drawn)
    for name, (_, parent) in drawn.items():
        assert classes[name].__bases__[0].__name__ == parent, (name, parent)


def test_no_domain_error_is_defined_elsewhere() -> None:
    """Only vqrec.index.errors defines errors; service/errors.py holds the HTTP ones (ServiceError)."""
    allowed = {ROOT / "index" / "errors.py", ROOT / "service" / "errors.py"}
    found = []
    for folder in ("index", "service", "trainers", "vqrec"):
        for path in (ROOT / folder).rglob("*.py"):
            if path in allowed:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef):
                    bases = [getattr(b, "id", getattr(b, "attr", "")) for b in node.bases]
                    if any(b.endswith(("Error", "Exception")) for b in bases):
                        found.append(f"{path.relative_to(ROOT)}: class {node.name}({', '.join(bases)})")
    assert found == []
