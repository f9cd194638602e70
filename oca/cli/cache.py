"""`oca cache import|ls|stat|evict|why`: operate on a box's cache.

When the box is running it owns the storage, so these commands go through its admin API; when it is
not, they open the storage directly (the owner lock tells which).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import click

from oca.admin.app import object_json
from oca.bounded import run_bounded
from oca.cli.format import bytes_option, sizes, table
from oca.cli.options import config_option, timeout_option
from oca.config import BoxConfig, load_box_config
from oca.errors import Conflict, NotFound, OcaError
from oca.keys import is_valid_key
from oca.storage import Store
from oca.wire.admin_client import AdminClient

# batches stored at once, as the box does (admin IMPORT_BATCHES_AT_ONCE): with the store opened here, four at once
# made 904 objects/s and two 962 (20,000 files of 4 KiB, load 4; README: Measured): more only contend in the kernel
_IMPORT_THREADS = 2
# files per batch, the admin API's limit (MAX_IMPORT_BATCH): each batch pays one journal and one index commit
# (two fsyncs of SQLite's WAL) and shares two syncfs, so fewer, larger batches pay them less often per file
_IMPORT_BATCH = 1024


class _Target:
    """The box's storage: the running box's admin API, or the store opened here."""

    def __init__(self, config: BoxConfig, timeout: float) -> None:
        self.store: Store | None = None
        self.admin: AdminClient | None = None
        try:
            self.store = Store.open(config.storage)
        except Conflict:
            self.admin = AdminClient.for_box(config, timeout)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    def put_many(self, items: list[tuple[str, str, int]], hot: bool, pin: bool) -> list[OcaError | None]:
        """Store many (path, key, size) in one batch (one index commit): the store opened here, or a running
        box's admin API (/cache/import-batch, one request per batch). Per item, its error or None."""
        if self.store is not None:
            # the walk's sizes: no stat per file again (a file that changed since is refused for its size)
            return [r if isinstance(r, OcaError) else None
                    for r in self.store.put_files([(path, key) for path, key, _ in items], hot=hot, pin=pin,
                                                  sizes=[size for _, _, size in items])]
        assert self.admin is not None
        body = {"items": [{"src": os.path.abspath(path), "key": key} for path, key, _ in items],
                "hot": hot, "pin": pin}
        answer = self.admin.request("POST", "/cache/import-batch", body).get("results")
        if not isinstance(answer, list) or len(answer) != len(items) or not all(isinstance(r, dict) for r in answer):
            raise OcaError(f"the box answered /cache/import-batch without one result per file ({len(items)})")
        return [OcaError(str(r["error"])) if "error" in r else None for r in answer]

    def list(self, prefix: str) -> list[dict[str, Any]]:
        if self.store is not None:
            return [object_json(o) for o in self.store.list(prefix)]
        assert self.admin is not None
        query = f"?prefix={_quote(prefix)}" if prefix else ""
        objects: list[dict[str, Any]] = self.admin.request("GET", "/inventory" + query)["objects"]
        return objects

    def stat(self, key: str) -> dict[str, Any]:
        if self.store is not None:
            info = self.store.get(key)
            if info is None:
                raise NotFound(f"{key} is not in the cache")
            return object_json(info)
        assert self.admin is not None
        result: dict[str, Any] = self.admin.request("GET", "/cache/objects/" + _quote(key))
        return result

    def evict(self, key: str | None, prefix: str | None) -> int:
        if self.store is not None:
            if prefix is not None:
                return self.store.evict_prefix(prefix)
            assert key is not None
            if not self.store.evict(key):
                raise NotFound(f"{key} is not in the cache")
            return 1
        assert self.admin is not None
        if prefix is not None:
            return int(self.admin.request("POST", "/cache/evict", {"prefix": prefix})["evicted"])
        return int(self.admin.request("DELETE", "/cache/objects/" + _quote(key or ""))["evicted"])


def _quote(text: str) -> str:
    return quote(text, safe="/")


@contextlib.contextmanager
def _target(config_path: str, timeout: float) -> Iterator[_Target]:
    target = _Target(load_box_config(config_path), timeout)
    try:
        yield target
    finally:
        target.close()


@click.group()
def cache() -> None:
    """Import, list, inspect and evict cached objects."""


@cache.command("import")
@config_option
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--hot", is_flag=True, help="Place the objects on the fastest tier.")
@click.option("--pin", is_flag=True, help="Never evict the objects (until unpinned).")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@bytes_option
@timeout_option(600.0)
def import_(config_path: str, directory: str, hot: bool, pin: bool, as_json: bool, raw_bytes: bool,
            timeout: float) -> None:
    """Load every file under DIRECTORY; each key is the file's path relative to DIRECTORY."""
    total = skipped = 0
    interactive = sys.stderr.isatty()
    if interactive:
        for _, key, size in _walk(directory):  # a first pass for the progress bar: counts only, no list
            if is_valid_key(key):
                total += size
    done = failed = 0
    done_bytes = 0
    started = time.monotonic()

    def valid_files() -> Iterator[tuple[str, str, int]]:
        nonlocal skipped
        for path, key, size in _walk(directory):
            if is_valid_key(key):
                yield path, key, size
            else:
                skipped += 1
                click.echo(f"oca: skipped {path}: {key!r} is not a valid content key", err=True)

    valid = valid_files()

    def put(batch: list[tuple[str, str, int]]) -> list[OcaError | None]:
        return target.put_many(batch, hot, pin)

    with _target(config_path, timeout) as target, click.progressbar(
        length=total, label="importing", file=sys.stderr, show_eta=True, show_percent=True,
        hidden=not interactive,
    ) as bar, ThreadPoolExecutor(max_workers=_IMPORT_THREADS) as pool:
        # batches of files, a few at a time: copies and fsyncs overlap and the index is written once per
        # batch; files are walked as they are imported, so memory stays flat however many there are
        for batch, future in run_bounded(pool, put, _batches(valid, _IMPORT_BATCH), 2 * _IMPORT_THREADS):
            try:
                results = future.result()
            except OcaError:  # the box is unreachable, refuses the token or the batch: stop
                pool.shutdown(wait=False, cancel_futures=True)
                raise
            for (_, key, size), result in zip(batch, results, strict=True):
                if isinstance(result, OcaError):
                    failed += 1
                    click.echo(f"oca: failed {key}: {result}", err=True)
                else:
                    done += 1
                    done_bytes += size
                bar.update(size)
    seconds = time.monotonic() - started
    if as_json:
        click.echo(json.dumps({"imported": done, "bytes": done_bytes, "failed": failed, "skipped": skipped,
                               "seconds": round(seconds, 3)}, indent=2))
    else:
        click.echo(f"imported {done} objects ({sizes(raw_bytes)(done_bytes)}) in {seconds:.1f}s; "
                   f"{failed} failed, {skipped} skipped")
    if failed:
        sys.exit(1)


