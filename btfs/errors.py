"""The project's own exception types.

Every error caused by bad input (a broken .torrent, a malformed magnet URI, a lying peer)
is a `BtfsError`, so callers can turn it into a one-line message or a dropped connection
without ever catching unrelated bugs.
"""


class BtfsError(Exception):
    """Base class for errors a user or a peer can cause; the message is shown as is."""


class BencodeError(BtfsError):
    """Bytes that are not valid bencode."""


class MetainfoError(BtfsError):
    """A .torrent or magnet URI that is malformed or describes an impossible torrent."""


class CreateError(BtfsError):
    """`btfs create` cannot make a torrent of the given input."""


class Unavailable(BtfsError):
    """The outside world did not give what was needed (no peer had a magnet's metadata
    in time): a failure (exit 1), not bad input (exit 2)."""


def first_leaf(exc: BaseException) -> BaseException:
    """The first real exception inside (nested) exception groups, as trio raises them."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
