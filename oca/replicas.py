"""Control-plane replicas as a client sees them: several base URLs, tried in turn.

Rules kept here:
- A box and the fill job may name several control-plane replicas (or one load-balanced URL). A request goes
  to the replica that answered last, then to each other one in the configured order, until one answers.
- "Answers" means any HTTP answer that is not a 502, 503 or 504 (those come from a replica that cannot do
  the work right now, or a proxy in front of one that is down): a 4xx is the request's own fault and is
  returned at once, since every replica would say the same.
- Pure bookkeeping: no I/O here; the async (aiohttp) and blocking (urllib) clients both use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

RETRY_STATUSES = frozenset((502, 503, 504))


class Replicas:
    def __init__(self, urls: Iterable[str]) -> None:
        self.urls = tuple(u.rstrip("/") for u in urls)
        if not self.urls:
            raise ValueError("no control-plane URL")
        self._preferred = 0

    def __iter__(self) -> Iterator[str]:
        """Every base URL once, the one that answered last first."""
        count = len(self.urls)
        for step in range(count):
            yield self.urls[(self._preferred + step) % count]

    def answered(self, url: str) -> None:
        """`url` gave an answer: ask it first next time."""
        self._preferred = self.urls.index(url.rstrip("/"))

    @staticmethod
    def split(text: str) -> tuple[str, ...]:
        """Base URLs from a comma-separated command-line value."""
        return tuple(part.strip() for part in text.split(",") if part.strip())
