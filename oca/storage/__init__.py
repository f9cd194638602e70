"""Tiered disk storage: one owner (`Store`) writes, worker processes read through `StoreView`.

Modules, one job each: layout (file names), files (durable copies), policy (eviction, promotion,
placement: pure), index (SQLite), health (tier faults), generation (change counter), store, view.
"""

from oca.storage.model import ObjectInfo, TierState
from oca.storage.store import Store
from oca.storage.view import StoreView

__all__ = ["ObjectInfo", "Store", "StoreView", "TierState"]
