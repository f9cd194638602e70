"""What an OSError says about a tier, and the probe a health check runs on one.

Rules kept here:
- ENOSPC/EDQUOT mean FULL (the disk is fine but has no room); errors that mean the disk or its directory is
  broken or gone mean FAILED; any other errno (EMFILE, ENAMETOOLONG, ...) says nothing about the tier.
  Of the FAILED ones, MEDIA_ERRNOS say the medium is bad, not merely absent (the store keeps such a tier out).
- A probe proves a tier usable the way a put would use it: the directories exist, a small file can be
  created, written, fsynced and removed in tmp/. It writes with os.write directly, not through the object
  write path, so a fault injected into object writes does not also fake the probe.
"""

from __future__ import annotations

import errno
import itertools
import os
from dataclasses import dataclass

from oca.storage.layout import TierLayout, unlink_quiet
from oca.storage.model import TierState

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
FAILED_ERRNOS = frozenset({
    errno.EIO, errno.ENOENT, errno.ENOTDIR, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENXIO,
    errno.ENODEV, errno.ESTALE, errno.EUCLEAN, errno.EBADMSG, errno.ENOTCONN, errno.EISDIR,
})
# errors that say the medium itself is bad (not just absent): a tier failed by one stays out of service
MEDIA_ERRNOS = frozenset({errno.EIO, errno.EUCLEAN, errno.EBADMSG})
_probe_numbers = itertools.count()


def classify(error: OSError) -> TierState | None:
    """FULL or FAILED if the error says that about the tier it came from, else None."""
    if error.errno in FULL_ERRNOS:
        return TierState.FULL
    if error.errno in FAILED_ERRNOS:
        return TierState.FAILED
    return None


def describe(error: OSError) -> str:
    text = error.strerror or str(error)
    return f"{text} ({error.filename})" if error.filename else text


@dataclass(frozen=True, slots=True)
class ProbeResult:
    state: TierState
    error: str
    free_bytes: int
    errno: int | None = None


def probe(layout: TierLayout) -> ProbeResult:
    for directory in (layout.root, layout.objects_dir, layout.tmp_dir):
        if not os.path.isdir(directory):
            return ProbeResult(TierState.FAILED, f"directory missing: {directory}", 0)
    path = os.path.join(layout.tmp_dir, f".probe-{os.getpid()}-{next(_probe_numbers)}")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"oca tier probe\n")
            os.fsync(fd)
        finally:
            os.close(fd)
            unlink_quiet(path)
        st = os.statvfs(layout.root)
    except OSError as e:
        state = TierState.FULL if e.errno in FULL_ERRNOS else TierState.FAILED
        return ProbeResult(state, describe(e), 0, e.errno)
    return ProbeResult(TierState.UP, "", st.f_bavail * st.f_frsize)
