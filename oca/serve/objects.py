"""The worker's local view of stored objects: metadata, the headers that never change, small bodies.

Rules kept here:
- Every entry comes from the StoreView; when the store's generation moves (an object was removed or
  replaced, or a tier changed state) the whole local cache is dropped, so a purge is seen on the next
  request, not after a TTL. A move (promotion, demotion) keeps the bytes, so it keeps the entry: a file
  that is no longer at the entry's path makes the handler forget that one key and look it up again.
- Only objects no larger than memory_cache.max_object_size are held in memory, within
  memory_cache.capacity bytes per worker; bigger ones are always sent from disk with sendfile.
- At most memory_cache.max_entries entries are kept; a new one pushes out the least recently used (and its
  body), so a worker's memory does not grow with the number of objects stored or requested.
- memory_cache.capacity bounds the bodies and the entries' own memory together (ENTRY_BYTES each): 65,536
  entries of metadata are ~96 MiB, which bodies filling the whole capacity besides them once took a worker to
  ~416 MB with a 256 MiB capacity. The least recently used bodies give way to new entries; entries stay
  bounded by max_entries alone, so a capacity of 0 still keeps headers.
- An entry that is forgotten or pushed out lets go of its body, and `generation` moves whenever the whole
  cache is dropped: what else holds an entry (oca.serve.memo) sees both, and keeps no body alive. So within
  one generation an entry whose body is not None is its key's current entry, body in memory.
- A use from outside get() and cached_body() (a memo replay, the most common hit) only sets the entry's
  `used` mark: two OrderedDict.move_to_end per hit cost more than the rest of the look-up. The mark is a
  move to the most recent end deferred until it matters: when the oldest entry or body is about to be pushed
  out and is marked, it goes to the recent end of both orders instead, unmarked (a second chance, as CLOCK
  gives). An object used since it was last placed is never the one pushed out; among the marked ones the
  order is when the eviction reached them, not when they were used.
- A body of SENDFILE_FROM bytes or more also keeps its file's descriptor open (a dup of the one it was read
  from) while the body is held, at most a quarter of RLIMIT_NOFILE's soft limit of them: a whole-body hit
  (a memo replay or the handler's) sends such a body by sendfile (under wrk a 64 KiB body costs the kernel
  28-68% less that way than copied from memory; an 8 KiB one more: README, memory or sendfile). The
  descriptor is closed whenever the body is let go, and nothing holds it past one synchronous send (what the
  socket does not take at once goes from the bytes in memory; a response reads `fd` from the entry when it
  is sent), so a descriptor the cache closes is never one a connection still uses.
"""

from __future__ import annotations

import os
import resource
from collections import OrderedDict
from dataclasses import dataclass

from oca.config import HttpConfig, MemoryCacheConfig
from oca.http.cmsd import static_field
from oca.http.conditionals import http_date
from oca.http.media import is_playlist, media_type
from oca.serve.messages import ObjectTruncated
from oca.storage import ObjectInfo, StoreView

# a worker's memory for one entry beside its body, measured with tracemalloc on 4 KiB segments under titles/:
# the ObjectInfo and its strings, the fixed headers, the cached 200 head and its Date, the access-log fields, the
# OrderedDict's node (1,540 bytes)
ENTRY_BYTES = 1536
# bytes from which a replay sends the body by sendfile (measured under wrk: 16 KiB cheaper copied, 32 KiB sent)
SENDFILE_FROM = 24 << 10


@dataclass(slots=True)
class CachedObject:
    """A worker's cached view of one stored object: its metadata, the headers built once, maybe its bytes."""

    info: ObjectInfo
    etag: str
    last_modified: int
    content_type: str
    fixed_headers: bytes  # headers shared by every 200/206 of this object (no status line, no length)
    hit_status: bytes  # the Cache-Status header of a hit (RFC 9211), naming the tier
    body: bytes | None = None  # the whole object, once it has been read for the memory cache
    head: bytes = b""  # the last keep-alive 200 head built for it...
    head_date: bytes = b""  # ...and the Date value it carries (the head is reused within that second)
    log_fields: str = ""  # the access log's fixed fields of a plain GET of b"/" + key (accesslog.fast_fields)
    stale: bool = False  # soft-purged: revalidate upstream before serving it again
    fd: int = -1  # a descriptor of its file kept open beside the body (SENDFILE_FROM bytes and up), or -1
    used: bool = False  # used since the orders last placed it (ObjectCache._oldest): a deferred move to the end
    unreported: int = 0  # plain hits not yet in the worker's per-key counts (oca.serve.stats, HitCounted)

    @property
    def key(self) -> str:
        return self.info.key


