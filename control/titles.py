"""The catalog as the service serves it: titles in memory over the store, with their manifest templates.

Rules kept here:
- The store is the source of truth; memory is a cache. A title not in memory is looked up in the store
  before it is called unknown, so a title ingested through another replica plays here too.
- Templates (HlsTemplate, DashTemplate) are built once per stored version of a title, on first use.
  A title whose package cannot make a template answers 404 for that protocol, naming why.
- Store calls run off the event loop (the injected `blocking`). Every DASH title's MPD is read when the
  catalog is (re)loaded, so playlists and MPDs of known titles never wait on the store.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from control.manifests import DashTemplate, HlsTemplate
from control.model import Title
from control.store import StateStore
from oca.errors import NotFound

Blocking = Callable[..., Awaitable[Any]]


@dataclass
class LiveCatalog:
    store: StateStore
    blocking: Blocking
    _titles: dict[str, Title] = field(default_factory=dict)
    _hls: dict[str, HlsTemplate] = field(default_factory=dict)
    _dash: dict[str, DashTemplate] = field(default_factory=dict)
    _changed: list[Callable[[], None]] = field(default_factory=list)

    async def load(self) -> None:
        titles: list[Title] = await self.blocking(self.store.titles)
        self._titles = {t.id: t for t in titles}
        self._hls.clear()
        self._dash.clear()
        self._notify()
        await self.warm()

    async def reload(self) -> None:
        """The titles as the store holds them now (another replica may have ingested some): the templates of
        titles that did not change are kept."""
        titles: list[Title] = await self.blocking(self.store.titles)
        fresh = {t.id: t for t in titles}
        if fresh == self._titles:
            return
        for cache in (self._hls, self._dash):
            for title_id in [t for t in cache if fresh.get(t) != self._titles.get(t)]:
                del cache[title_id]
        self._titles = fresh
        self._notify()
        await self.warm()

    async def warm(self) -> None:
        """Read every DASH title's MPD now, so MPDs are served from memory while the store is unreachable."""
        for title in list(self._titles.values()):
            if title.dash_manifest is not None and title.id not in self._dash:
                with contextlib.suppress(NotFound):
                    await self.dash(title)

    def on_change(self, callback: Callable[[], None]) -> None:
        self._changed.append(callback)

    def _notify(self) -> None:
        for callback in self._changed:
            callback()

    def titles(self) -> list[Title]:
        return sorted(self._titles.values(), key=lambda t: t.id)

    def file_counts(self) -> dict[str, int]:
        return {t.id: len(t.files) for t in self._titles.values()}

    async def get(self, title_id: str) -> Title | None:
        title = self._titles.get(title_id)
        if title is None:
            title = await self.blocking(self.store.get_title, title_id)
            if title is not None:
                self._titles[title_id] = title
                self._notify()
        return title

    async def require(self, title_id: str) -> Title:
        title = await self.get(title_id)
        if title is None:
            raise NotFound(f"unknown title {title_id!r}")
        return title

    async def put(self, title: Title, mpd: str | None) -> None:
        await self.blocking(self.store.put_title, title, mpd)
        self._titles[title.id] = title
        self._hls.pop(title.id, None)
        self._dash.pop(title.id, None)
        if mpd is not None and title.dash_manifest is not None:  # served from memory from now on
            with contextlib.suppress(ValueError):
                self._dash[title.id] = DashTemplate.for_title(title, mpd)
        self._notify()

    def hls(self, title: Title) -> HlsTemplate:
        template = self._hls.get(title.id)
        if template is None:
            try:
                template = HlsTemplate.build(title)
            except ValueError as exc:
                raise NotFound(f"title {title.id!r} has no HLS package: {exc}") from None
            self._hls[title.id] = template
        return template

    async def dash(self, title: Title) -> DashTemplate:
        template = self._dash.get(title.id)
        if template is None:
            mpd: str | None = await self.blocking(self.store.get_mpd, title.id)
            if mpd is None or title.dash_manifest is None:
                raise NotFound(f"title {title.id!r} has no DASH package")
            try:
                template = DashTemplate.for_title(title, mpd)
            except ValueError as exc:
                raise NotFound(f"title {title.id!r}: its MPD cannot be served: {exc}") from None
            self._dash[title.id] = template
        return template