def _batches(items: Iterator[tuple[str, str, int]], size: int) -> Iterator[list[tuple[str, str, int]]]:
    batch: list[tuple[str, str, int]] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _walk(directory: str, prefix: str = "") -> Iterator[tuple[str, str, int]]:
    """(path, key, size) of every regular file under `directory` (symbolic links skipped), in name order.

    One lstat per file at most: scandir's entry types come with the directory listing, and the size is the
    entry's own lstat (os.walk plus isfile, islink and getsize asked the kernel three more times per file)."""
    try:
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:  # an unreadable directory is skipped, as os.walk does
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(entry.path, f"{prefix}{entry.name}/")
        elif entry.is_file(follow_symlinks=False):
            yield entry.path, prefix + entry.name, entry.stat(follow_symlinks=False).st_size


@cache.command("ls")
@config_option
@click.option("--prefix", default="", help="Only keys that start with this.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@bytes_option
@timeout_option()
def ls(config_path: str, prefix: str, as_json: bool, raw_bytes: bool, timeout: float) -> None:
    """List cached objects: key, size, tier, pinned."""
    with _target(config_path, timeout) as target:
        objects = target.list(prefix)
    if as_json:
        click.echo(json.dumps({"objects": objects}, indent=2))
        return
    size = sizes(raw_bytes)
    rows = [("KEY", "SIZE", "TIER", "PINNED")]
    rows += [(o["key"], size(o["size"]), o["tier"], "yes" if o["pinned"] else "no") for o in objects]
    for line in table(rows):
        click.echo(line)
    click.echo(f"{len(objects)} objects, {size(sum(o['size'] for o in objects))}", err=True)


@cache.command("stat")
@config_option
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="Accepted for symmetry: the output is JSON either way.")
@timeout_option()
def stat(config_path: str, key: str, as_json: bool, timeout: float) -> None:
    """Show one object's size, digest, tier and flags as JSON."""
    with _target(config_path, timeout) as target:
        click.echo(json.dumps(target.stat(key), indent=2))


@cache.command("why")
@config_option
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@timeout_option()
def why(config_path: str, key: str, as_json: bool, timeout: float) -> None:
    """The history of KEY on the running box: held or not, filled when and from where, evicted or purged
    when and why, and what its next miss would be counted as."""
    if not is_valid_key(key):
        raise click.BadParameter(f"not a valid content key: {key!r}", param_hint="KEY")
    admin = AdminClient.for_box(load_box_config(config_path), timeout)
    report: dict[str, Any] = admin.request("GET", "/cache/why/" + _quote(key))
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for line in why_lines(report):
        click.echo(line)


def why_lines(report: dict[str, Any]) -> list[str]:
    """`oca cache why` as text: the state now, then the events, oldest first."""
    held = report.get("held")
    if held:
        now = f"held on tier {held['tier']}, {held['size']} bytes{', pinned' if held.get('pinned') else ''}"
        if report.get("stale"):
            now += "; stale (soft-purged): its next request revalidates it"
    elif report.get("sliced"):
        sliced = report["sliced"]
        now = f"stored in slices: {sliced['slices_held']} held of {sliced['total']} bytes"
    else:
        now = "not held" + (", being filled now" if report.get("filling") else "")
    lines = [f"{report['key']}: {now}"]
    if report.get("would_miss_as"):
        lines.append(f"a request now would be a miss: {report['would_miss_as']}")
    events = report.get("events", [])
    for event in events:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(event["at"]))
        ago = max(0.0, time.time() - event["at"])
        lines.append(f"  {stamp}Z ({ago:.0f}s ago)  {event['event']:<12} {event['detail']}")
    if not events:
        lines.append("  no events remembered for this key")
    lines.append(f"(remembered: {report.get('remembered', '')})")
    return lines


@cache.command("evict")
@config_option
@click.argument("key", required=False)
@click.option("--prefix", default=None, help="Evict every key that starts with this.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@timeout_option()
def evict(config_path: str, key: str | None, prefix: str | None, as_json: bool, timeout: float) -> None:
    """Remove KEY (or every key under --prefix) from every tier."""
    if (key is None) == (prefix is None):
        raise click.UsageError("give either KEY or --prefix")
    with _target(config_path, timeout) as target:
        count = target.evict(key, prefix)
    click.echo(json.dumps({"evicted": count}) if as_json else f"evicted {count} objects")
