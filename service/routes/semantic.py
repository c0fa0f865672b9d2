"""Semantic-id routes: one entity's semantic id, many at once (either way), and the prefix structure that
constrained decoding in a generative recommender asks about.

    GET  /v1/indexes/{name}/items/{item_id}/semantic-id     one item's codes, dedup suffix, string form
    GET  /v1/indexes/{name}/users/{user_id}/semantic-id     the same for a user (users tokenized at build)
    POST /v1/indexes/{name}/semantic-ids/lookup             ids -> semantic ids, or semantic ids -> ids
    POST /v1/indexes/{name}/semantic-ids/prefix             entities under a prefix (paginated) + next codes

A semantic id is L codes (one per tokenizer level; level l's codes are 0..codebook_sizes[l]-1) and a
dedup suffix, written "c1-...-cL-suffix" ("12-5-200-0"). Answers come from index.semantic.SemanticIds:
entities sorted by (codes, suffix), so a prefix is one contiguous range found by binary search level by
level and its next codes are the precomputed runs inside it (O(L log n + page + children); no scan).

Ids in the GET paths are matched with the ``path`` converter, so ids holding "/" work when
percent-encoded (``a%2Fb``). Routes are sync ``def`` (run in the thread pool), like the query routes.

Errors (the one error shape; see service/errors.py): 404 unknown_index / unknown_item / unknown_user /
unknown_semantic_id / no_semantic_ids, 422 invalid_prefix / invalid_semantic_id / invalid_cursor /
invalid_query / validation_error, 413 batch_too_large, 503 index_not_loaded.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from vqrec.index import CompressedIndex, UnknownItemError, UnknownUserError
from vqrec.index.errors import InvalidCursorError, InvalidPrefixError
from vqrec.index.semantic import SemanticIds

from ..deps import IndexDep, SettingsDep
from ..errors import BatchTooLargeError, InvalidSemanticIdError, NoSemanticIdsError, UnknownIdsError
from ..openapi import QUERY, errors
from ..schemas import (
    Entity,
    LookupRequest,
    LookupResponse,
    NextToken,
    PrefixRequest,
    PrefixResponse,
    SemanticEntry,
    SemanticIdResponse,
)

router = APIRouter(prefix="/v1/indexes/{name}", tags=["semantic ids"], responses=QUERY)

_NO_IDS = errors(404, why={404: "unknown index or id, or the index has no semantic ids (no_semantic_ids)"})
_SHOWN = 5  # unknown ids named in a 404 message (details.unknown holds up to _LISTED)
_LISTED = 100


def semantic_ids_of(name: str, index: CompressedIndex, entity: Entity) -> SemanticIds:
    """The index's semantic ids of ``entity``, or NoSemanticIdsError (404) saying how to build them."""
    sem = index.semantic_items if entity == "item" else index.semantic_users
    if sem is not None:
        return sem
    if entity == "user" and index.semantic_items is not None:
        raise NoSemanticIdsError(
            f"index {name!r} has no user semantic ids: its users were not tokenized. Rebuild it with "
            f"`vqrec build ... --users USERS --semantic-ids TOKENIZER_DIR --tokenize-users`."
        )
    users = " (add --tokenize-users for users)" if entity == "user" else ""
    raise NoSemanticIdsError(
        f"index {name!r} has no semantic ids: it was built without a tokenizer. Rebuild it with "
        f"`vqrec build ... --semantic-ids TOKENIZER_DIR`{users}, a tokenizer from `vqrec train rqvae`."
    )


def entry(sem: SemanticIds, row: int) -> SemanticEntry:
    e = sem.entry(row)
    return {"id": sem.ids[row], "codes": e["codes"], "suffix": e["suffix"], "semantic_id": e["semantic_id"]}


def _one(name: str, index: CompressedIndex, entity: Entity, ident: str) -> SemanticIdResponse:
    sem = semantic_ids_of(name, index, entity)
    row = sem.row_of(ident)
    if row is None:
        raise UnknownItemError(ident) if entity == "item" else UnknownUserError(ident)
    e = sem.entry(row)
    return SemanticIdResponse(index=name, index_version=index.version, entity=entity, id=ident, **e)


@router.get(
    "/items/{item_id:path}/semantic-id",
    response_model=SemanticIdResponse,
    summary="one item's semantic id: codes, dedup suffix and string form",
    responses=_NO_IDS,
)
def item_semantic_id(name: str, item_id: str, index: IndexDep) -> SemanticIdResponse:
    """The item's L codes, its dedup suffix (0 for the first item with those codes, 1 for the next, ...) and
    the string form ``"c1-...-cL-suffix"``. Percent-encode ids holding ``/``, spaces or ``%``."""
    return _one(name, index, "item", item_id)


@router.get(
    "/users/{user_id:path}/semantic-id",
    response_model=SemanticIdResponse,
    summary="one user's semantic id (users tokenized at build time)",
    responses=_NO_IDS,
)
def user_semantic_id(name: str, user_id: str, index: IndexDep) -> SemanticIdResponse:
    """As for items; 404 ``no_semantic_ids`` when the index's users were not tokenized."""
    return _one(name, index, "user", user_id)


def _quote(values: list[str]) -> str:
    shown = ", ".join(repr(v[:80]) for v in values[:_SHOWN])
    return shown + (f" and {len(values) - _SHOWN} more" if len(values) > _SHOWN else "")


