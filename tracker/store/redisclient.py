"""A Redis client on trio streams: one connection, pipelined, reconnecting by itself.

Commands are queued by `call` (no I/O, no await): one writer task sends whatever has
queued since it last ran in one write, so the commands of many concurrent announces (or a
batch of datagrams) reach Redis together, and one reader task parses the answers with
hiredis's sans-I/O `Reader` (C, the parser of Redis's own client library) and hands each
to the caller waiting for it, in order. No thread per call, no lock.

Faults: a connection that closes, breaks, or leaves a command unanswered for `timeout`
seconds is dropped; every waiting caller gets `StoreUnavailable`, and so does every new
call until a new connection is up (a back-off from 0.1 s doubling to 5 s between
attempts). One log line per change of state (up, lost, unreachable), never a traceback.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Generator
from typing import Any

import hiredis
import outcome
import trio

from tracker.errors import StoreUnavailable
from tracker.store.redisproto import RedisAddress, encode_command

log = logging.getLogger("tracker.store")

BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0

ReplyError = hiredis.ReplyError


class Reply:
    """An answer on its way: await it for the decoded reply (a `ReplyError` instance for
    an error reply); raises `StoreUnavailable` if the connection is lost first."""

    __slots__ = ("result", "task")

    def __init__(self) -> None:
        self.result: outcome.Outcome[Any] | None = None
        self.task: trio.lowlevel.Task | None = None

    def __await__(self) -> Generator[Any, None, Any]:
        return self._wait().__await__()

    async def _wait(self) -> Any:
        if self.result is not None:
            return self.result.unwrap()
        self.task = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            self.task = None
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abort)

    def resolve(self, result: outcome.Outcome[Any]) -> None:
        task = self.task
        if task is not None:
            self.task = None
            trio.lowlevel.reschedule(task, result)
        else:
            self.result = result


class RedisClient:
    """One pipelined connection to `address`; `run` keeps it up until cancelled.

    `on_connect(command)` runs on every new connection before it is used (load scripts,
    read shared settings); `command` sends one command on that connection.
    """

    def __init__(
        self,
        address: RedisAddress,
        on_connect: Callable[[Callable[..., Reply]], Awaitable[None]] | None = None,
        timeout: float = 2.0,
    ) -> None:
        self.address = address
        self.on_connect = on_connect
        self.timeout = timeout
        self.up = False
        self.disconnects = 0  # connections lost, or attempts failed, since start
        self._reported: str | None = None  # the state the log last told: "up" / "down"
        self._out: list[bytes] = []
        self._pending: deque[Reply] = deque()
        self._wake = trio.Event()
        self._answered = 0
        self.first_attempt = trio.Event()  # set once the first connection attempt is over

    # -------------------------------------------------------------- calls

    def call(self, *args: bytes | str | int | float) -> Reply:
        """Queue one command; await the result. `StoreUnavailable` at once while down."""
        if not self.up:
            raise StoreUnavailable()
        return self._send(encode_command(args))

    def _send(self, data: bytes) -> Reply:
        reply = Reply()
        self._out.append(data)
        self._pending.append(reply)
        self._wake.set()
        return reply

    # -------------------------------------------------------------- connection

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Connect, serve, reconnect, forever. Started once the first attempt is over
        (connected or not), so a tracker starting with Redis up answers at once."""
        backoff = BACKOFF_FIRST
        first = True
        while True:
            try:
                with trio.fail_after(self.timeout):
                    stream = await self._open()
            except (OSError, trio.TooSlowError) as exc:
                self._down(f"cannot reach {self.address}: {_reason(exc)}")
            else:
                reason = await self._session(stream, task_status if first else None,
                                             self.first_attempt)
                first = False
                if self._reported == "up":
                    backoff = BACKOFF_FIRST
                self._down(reason)
            if first:
                first = False
                task_status.started()
            self.first_attempt.set()
            await trio.sleep(backoff)
            backoff = min(2 * backoff, BACKOFF_MAX)

    async def _open(self) -> trio.abc.Stream:
        if self.address.path is not None:
            return await trio.open_unix_socket(self.address.path)
        assert self.address.host is not None
        return await trio.open_tcp_stream(self.address.host, self.address.port)

    def _down(self, reason: str) -> None:
        self.disconnects += 1
        if self._reported != "down":
            if self._reported == "up":
                log.warning("redis store: lost %s (%s); announces are answered with an "
                            "error until it is back", self.address, reason)
            else:
                log.warning("redis store: %s; retrying with back-off", reason)
            self._reported = "down"

    async def _session(self, stream: trio.abc.Stream,
                       task_status: trio.TaskStatus[None] | None,
                       first_attempt: trio.Event) -> str:
        """Serve one connection until it fails; the reason it failed."""
        failure: list[str] = []
        async with trio.open_nursery() as nursery:

            def fail(reason: str) -> None:
                if not failure:
                    failure.append(reason)
                nursery.cancel_scope.cancel()

            nursery.start_soon(self._read_loop, stream, fail)
            nursery.start_soon(self._write_loop, stream, fail)
            nursery.start_soon(self._watchdog, fail)
            problem = await self._handshake()
            if problem is not None:
                fail(problem)
            else:
                self.up = True
                if self._reported != "up":
                    log.info("redis store: connected to %s", self.address)
                    self._reported = "up"
            if task_status is not None:
                task_status.started()
            first_attempt.set()
        self.up = False
        self._out.clear()
        pending, self._pending = self._pending, deque()
        lost = outcome.Error(StoreUnavailable())
        for reply in pending:
            reply.resolve(lost)
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            await stream.aclose()
        return failure[0] if failure else "closed"

    async def _handshake(self) -> str | None:
        """AUTH, SELECT and the store's own set-up; a reason if one fails."""
        address = self.address
        try:
            if address.password is not None:
                auth: list[bytes | str] = [b"AUTH"]
                if address.username:
                    auth.append(address.username)
                auth.append(address.password)
                answer = await self._send(encode_command(auth))
                if isinstance(answer, ReplyError):
                    return f"AUTH refused: {answer}"
            if address.db:
                answer = await self._send(encode_command([b"SELECT", address.db]))
                if isinstance(answer, ReplyError):
                    return f"SELECT {address.db} refused: {answer}"
            if self.on_connect is not None:
                await self.on_connect(lambda *args: self._send(encode_command(args)))
        except StoreUnavailable:
            return "connection lost while setting up"
        except SetupError as exc:
            return str(exc)
        return None

    async def _write_loop(self, stream: trio.abc.Stream, fail: Callable[[str], None]) -> None:
        try:
            while True:
                if not self._out:
                    self._wake = trio.Event()
                    await self._wake.wait()
                    continue
                data = b"".join(self._out)
                self._out.clear()
                await stream.send_all(data)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            fail(f"cannot send: {_reason(exc)}")

    async def _read_loop(self, stream: trio.abc.Stream, fail: Callable[[str], None]) -> None:
        reader = hiredis.Reader()
        pending = self._pending
        try:
            while True:
                data = await stream.receive_some(1 << 16)
                if not data:
                    fail("the server closed the connection")
                    return
                reader.feed(bytes(data))
                while (answer := reader.gets()) is not False:
                    self._answered += 1
                    if not pending:
                        fail("an answer to no command")
                        return
                    pending.popleft().resolve(outcome.Value(answer))
        except hiredis.ProtocolError as exc:
            fail(f"protocol error: {exc}")
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            fail(f"cannot receive: {_reason(exc)}")

    async def _watchdog(self, fail: Callable[[str], None]) -> None:
        """Drop a connection that leaves a command unanswered for `timeout` seconds (a
        hung or stopped server), so that callers get an answer and a new one is tried."""
        stuck_since: float | None = None
        seen = -1
        while True:
            await trio.sleep(self.timeout / 4)
            now = trio.current_time()
            if not self._pending or self._answered != seen:
                stuck_since = None
                seen = self._answered
            elif stuck_since is None:
                stuck_since = now
            elif now - stuck_since >= self.timeout:
                fail(f"no answer in {self.timeout:g} s")
                return


class SetupError(Exception):
    """The store's set-up on a new connection failed; the message says why."""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
