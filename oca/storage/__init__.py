"""Tiered disk storage: one owner (`Store`) writes, worker processes read through `StoreView`.

Modules, one job each: model (ObjectInfo, TierState), layout (file names), files (durable copies),
policy (eviction, promotion, placement: pure), index (SQLite), catalog (what is where, in memory),
health (tier faults), generation (change counter), lock (who owns a state_dir), engine (keeping files,
index and memory in step), store (the owner's API), storage_owner (StorageOwner: the master's threads that
alone call the Store), view (the workers' read-only API).
"""

from oca.storage.model import ObjectInfo, TierState
from oca.storage.store import Store
from oca.storage.view import StoreView

__all__ = ["ObjectInfo", "Store", "StoreView", "TierState"]
