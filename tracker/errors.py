"""The tracker service's errors, and the names it counts them by."""

from __future__ import annotations

from btfs.errors import BtfsError

# Error kinds, the label of `btfs_tracker_errors_total`.
ERROR_KINDS = (
    "bad_request",
    "not_whitelisted",
    "tracker_full",
    "swarm_full",
    "full_scrape_disabled",
    "http_protocol",
    "udp_malformed",
    "udp_connection_id",
    "store_unavailable",
)


class RequestError(BtfsError):
    """A request the tracker cannot serve; the message is the `failure reason` sent back.

    `kind` names the error for the metrics (one of `ERROR_KINDS`).
    """

    kind = "bad_request"

    def __init__(self, reason: str, kind: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if kind is not None:
            self.kind = kind


class BadRequest(RequestError):
    """Malformed or missing parameters."""


class AnnounceRefused(RequestError):
    """A well-formed announce the tracker declines (whitelist, limits)."""

    kind = "refused"


class StoreUnavailable(RequestError):
    """The shared swarm store (Redis) cannot be reached or did not answer in time: the
    announce is answered with this reason (HTTP 200 / a BEP 15 error) and the client
    retries later."""

    kind = "store_unavailable"

    def __init__(self, reason: str = "tracker storage unavailable, try again later") -> None:
        super().__init__(reason)


class StateError(BtfsError):
    """A saved state that cannot be read back."""
