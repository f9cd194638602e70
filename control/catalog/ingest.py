"""Ingest one packaged title (HLS and/or DASH) from a directory or an origin URL into a model.Title.

Rules kept here:
- The package root maps to `titles/<title_id>/`: a file at `<root>/720p/seg_1.m4s` is catalogued as
  `titles/<title_id>/720p/seg_1.m4s`, the key boxes cache it under. Every reference must stay inside the
  root (no `..` above it, no other host) and make a valid content key, or ingest stops with BadRequest.
- Entry points: a directory holds `master.m3u8` and/or `manifest.mpd` (else the one top-level .m3u8 with
  variants and the one .mpd); a URL names one playlist or MPD, or ends in `/` (then both default names are
  tried). A rendition's id is the first directory of its files under the root.
- Every file is read whole once to record its size and xxh3_128 digest (what a box's storage checks).
- Countries come from the caller or, failing that, a `countries.txt` sidecar at the root (codes separated by
  commas or white space, `#` comments); neither means the title may play everywhere.
- HTTP goes through the injected aiohttp session, a few files at a time, each read bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import os
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urljoin, urlsplit

import aiohttp
import xxhash

from control.catalog import dash, hls
from control.catalog.codec import check_countries, check_title_id
from control.model import CatalogFile, Rendition, Title
from oca.errors import BadRequest, NotFound
from oca.keys import is_valid_key

HLS_NAME, DASH_NAME, COUNTRIES_NAME = "master.m3u8", "manifest.mpd", "countries.txt"
MAX_MANIFEST_BYTES = 16 << 20
_CHUNK = 1 << 20
_PARALLEL = 8


class Source(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def url_base(self) -> str | None: ...  # absolute references must start with this (None: none allowed)

    async def read(self, rel: str) -> bytes | None: ...  # None when absent

    async def digest(self, rel: str) -> tuple[int, str]: ...

    async def entries(self) -> tuple[str | None, str | None]: ...  # (HLS entry, DASH entry), relative


@dataclass
class DirectorySource:
    root: str

    @property
    def name(self) -> str:
        return self.root

    @property
    def url_base(self) -> str | None:
        return None

    def _path(self, rel: str) -> str:
        return os.path.join(self.root, *rel.split("/"))

    async def read(self, rel: str) -> bytes | None:
        def read() -> bytes | None:
            try:
                with open(self._path(rel), "rb") as fh:
                    return fh.read(MAX_MANIFEST_BYTES + 1)
            except FileNotFoundError:
                return None
        return await asyncio.to_thread(read)

    async def digest(self, rel: str) -> tuple[int, str]:
        def digest() -> tuple[int, str]:
            hasher, size = xxhash.xxh3_128(), 0
            try:
                with open(self._path(rel), "rb") as fh:
                    while chunk := fh.read(_CHUNK):
                        hasher.update(chunk)
                        size += len(chunk)
            except OSError as exc:
                raise NotFound(f"{self.root}: cannot read {rel}: {exc.strerror}") from None
            return size, hasher.hexdigest()
        return await asyncio.to_thread(digest)

    async def entries(self) -> tuple[str | None, str | None]:
        names = sorted(os.listdir(self.root))
        m3u8 = HLS_NAME if HLS_NAME in names else None
        mpd = DASH_NAME if DASH_NAME in names else None
        if m3u8 is None:
            masters = [n for n in names if n.endswith(".m3u8") and hls.is_multivariant(
                (await self.read(n) or b"").decode("utf-8", "replace"))]
            m3u8 = masters[0] if len(masters) == 1 else None
        if mpd is None:
            mpds = [n for n in names if n.endswith(".mpd")]
            mpd = mpds[0] if len(mpds) == 1 else None
        return m3u8, mpd


@dataclass
class HttpSource:
    url: str
    session: aiohttp.ClientSession
    timeout: float = 30.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise BadRequest(f"not an http(s) URL: {self.url!r}")
        self.base = self.url if self.url.endswith("/") else self.url.rsplit("/", 1)[0] + "/"
        self.entry = "" if self.url.endswith("/") else self.url.rsplit("/", 1)[1]

    @property
    def name(self) -> str:
        return self.url

    @property
    def url_base(self) -> str | None:
        return self.base

    async def read(self, rel: str) -> bytes | None:
        try:
            async with self.session.get(urljoin(self.base, rel), timeout=aiohttp.ClientTimeout(self.timeout)) as resp:
                if resp.status == 404:
                    return None
                if resp.status != 200:
                    raise NotFound(f"{self.base}{rel}: origin answered {resp.status}")
                return await resp.content.read(MAX_MANIFEST_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise NotFound(f"{self.base}{rel}: cannot fetch: {exc.__class__.__name__} {exc}") from None

    async def digest(self, rel: str) -> tuple[int, str]:
        hasher, size = xxhash.xxh3_128(), 0
        try:
            async with self.session.get(urljoin(self.base, rel), timeout=aiohttp.ClientTimeout(self.timeout)) as resp:
                if resp.status != 200:
                    raise NotFound(f"{self.base}{rel}: origin answered {resp.status}")
                async for chunk in resp.content.iter_chunked(_CHUNK):
                    hasher.update(chunk)
                    size += len(chunk)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise NotFound(f"{self.base}{rel}: cannot fetch: {exc.__class__.__name__} {exc}") from None
        return size, hasher.hexdigest()

    async def entries(self) -> tuple[str | None, str | None]:
        if self.entry.endswith(".m3u8"):
            return self.entry, None
        if self.entry.endswith(".mpd"):
            return None, self.entry
        if self.entry:
            raise BadRequest(f"{self.url}: expected a .m3u8 or .mpd URL, or a directory URL ending in /")
        return HLS_NAME, DASH_NAME


def _text(data: bytes, name: str) -> str:
    if len(data) > MAX_MANIFEST_BYTES:
        raise BadRequest(f"{name}: larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadRequest(f"{name}: not UTF-8 text") from None


def resolve(parent: str, ref: str, source: Source) -> str:
    """A reference found in `parent` (relative to the root) -> a path relative to the root."""
    if "://" in ref:
        base = source.url_base
        if base is None or not ref.startswith(base):
            raise BadRequest(f"{parent}: {ref!r} is outside the package")
        ref = ref[len(base):]
        parent = ""
    ref = ref.split("?", 1)[0].split("#", 1)[0]
    if ref.startswith("/"):
        raise BadRequest(f"{parent}: absolute reference {ref!r} is outside the package")
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(parent), ref))
    if joined.startswith("../") or joined in ("..", ".") or not is_valid_key(joined):
        raise BadRequest(f"{parent}: reference {ref!r} is outside the package or not a valid content path")
    return joined


@dataclass(frozen=True, slots=True)
class Ingested:
    title: Title
    mpd: str | None  # the packaged MPD's text: session MPDs are written from it


async def ingest(source: Source, title_id: str, *, countries: Iterable[str] | None = None,
                 now: float = 0.0) -> Ingested:
    """Read the package at `source` and describe it as a Title (sizes and digests of every file)."""
    check_title_id(title_id)
    m3u8, mpd = await source.entries()
    files: dict[str, None] = {}
    renditions: dict[str, Rendition] = {}
    hls_master = dash_manifest = mpd_text = None
    if m3u8 is not None:
        data = await source.read(m3u8)
        if data is not None:
            hls_master = m3u8
            await _ingest_hls(source, m3u8, _text(data, m3u8), files, renditions)
    if mpd is not None:
        data = await source.read(mpd)
        if data is not None:
            dash_manifest, mpd_text = mpd, _text(data, mpd)
            _ingest_dash(source, mpd, data, files, renditions)
    if hls_master is None and dash_manifest is None:
        raise NotFound(f"{source.name}: no HLS multivariant playlist ({HLS_NAME}) or DASH MPD ({DASH_NAME}) found")
    if countries is None:
        sidecar = await source.read(COUNTRIES_NAME)
        countries = _countries(sidecar.decode("utf-8", "replace")) if sidecar else []
    allowed = check_countries(list(countries))
    semaphore = asyncio.Semaphore(_PARALLEL)

    async def one(rel: str) -> CatalogFile:
        async with semaphore:
            size, digest = await source.digest(rel)
        return CatalogFile(f"titles/{title_id}/{rel}", size, digest)

    catalogued = await asyncio.gather(*(one(rel) for rel in files))
    prefix = f"titles/{title_id}/"
    title = Title(
        id=title_id,
        renditions=tuple(_prefixed(r, prefix) for r in renditions.values()),
        files=tuple(catalogued), countries=allowed,
        hls_master=prefix + hls_master if hls_master else None,
        dash_manifest=prefix + dash_manifest if dash_manifest else None,
        ingested_at=now)
    return Ingested(title, mpd_text)


def _prefixed(r: Rendition, prefix: str) -> Rendition:
    return Rendition(r.id, r.kind, r.bandwidth, r.codecs, r.resolution, r.average_bandwidth, r.frame_rate,
                     prefix + r.playlist if r.playlist else None)


def _rendition_id(rel: str, fallback: str) -> str:
    return rel.split("/", 1)[0] if "/" in rel else fallback


async def _ingest_hls(source: Source, entry: str, text: str, files: dict[str, None],
                      renditions: dict[str, Rendition]) -> None:
    try:
        master = hls.parse_multivariant(text, entry)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    files[entry] = None
    playlists: list[tuple[str, Rendition | None]] = []
    for v in master.variants:
        rel = resolve(entry, v.uri, source)
        rid = _rendition_id(rel, posixpath.splitext(rel)[0])
        playlists.append((rel, Rendition(rid, "video", v.bandwidth, v.codecs, v.resolution, v.average_bandwidth,
                                         v.frame_rate, rel)))
    for m in master.media:
        rel = resolve(entry, m.uri, source)
        kind = {"AUDIO": "audio", "SUBTITLES": "subtitles"}.get(m.type, "video")
        playlists.append((rel, Rendition(_rendition_id(rel, posixpath.splitext(rel)[0]), kind, 0, playlist=rel)))
    playlists += [(resolve(entry, uri, source), None) for uri in master.iframe_uris]
    for rel, rendition in playlists:
        data = await source.read(rel)
        if data is None:
            raise NotFound(f"{source.name}: {rel} (named in {entry}) is missing")
        try:
            refs = hls.media_files(_text(data, rel), rel)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        files[rel] = None
        for ref in refs:
            files[resolve(rel, ref, source)] = None
        if rendition is not None and rendition.id not in renditions:
            renditions[rendition.id] = rendition


def _ingest_dash(source: Source, entry: str, data: bytes, files: dict[str, None],
                 renditions: dict[str, Rendition]) -> None:
    if len(data) > MAX_MANIFEST_BYTES:
        raise BadRequest(f"{entry}: larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        reps = dash.parse_mpd(data, entry)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    files[entry] = None
    for rep in reps:
        rels = [resolve(entry, ref, source) for ref in rep.files]
        for rel in rels:
            files[rel] = None
        rid = _rendition_id(rels[0], rep.id) if rels else rep.id
        if rid not in renditions:
            renditions[rid] = Rendition(rid, rep.kind, rep.bandwidth, rep.codecs, rep.resolution,
                                        frame_rate=rep.frame_rate)


def _countries(text: str) -> list[str]:
    lines = [line.split("#", 1)[0] for line in text.splitlines()]
    return [code.upper() for code in re.split(r"[\s,]+", " ".join(lines)) if code]


async def ingest_source(source: str, title_id: str, *, session: aiohttp.ClientSession | None = None,
                        countries: Iterable[str] | None = None, now: float = 0.0) -> Ingested:
    """Ingest from a directory path or an http(s) URL (a session is required for URLs)."""
    if source.startswith(("http://", "https://")):
        if session is None:
            raise BadRequest("a URL source needs an HTTP session")
        return await ingest(HttpSource(source, session), title_id, countries=countries, now=now)
    if not os.path.isdir(source):
        raise NotFound(f"{source}: not a directory or an http(s) URL")
    return await ingest(DirectorySource(os.path.abspath(source)), title_id, countries=countries, now=now)
