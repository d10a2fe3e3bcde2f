"""The per-torrent tracker session: one working tracker per tier (BEP 12) kept announced,
in parallel, for as long as the engine runs it, with back-off for trackers that fail."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import trio

from btfs.trackers.model import AnnounceParams, AnnounceResult, TrackerError
from btfs.trackers.tiers import TrackerTiers
from btfs.trackers.transport import announce
from btfs.trackerwire.events import COMPLETED, NONE, STARTED, STOPPED

log = logging.getLogger(__name__)

MIN_ANNOUNCE_INTERVAL = 30.0
MAX_ANNOUNCE_INTERVAL = 4 * 3600.0


@dataclass
class _TierState:
    index: int
    backoff: float
    wake: trio.Event = field(default_factory=trio.Event)
    next_due: float = -math.inf
    last_attempt: float = -math.inf
    min_gap: float = 0.0
    urgent: bool = False  # announce right now (completed)
    want_more: bool = False  # announce as soon as the min interval allows
    done_reported: bool = False  # a tracker of this tier has been told left=0


class TrackerSession:
    """Keeps a torrent announced to the first working tracker of every tier, in parallel.

    `run()` never raises for tracker or network trouble: errors are logged, kept in
    `last_error` (None after a success) and counted in `failures`, and the tier is retried
    with exponential back-off. `last_result` holds each URL's latest answer, for status.
    """

    def __init__(
        self,
        tiers: Sequence[Sequence[str]],
        info_hash: bytes,
        peer_id: bytes,
        port: int,
        stats: Callable[[], tuple[int, int, int]],
        on_peers: Callable[[list[tuple[str, int]]], None],
        numwant: int = 50,
        *,
        rng: random.Random | None = None,
        timeout: float = 15.0,
        retry_initial: float = 5.0,
        retry_max: float = 300.0,
        min_reannounce: float = 30.0,
        bind: str | None = None,
    ) -> None:
        rng = rng or random.Random()
        self.bind = bind  # announces leave from it (see `announce`)
        self.tiers = TrackerTiers(tiers, rng)
        self.info_hash = info_hash
        self.peer_id = peer_id
        self.port = port
        self.numwant = numwant
        self.key = rng.getrandbits(32)
        self.timeout = timeout
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.min_reannounce = min_reannounce
        self.last_error: dict[str, str | None] = {}
        self.last_result: dict[str, AnnounceResult] = {}
        self.failures: dict[str, int] = {}  # consecutive failed announces per URL
        self.last_announce: dict[str, float] = {}  # when each URL last answered or failed
        self._stats = stats
        self._on_peers = on_peers
        self._started: set[str] = set()  # URLs told "started" and not yet "stopped"
        self._in_flight: set[str] = set()  # an announce sent, its answer not yet read
        self._download_finished = False  # completed() was called: a seed never calls it
        self._states = [_TierState(i, retry_initial) for i in range(len(self.tiers))]

    async def run(self) -> None:
        """Announce until cancelled."""
        if not self._states:
            log.info("no usable tracker for this torrent")
        async with trio.open_nursery() as nursery:
            for state in self._states:
                nursery.start_soon(self._run_tier, state)
            await trio.sleep_forever()

    def completed(self) -> None:
        """The download has just finished: tell every tier now."""
        self._download_finished = True
        for state in self._states:
            state.urgent = True
            state.wake.set()

    def announce_now(self) -> None:
        """Re-announce as soon as each tracker's min interval allows (we want more peers)."""
        for state in self._states:
            state.want_more = True
            state.wake.set()

    async def stop(self, timeout: float = 3) -> None:  # noqa: ASYNC109 (the API)
        """Announce `stopped` to every tracker that had accepted us; bounded by `timeout`.

        Shielded, so it can be awaited in a `finally` of a cancelled task.
        """
        urls = [url for url in self.tiers.urls()
                if url in self._started or url in self._in_flight]
        if not urls:
            return
        uploaded, downloaded, left = self._stats()
        params = self._params(STOPPED, uploaded, downloaded, left)
        # A download that ends as it completes has not told its trackers "completed" yet.
        unreported = {
            url for state in self._states
            if self._download_finished and left == 0 and not state.done_reported
            for url in self.tiers.tiers[state.index]
        }
        with trio.CancelScope(shield=True), trio.move_on_after(timeout):
            async with trio.open_nursery() as nursery:
                for url in urls:
                    nursery.start_soon(self._stop_one, url, params, timeout,
                                       url in unreported)

    async def _stop_one(self, url: str, params: AnnounceParams, seconds: float,
                        completed_first: bool) -> None:
        try:
            if completed_first:
                await announce(url, replace(params, event=COMPLETED), timeout=seconds,
                               bind=self.bind)
            await announce(url, params, timeout=seconds, bind=self.bind)
        except (TrackerError, OSError) as exc:
            log.debug("tracker %s: stopped announce failed: %s", url, exc)
        self._started.discard(url)

    def report(self, now: float) -> list[dict[str, object]]:
        """Each tracker's state for `btfs status`: when it last answered (seconds ago),
        with what (peers or the error), and when the next announce to it is due (for the
        URL each tier tries first; the others only if it fails)."""
        rows: list[dict[str, object]] = []
        for state in self._states:
            for position, url in enumerate(self.tiers.tiers[state.index]):
                when = self.last_announce.get(url)
                error = self.last_error.get(url)
                answer = self.last_result.get(url)
                row: dict[str, object] = {
                    "url": url,
                    "tier": state.index + 1,
                    "last_announce_ago": None if when is None else round(now - when, 1),
                    "result": ("error" if error else "ok" if answer is not None else None),
                    "error": error,
                    "peers": (len(answer.peers) if answer is not None and not error else None),
                    "next_announce_in": None,
                }
                if position == 0 and state.next_due != -math.inf:
                    row["next_announce_in"] = round(max(0.0, state.next_due - now), 1)
                elif position == 0:
                    row["next_announce_in"] = 0.0
                rows.append(row)
        return rows

    def _params(self, event: str, uploaded: int, downloaded: int, left: int) -> AnnounceParams:
        return AnnounceParams(
            info_hash=self.info_hash,
            peer_id=self.peer_id,
            port=self.port,
            uploaded=uploaded,
            downloaded=downloaded,
            left=left,
            event=event,
            numwant=self.numwant,
            key=self.key,
        )

    async def _run_tier(self, state: _TierState) -> None:
        while True:
            await self._until_due(state)
            state.urgent = state.want_more = False
            state.last_attempt = trio.current_time()
            result = await self._announce_tier(state)
            now = trio.current_time()
            if result is None:
                state.next_due = now + state.backoff
                state.min_gap = self.min_reannounce
                state.backoff = min(state.backoff * 2, self.retry_max)
                log.info("trackers of tier %d: none answered; next try in %.0f s",
                         state.index + 1, state.next_due - now)
            else:
                state.backoff = self.retry_initial
                state.min_gap = max(result.min_interval or 0.0, self.min_reannounce)
                interval = max(result.interval, result.min_interval or 0.0)
                state.next_due = now + min(
                    max(interval, MIN_ANNOUNCE_INTERVAL), MAX_ANNOUNCE_INTERVAL
                )
                count = len(result.peers)
                log.info("tracker %s: %d peer%s; next announce in %.0f s",
                         self.tiers.tiers[state.index][0], count, "" if count == 1 else "s",
                         state.next_due - now)

    async def _until_due(self, state: _TierState) -> None:
        while True:
            now = trio.current_time()
            due = state.next_due
            if state.urgent:
                due = now
            elif state.want_more:
                due = min(due, state.last_attempt + state.min_gap)
            if now >= due:
                return
            state.wake = trio.Event()
            with trio.move_on_at(due):
                await state.wake.wait()

    async def _announce_tier(self, state: _TierState) -> AnnounceResult | None:
        """Try the tier's URLs in order; the first that answers is promoted and its peers used."""
        for url in list(self.tiers.tiers[state.index]):
            uploaded, downloaded, left = self._stats()
            if url not in self._started:
                event = STARTED
            elif left == 0 and not state.done_reported:
                event = COMPLETED
            else:
                event = NONE
            # Until its answer is read: if the session is cancelled meanwhile (the tracker
            # may have counted us already), stop() still says "stopped" to it.
            self._in_flight.add(url)
            try:
                result = await announce(
                    url, self._params(event, uploaded, downloaded, left), timeout=self.timeout,
                    bind=self.bind,
                )
            except (TrackerError, OSError) as exc:
                self._in_flight.discard(url)
                failures = self.failures[url] = self.failures.get(url, 0) + 1
                self.last_error[url] = str(exc) or type(exc).__name__
                self.last_announce[url] = trio.current_time()
                level = logging.WARNING if failures == 1 else logging.INFO
                log.log(level, "tracker %s: %s (failure %d)", url, exc, failures)
                continue
            self._in_flight.discard(url)
            self.last_announce[url] = trio.current_time()
            self.failures[url] = 0
            self.last_error[url] = None
            self.last_result[url] = result
            self._started.add(url)
            if left == 0:
                state.done_reported = True
            self.tiers.promote(url)
            if result.warning:
                log.warning("tracker %s warns: %s", url, result.warning)
            if result.peers:
                self._on_peers(result.peers)
            return result
        return None
