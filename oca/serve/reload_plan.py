"""What a reload (SIGHUP) does with a new config: the diff between the running config and the new one. Pure.

Rules kept here:
- A reload applies every section of the new config except the ones the master opened for its whole life:
  `storage` (the open store, its tiers and index) and `admin` (the admin port and its tokens). A change to
  those is kept aside, said in the log, and takes effect at the next restart; the rest of the new file
  applies. The new generation of workers runs the config this plan returns, never the file as read.
- The data port's sockets are bound again only when what they are changed: the listen address, the
  backlog or the number of worker slots (one SO_REUSEPORT socket per slot). Otherwise the new generation
  accepts on the sockets the old one used, and no connection waiting in their queues is lost.
- The config's `source` (where it was read from) is not a setting and is never a change.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from oca.config import BoxConfig

RESTART_ONLY = ("storage", "admin")  # sections a reload cannot change


@dataclass(frozen=True)
class ReloadPlan:
    config: BoxConfig  # what the new generation runs: the new config with the restart-only sections kept
    changed: tuple[str, ...]  # sections the new config changes, in BoxConfig's order
    needs_restart: tuple[str, ...]  # of those, the ones kept as they are until the next restart
    rebind: bool  # the data port's sockets must be bound again

    @property
    def reloadable(self) -> tuple[str, ...]:
        """The changed sections this reload applies."""
        return tuple(s for s in self.changed if s not in self.needs_restart)


def _sections() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(BoxConfig) if not f.metadata.get("internal"))


def plan_reload(running: BoxConfig, new: BoxConfig) -> ReloadPlan:
    """The reload from the `running` config to the `new` one (both already validated)."""
    changed = tuple(s for s in _sections() if getattr(new, s) != getattr(running, s))
    needs_restart = tuple(s for s in changed if s in RESTART_ONLY)
    config = dataclasses.replace(new, **{s: getattr(running, s) for s in needs_restart})
    old, fresh = running.server, config.server
    rebind = (old.listen, old.backlog, old.worker_count()) != (fresh.listen, fresh.backlog, fresh.worker_count())
    return ReloadPlan(config, changed, needs_restart, rebind)
