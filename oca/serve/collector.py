"""The garbage collector of the master and the workers: what lives as long as the process is kept out of its
full collections (the workers also turn automatic collection off: see oca/serve/worker.py).

Why: /status and /healthz are answered on the master's event loop, and a full (generation 2) collection
stops every thread for as long as it walks every container object the process holds. The master holds
~60,000 of them once started (its modules, aiohttp, the parts it wired) and they never die, yet an import
through the running box allocates enough (a batch's entries, its JSON) to start a full collection every
few seconds: 34-88 ms each at 10^6 objects on a 2-core box, 150-500 ms when it is loaded, and the storage
thread that triggers one holds the GIL throughout, so the loop answers nothing meanwhile (issue 20: `/status`
p99 156 ms, max 527 ms during an import).

Rules kept here:
- `settle` runs once the master has started (its parts wired, its workers serving): one collection of what
  start-up left behind, then `gc.freeze()` moves every survivor to the permanent generation, which no
  collection walks. What is made afterwards (requests, batches, fills) is collected as before: a full
  collection then walks only that, milliseconds.
- The catalog is packed arrays (oca.storage.catalog: untracked by the collector), so the objects a box
  holds do not add to what a collection walks; the catalog's load is not waited for.
- Freezing after a collection leaves no garbage frozen; a frozen object that dies later is freed by its
  reference count as usual (only a cycle among frozen objects would stay, and start-up's survivors are
  live for the process's life).
"""

from __future__ import annotations

import gc


def settle() -> int:
    """Collect what start-up left behind, then freeze the survivors out of every later collection.
    Returns how many objects are frozen now."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
