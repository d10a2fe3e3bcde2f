"""One web seed (BEP 19) as a source of pieces: HTTP Range requests on kept-alive
connections, and the health the swarm judges it by (failures in a row, dropped, rate).

The bytes are returned as the server sent them: the caller verifies the piece's SHA-1,
like any peer's blocks, and reports a mismatch with `report_hash_failure`.
"""

from __future__ import annotations

import math
import ssl
from types import TracebackType

import trio

from btfs.httpclient import HttpClient, HttpError
from btfs.metainfo import Info
from btfs.webseed.ranges import (
    FileRange,
    RangeMap,
    Segment,
    WebSeedError,
    check_body,
    check_head,
)

DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_FAILURES = 5
RATE_WEIGHT = 0.3  # of the newest fetch in the smoothed rate


class WebSeed:
    """Fetches byte ranges of `info`'s pieces from the web seed at `url`.

    `bind`: the local address connections leave from. `timeout`: seconds for each HTTP
    request (each redirect is one), counted once a connection slot is free. After
    `max_failures` failures in a row (network, HTTP, wrong range or length, or a
    reported hash failure) the seed is `dropped` and every later fetch fails at once.
    """

    def __init__(
        self,
        url: str,
        info: Info,
        *,
        bind: str | None = None,
        connections_per_host: int = 2,
        timeout: float = DEFAULT_TIMEOUT,
        max_failures: int = DEFAULT_MAX_FAILURES,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.url = url
        self.info = info
        self.timeout = timeout
        self.max_failures = max_failures
        self.failures = 0
        self.last_error: str | None = None
        self.rate = 0.0
        self.downloaded = 0
        self._map = RangeMap(url, info)
        self._http = HttpClient(bind=bind, connections_per_host=connections_per_host,
                                ssl_context=ssl_context)

    @property
    def dropped(self) -> bool:
        return self.failures >= self.max_failures

    @property
    def connections_opened(self) -> int:
        return self._http.connections_opened

    def expected_seconds(self, length: int) -> float:
        """How long `length` bytes should take at the measured rate (inf before any)."""
        return length / self.rate if self.rate > 0 else math.inf

    async def fetch(self, piece: int, begin: int, length: int) -> bytes:
        """Exactly `length` bytes at `begin` in `piece`, unverified; else WebSeedError.

        A piece across several files is asked of them concurrently (as the per-host
        connection limit allows). Cancellation is not counted as a failure.
        """
        if self.dropped:
            raise WebSeedError(f"{self.url}: dropped after {self.failures} failures in a row "
                               f"(last: {self.last_error})")
        segments = self._map.segments(piece, begin, length)
        started = trio.current_time()
        parts: list[bytes] = [b""] * len(segments)
        errors: list[str] = []
        async with trio.open_nursery() as nursery:
            for i, segment in enumerate(segments):
                nursery.start_soon(self._fetch_into, parts, i, segment, errors,
                                   nursery.cancel_scope)
        if errors:
            self._failed(errors[0])
            raise WebSeedError(errors[0])
        fetched = sum(s.length for s in segments if isinstance(s, FileRange))
        self._succeeded(fetched, trio.current_time() - started)
        return b"".join(parts)

    def report_hash_failure(self, piece: int) -> None:
        """The caller's SHA-1 check of a piece from this seed failed: count a failure."""
        self._failed(f"{self.url}: piece {piece} failed its hash check")

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> WebSeed:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _fetch_into(self, parts: list[bytes], index: int, segment: Segment,
                          errors: list[str], scope: trio.CancelScope) -> None:
        if not isinstance(segment, FileRange):
            parts[index] = bytes(segment.length)
            return
        try:
            parts[index] = await self._get(segment)
        except WebSeedError as exc:
            errors.append(str(exc))
            scope.cancel()

    async def _get(self, asked: FileRange) -> bytes:
        try:
            response = await self._http.get(
                asked.url, [("Range", asked.header)], max_body=asked.length,
                check_head=lambda status, headers: check_head(asked, status, headers),
                timeout=self.timeout)
            check_body(asked, response.body)
        except (HttpError, WebSeedError) as exc:
            raise WebSeedError(f"{asked.url}: {exc}") from exc
        return response.body

    def _failed(self, reason: str) -> None:
        self.failures += 1
        self.last_error = reason

    def _succeeded(self, length: int, seconds: float) -> None:
        self.failures = 0
        if length == 0:
            return  # padding only: nothing measured
        self.downloaded += length
        measured = length / max(seconds, 1e-6)
        self.rate = measured if self.rate == 0 else (
            self.rate + (measured - self.rate) * RATE_WEIGHT)