@router.post(
    "/semantic-ids/lookup",
    response_model=LookupResponse,
    summary="many semantic ids at once: by item or user id, or resolve semantic ids to ids",
    responses={**_NO_IDS, **errors(413, why={413: "more ids than settings.max_batch, or the body is too large"})},
)
def lookup(name: str, body: LookupRequest, index: IndexDep, settings: SettingsDep) -> LookupResponse:
    """Exactly one of ``item_ids``, ``user_ids`` or ``semantic_ids`` (with ``entity`` "item" (default) or
    "user": whose semantic ids they are), at most ``settings.max_batch`` of them.

    ``results`` has one entry per known id in request order (repeats kept). An unknown id (or a
    well-formed semantic id that no entity has) is a 404 (unknown_item / unknown_user /
    unknown_semantic_id) naming them, with ``details.unknown``; with ``allow_unknown: true`` the answer
    is a 200 listing them in ``unknown`` instead. A semantic id that is malformed (not L codes and a
    suffix joined by "-", or a code out of its level's range) is always a 422 invalid_semantic_id: it
    cannot be anyone's id.
    """
    entity = body.kind
    by_semantic = body.semantic_ids is not None
    keys = body.semantic_ids or body.item_ids or body.user_ids or []  # exactly one is set (schema)
    sem = semantic_ids_of(name, index, entity)
    if len(keys) > settings.max_batch:
        field = "semantic_ids" if by_semantic else f"{entity}_ids"
        raise BatchTooLargeError(f"{field} has {len(keys)} ids; at most {settings.max_batch} are allowed.")
    results: list[SemanticEntry] = []
    unknown: list[str] = []
    seen: set[str] = set()
    for pos, key in enumerate(keys):
        if by_semantic:
            try:
                codes, suffix = sem.parse(key)
            except InvalidPrefixError as e:
                msg = str(e)
                if msg.startswith("prefix["):  # a code out of its level's range: name it as a code
                    msg = f"{key!r}: code{msg.removeprefix('prefix')}"
                raise InvalidSemanticIdError(f"semantic_ids[{pos}]: {msg}") from None
            row = sem.find(codes, suffix)
        else:
            row = sem.row_of(key)
        if row is not None:
            results.append(entry(sem, row))
        elif key not in seen:
            seen.add(key)
            unknown.append(key)
    if unknown and not body.allow_unknown:
        details: dict[str, Any] = {"unknown": unknown[:_LISTED], "n_unknown": len(unknown)}
        hint = "send allow_unknown: true to get the known ones"
        one = len(unknown) == 1
        if by_semantic:
            raise UnknownIdsError(
                "unknown_semantic_id",
                f"{len(unknown)} of the {len(keys)} semantic ids {'matches' if one else 'match'} no {entity}: "
                f"{_quote(unknown)} ({hint}).",
                details=details,
            )
        raise UnknownIdsError(
            f"unknown_{entity}",
            f"{len(unknown)} of the {len(keys)} {entity} ids {'is' if one else 'are'} unknown: "
            f"{_quote(unknown)} ({hint}).",
            details=details,
        )
    return LookupResponse(index=name, index_version=index.version, entity=entity, results=results, unknown=unknown)


@router.post(
    "/semantic-ids/prefix",
    response_model=PrefixResponse,
    summary="entities whose semantic id starts with a prefix (paginated), and the valid next codes",
    responses=_NO_IDS,
)
def prefix(name: str, body: PrefixRequest, index: IndexDep) -> PrefixResponse:
    """What constrained decoding needs: for ``prefix`` (0..levels codes; [] = the root), ``total``
    entities under it, this page of them in semantic-id order, and ``next_tokens``: every code that
    can follow (ascending, with how many entities each leads to). At ``len(prefix) == levels`` the next
    tokens are the dedup suffixes (``next_is_suffix``).

    A well-formed prefix no entity has is a 200 with ``total`` 0 and no next tokens (a dead end, not an
    error). A code that is not an integer, is outside its level's range, or more codes than the levels
    is a 422 invalid_prefix. Pages: send ``next_cursor`` back as ``cursor`` with the same prefix and
    entity (any ``limit``); a cursor from another prefix, entity or index version is a 422
    invalid_cursor.
    """
    entity = body.entity
    sem = semantic_ids_of(name, index, entity)
    codes = sem.check_prefix(body.prefix)
    lo, hi = sem.prefix_range(codes)
    total = hi - lo
    offset = 0
    if body.cursor is not None:
        offset = _decode_cursor(index, sem, body.cursor, codes, entity)
        if offset > total:
            raise InvalidCursorError(f"cursor points past the {total} {entity}s under prefix {codes}.")
    start = lo + offset
    stop = min(hi, start + body.limit)
    results = [entry(sem, int(row)) for row in sem.rows_in(start, stop)]
    tokens: list[NextToken] = [{"token": t, "count": c} for t, c in sem.next_tokens(len(codes), lo, hi)]
    return PrefixResponse(
        index=name,
        index_version=index.version,
        entity=entity,
        prefix=codes,
        levels=sem.levels,
        total=total,
        results=results,
        next_tokens=tokens,
        next_is_suffix=len(codes) == sem.levels,
        next_cursor=sem.encode_cursor(codes, stop - lo) if stop < hi else None,
    )


def _decode_cursor(index: CompressedIndex, sem: SemanticIds, cursor: str, codes: list[int], entity: Entity) -> int:
    try:
        return sem.decode_cursor(cursor, codes)
    except InvalidCursorError:
        # the likely mistake behind a cursor of "another version": it was issued for the other entity
        other = index.semantic_users if entity == "item" else index.semantic_items
        if other is not None:
            try:
                other.decode_cursor(cursor, codes)
            except InvalidCursorError:
                pass
            else:
                raise InvalidCursorError(
                    f"cursor was issued for {other.kind} semantic ids; send it with entity {other.kind!r}."
                ) from None
        raise
