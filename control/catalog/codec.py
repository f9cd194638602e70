"""Titles to and from JSON: the one shape the store persists, the API answers and the CLI posts.

Rules kept here: decoding checks every field's type and answers BadRequest naming the field, so a record
posted by a client can be stored as is; encoding then decoding gives back an equal Title.
"""

from __future__ import annotations

import re
from typing import Any

from control.model import CatalogFile, Rendition, Title
from oca.errors import BadRequest
from oca.keys import is_valid_key

TITLE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_COUNTRY_RE = re.compile(r"[A-Z]{2}")
_DIGEST_RE = re.compile(r"[0-9a-f]{32}")
KINDS = ("video", "audio", "subtitles")


def check_title_id(value: object) -> str:
    if not isinstance(value, str) or not TITLE_ID_RE.fullmatch(value):
        raise BadRequest(f"not a title id (letters, digits, '_' or '-', at most 64): {str(value)[:80]!r}")
    return value


def check_countries(values: object) -> frozenset[str]:
    if not isinstance(values, list | tuple | set | frozenset):
        raise BadRequest(f"countries must be a list of two-letter codes, got {values!r}")
    out = set()
    for value in values:
        if not isinstance(value, str) or not _COUNTRY_RE.fullmatch(value.strip().upper()):
            raise BadRequest(f"not a two-letter country code: {value!r}")
        out.add(value.strip().upper())
    return frozenset(out)


def title_to_json(title: Title) -> dict[str, Any]:
    return {
        "id": title.id,
        "countries": sorted(title.countries),
        "hls_master": title.hls_master,
        "dash_manifest": title.dash_manifest,
        "ingested_at": title.ingested_at,
        "size": title.size,
        "renditions": [{
            "id": r.id, "kind": r.kind, "bandwidth": r.bandwidth, "codecs": r.codecs,
            "resolution": list(r.resolution) if r.resolution else None,
            "average_bandwidth": r.average_bandwidth, "frame_rate": r.frame_rate, "playlist": r.playlist,
        } for r in title.renditions],
        "files": [{"path": f.path, "size": f.size, "digest": f.digest} for f in title.files],
    }


def title_from_json(raw: object) -> Title:
    body = _mapping(raw, "title")
    title_id = check_title_id(body.get("id"))
    prefix = f"titles/{title_id}/"
    renditions = tuple(_rendition(r, i, prefix) for i, r in enumerate(_list(body.get("renditions", []), "renditions")))
    files = tuple(_file(f, i, prefix) for i, f in enumerate(_list(body.get("files", []), "files")))
    return Title(
        id=title_id, renditions=renditions, files=files,
        countries=check_countries(body.get("countries", [])),
        hls_master=_path(body.get("hls_master"), "hls_master", prefix, optional=True),
        dash_manifest=_path(body.get("dash_manifest"), "dash_manifest", prefix, optional=True),
        ingested_at=_number(body.get("ingested_at", 0.0), "ingested_at"),
    )


def _mapping(raw: object, what: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return raw


def _list(raw: object, what: str) -> list[Any]:
    if not isinstance(raw, list):
        raise BadRequest(f"{what} must be a list")
    return raw


def _int(raw: object, what: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise BadRequest(f"{what} must be a non-negative integer, got {raw!r}")
    return raw


def _number(raw: object, what: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or raw < 0:
        raise BadRequest(f"{what} must be a non-negative number, got {raw!r}")
    return float(raw)


def _str(raw: object, what: str) -> str:
    if not isinstance(raw, str):
        raise BadRequest(f"{what} must be a string, got {raw!r}")
    return raw


def _path(raw: object, what: str, prefix: str, optional: bool = False) -> str | None:
    return None if raw is None and optional else _content_path(raw, what, prefix)


def _content_path(raw: object, what: str, prefix: str) -> str:
    if not isinstance(raw, str) or not raw.startswith(prefix) or not is_valid_key(raw):
        raise BadRequest(f"{what} must be a content path under {prefix}, got {raw!r}")
    return raw


def _rendition(raw: object, i: int, prefix: str) -> Rendition:
    where = f"renditions[{i}]"
    r = _mapping(raw, where)
    kind = r.get("kind")
    if kind not in KINDS:
        raise BadRequest(f"{where}.kind must be one of {', '.join(KINDS)}, got {kind!r}")
    resolution = r.get("resolution")
    if resolution is not None:
        if not isinstance(resolution, list) or len(resolution) != 2:
            raise BadRequest(f"{where}.resolution must be [width, height], got {resolution!r}")
        resolution = (_int(resolution[0], f"{where}.resolution"), _int(resolution[1], f"{where}.resolution"))
    average = r.get("average_bandwidth")
    rate = r.get("frame_rate")
    rid = _str(r.get("id"), f"{where}.id")
    if not rid or "/" in rid or not is_valid_key(rid):
        raise BadRequest(f"{where}.id must be a directory name, got {rid!r}")
    return Rendition(
        id=rid, kind=str(kind), bandwidth=_int(r.get("bandwidth"), f"{where}.bandwidth"),
        codecs=_str(r.get("codecs", ""), f"{where}.codecs"), resolution=resolution,
        average_bandwidth=None if average is None else _int(average, f"{where}.average_bandwidth"),
        frame_rate=None if rate is None else _number(rate, f"{where}.frame_rate"),
        playlist=_path(r.get("playlist"), f"{where}.playlist", prefix, optional=True),
    )


def _file(raw: object, i: int, prefix: str) -> CatalogFile:
    where = f"files[{i}]"
    f = _mapping(raw, where)
    digest = f.get("digest")
    if not isinstance(digest, str) or not _DIGEST_RE.fullmatch(digest):
        raise BadRequest(f"{where}.digest must be 32 lower-case hex digits (xxh3_128), got {digest!r}")
    path = _content_path(f.get("path"), f"{where}.path", prefix)
    return CatalogFile(path, _int(f.get("size"), f"{where}.size"), digest)
