"""The fetch layer's one error: no source could give us the object, or its body broke off.

Kept apart from oca.fetch.upstream so that the body readers (oca.fetch.splice) raise it without importing
the client that uses them."""

from __future__ import annotations


class UpstreamError(Exception):
    """No source could give us the object (or the body broke off). `status` is what the client gets."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
