"""The fault-injecting origin lives in `loadtest.origin` (the fault suite, `python -m loadtest.faults`, runs it
too); the tests keep importing it from here."""

from loadtest.origin import (
    AUTO_ETAG,
    DEFAULT_LAST_MODIFIED,
    DESYNC_FILL,
    PAGE,
    Fault,
    Origin,
    RequestRecord,
    closed_port,
    desync_response,
    iter_pattern,
    parse_range,
    pattern,
    pattern_byte,
)

__all__ = ["AUTO_ETAG", "DEFAULT_LAST_MODIFIED", "DESYNC_FILL", "PAGE", "Fault", "Origin", "RequestRecord",
           "closed_port", "desync_response", "iter_pattern", "parse_range", "pattern", "pattern_byte"]