class ObjectCache:
    """Key -> CachedObject (at most `memory.max_entries`, least recently used out first), invalidated
    wholesale when the store's generation moves."""

    def __init__(self, view: StoreView, http: HttpConfig, memory: MemoryCacheConfig) -> None:
        self._view = view
        self._http = http
        self._max_body = memory.max_object_size
        self._capacity = memory.capacity
        self._max_entries = memory.max_entries
        self._entries: OrderedDict[str, CachedObject] = OrderedDict()  # least recently used first
        self._bodies: OrderedDict[str, int] = OrderedDict()  # keys whose body is in memory, oldest first
        self._body_bytes = 0
        self._max_fds = resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 4  # the rest: clients, files, links
        self.kept_fds = 0
        self.stale: set[str] = set()  # soft-purged keys (the fill link keeps this set current)
        self.generation = 0  # moves each time the whole cache is dropped (clear)
        self.generation_word = view.generation_word  # the store's (StoreView): what sync() looks at first

    def sync(self) -> int:
        """Drop everything if the store's generation moved since we last looked; the cache's generation."""
        if self._view.changed():
            self.clear()
        return self.generation

    def get(self, key: str) -> CachedObject | None:
        if self._view.changed():
            self.clear()
        entries = self._entries
        entry = entries.get(key)
        if entry is not None:
            entries.move_to_end(key)
            return entry
        info = self._view.lookup(key)
        if info is None:
            return None
        entry = self._make_entry(info)
        if len(entries) >= self._max_entries:
            self.forget(self._oldest(entries))
        entries[key] = entry
        self._shed_bodies(0)
        return entry

    def __len__(self) -> int:
        return len(self._entries)

    def forget(self, key: str) -> None:
        """Drop one key (its file vanished under us); the next get() asks the view again."""
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._let_go(entry)  # nobody serves a forgotten entry's bytes again (oca.serve.memo)
        size = self._bodies.pop(key, None)
        if size is not None:
            self._body_bytes -= size

    def forget_all(self, keys: list[str]) -> None:
        for key in keys:
            self.forget(key)

    def clear(self) -> None:
        for entry in self._entries.values():
            self._let_go(entry)  # as forget() does: a body held means the key's current entry, in any generation
        self._entries.clear()
        self._bodies.clear()
        self._body_bytes = 0
        self.generation += 1

    def touch(self, entry: CachedObject) -> bool:
        """Count a use of `entry` and its body in memory, as get() and cached_body() would; False (nothing
        counted) unless `entry` holds its body (then, within this generation, it is its key's current entry).
        The memo does the same inline: `used` set, no call."""
        if entry.body is None:
            return False
        entry.used = True
        return True

    def cached_body(self, entry: CachedObject) -> bytes | None:
        """The body if it is in memory (and mark it recently used)."""
        if entry.body is not None:
            self._bodies.move_to_end(entry.info.key)
        return entry.body

    def load_body(self, entry: CachedObject, fd: int) -> bytes | None:
        """Read the body from `fd` into memory when it is small enough to keep; None when it is not."""
        size = entry.info.size
        if size > self._max_body or size + len(self._entries) * ENTRY_BYTES > self._capacity:
            return None  # no room beside the entries' own memory even with no other body: sent from disk
        data = os.pread(fd, size, 0)
        if len(data) != size:
            raise ObjectTruncated(f"object file holds {len(data)} bytes, the index says {size}")
        self._shed_bodies(size)
        entry.body = data
        if size >= SENDFILE_FROM and self.kept_fds < self._max_fds and entry.fd < 0:
            entry.fd = os.dup(fd)
            self.kept_fds += 1
        self._bodies[entry.info.key] = size
        self._body_bytes += size
        return data

    def _let_go(self, entry: CachedObject) -> None:
        """`entry` no longer holds its body, nor its kept descriptor."""
        entry.body = None
        if entry.fd >= 0:
            os.close(entry.fd)
            entry.fd = -1
            self.kept_fds -= 1

    def _make_entry(self, info: ObjectInfo) -> CachedObject:
        etag = f'"{info.digest}"'
        last_modified = int(info.stored_at)
        content_type = media_type(info.key)
        cache_control = (
            self._http.playlist_cache_control if is_playlist(info.key) else self._http.segment_cache_control
        )
        fixed = (
            f"Content-Type: {content_type}\r\n"
            f"ETag: {etag}\r\n"
            f"Last-Modified: {http_date(last_modified)}\r\n"
            f"Cache-Control: {cache_control}\r\n"
            "Accept-Ranges: bytes\r\n"
        ).encode("latin-1") + (static_field(info.key) if self._http.cmsd else b"")  # CTA-5006: per object
        hit_status = b"Cache-Status: oca; hit; detail=" + info.tier.encode("ascii") + b"\r\n"
        return CachedObject(info, etag, last_modified, content_type, fixed, hit_status, stale=info.key in self.stale)

    def _shed_bodies(self, extra: int) -> None:
        """Drop the least recently used bodies until `extra` more bytes fit in the capacity beside the bodies
        kept and every entry's ENTRY_BYTES."""
        room = self._capacity - extra - len(self._entries) * ENTRY_BYTES
        bodies = self._bodies
        while self._body_bytes > room and bodies:
            old_key = self._oldest(bodies)
            self._body_bytes -= bodies.pop(old_key)
            old = self._entries.get(old_key)
            if old is not None:
                self._let_go(old)

    def _oldest(self, order: OrderedDict[str, CachedObject] | OrderedDict[str, int]) -> str:
        """The key at the old end of `order` (the entries or the bodies) that was not used since it was placed
        there; each marked one on the way goes to the recent end of both orders, unmarked. At most one pass:
        every step clears a mark."""
        entries, bodies = self._entries, self._bodies
        while True:
            key = next(iter(order))
            entry = entries.get(key)
            if entry is None or not entry.used:
                return key
            entry.used = False
            entries.move_to_end(key)
            if key in bodies:
                bodies.move_to_end(key)
