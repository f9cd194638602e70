"""Filling misses: one upstream fetch per object per box, streamed to every waiting client while it arrives.

- `slices`: pure arithmetic of fixed-size slices of very large objects.
- `upstream`: the aiohttp client side: sources in order, timeouts, failover, errors translated once.
- `state`: what the box remembers about upstream objects (validators, sliced objects, stale marks).
- `manager`: in the master: the fills in flight, coalesced by key, fed to the workers (from memory when they
  fit), written to a temp file and adopted by storage.
- `fillfile`: a fill's files: the memory feed its clients are sent from, the tier's temp file.
- `tierwriter`: the tier's temp file written, hashed and fsynced on a thread, beside the clients.
- `remote`: in a worker: a fill as seen from the worker (a growing file it sends from), and the link to the master.
"""
