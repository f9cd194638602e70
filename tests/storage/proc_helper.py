"""A storage owner run in a child process by the crash and cross-process tests (not a test module).

    python proc_helper.py CONFIG_JSON loop N SIZE     put N objects, printing "done <key> <digest>" after each
    python proc_helper.py CONFIG_JSON die-at POINT    die with os._exit at POINT during one put/evict
    python proc_helper.py CONFIG_JSON serve           read commands from stdin, answer "ok ..." per line:
                                                      put KEY PATH | hot KEY PATH | evict KEY | quit

CONFIG_JSON: {"state_dir": ..., "tiers": [[name, path, capacity], ...]}.
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile

from oca.config.model import StorageConfig, TierConfig
from oca.storage import Store, engine, index, layout


def config_from(text: str) -> StorageConfig:
    raw = json.loads(text)
    return StorageConfig(state_dir=raw["state_dir"], policy=raw["policy"],
                         tiers=tuple(TierConfig(n, p, c, a) for n, p, c, a in raw["tiers"]))


def scratch(config: StorageConfig) -> str:
    """A folder for source files beside the state_dir (inside the test's tmp_path)."""
    return tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(config.state_dir)), prefix="helper-src-")


def loop(store: Store, count: int, size: int) -> None:
    folder = scratch(store.config)
    paths = []
    for i in range(count):  # sources first, so a kill after a "done" line lands inside the next put
        paths.append(os.path.join(folder, f"src{i}"))
        with open(paths[-1], "wb") as f:
            f.write(random.Random(i).randbytes(size + i))
    for i, path in enumerate(paths):
        info = store.put_file(path, f"titles/crash/{i:03d}", hot=i % 3 == 0)
        print("done", info.key, info.digest, flush=True)


def die(*_args: object, **_kwargs: object) -> None:
    os._exit(9)


def die_at(store: Store, point: str) -> None:
    folder = scratch(store.config)
    path = os.path.join(folder, "src")
    with open(path, "wb") as f:
        f.write(b"x" * 1000)
    store.put_file(path, "victim")
    print("ready", flush=True)
    if point == "before-index-put":  # files renamed into place, index row not written
        index.Index.put = die  # type: ignore[method-assign]
        store.put_file(path, "new")
    elif point == "before-unlink":  # index row deleted (journalled), files not yet removed
        layout.TierLayout.remove = die  # type: ignore[method-assign]
        store.evict("victim")
    elif point == "between-renames":  # the object is in place, its sidecar is not
        real_replace = os.replace

        def replace_then_die(src: str, dst: str) -> None:
            real_replace(src, dst)
            if "/objects/" in dst:
                os._exit(9)

        os.replace = replace_then_die  # type: ignore[assignment]
        store.put_file(path, "new")
    elif point == "mid-promotion":  # the upper copy is installed and indexed, the lower not yet removed
        engine.Engine.remove_files = die  # type: ignore[method-assign]
        store.record_hits({"victim": 100})
    raise SystemExit(f"unknown point {point!r}")


def serve(store: Store) -> None:
    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd in ("put", "hot"):
            info = store.put_file(args[1], args[0], hot=cmd == "hot")
            print("ok", info.tier, info.digest, flush=True)
        elif cmd == "evict":
            print("ok", store.evict(args[0]), flush=True)
        elif cmd == "quit":
            print("ok", flush=True)
            return


def main() -> None:
    config, mode, *args = sys.argv[1:]
    store = Store.open(config_from(config))
    if mode == "loop":
        loop(store, int(args[0]), int(args[1]))
    elif mode == "die-at":
        die_at(store, args[0])
    elif mode == "serve":
        serve(store)
    store.close()


if __name__ == "__main__":
    main()
