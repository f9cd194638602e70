"""Why a bundle or an install is refused: each error carries the HTTP status the admin API answers with."""

from __future__ import annotations

from oca.errors import OcaError


class BundleRejected(OcaError):
    """The bundle is not one this box will install: truncated, tampered, unsigned, signed by a stranger."""

    status = 400


class VersionRefused(OcaError):
    """A well-signed bundle whose version this box must not move to (rollback, min_version)."""

    status = 409


class BundleTooLarge(OcaError):
    status = 413


class FirmwareDisabled(OcaError):
    """No trusted keys are configured: the box installs no firmware at all."""

    status = 403


class FirmwareBusy(OcaError):
    """Another install is under way."""

    status = 409


class ReleaseUnhealthy(OcaError):
    """The new release's workers did not become healthy: they were stopped, the old release keeps serving."""

    status = 422


class ProtocolRefused(OcaError):
    """The release speaks no master-worker protocol version the running master speaks (oca.protocol): it
    was not started; the old release keeps serving."""

    status = 409
