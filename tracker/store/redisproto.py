"""What the Redis store says to Redis, pure: the URL of the server, commands in RESP,
the keys of a swarm, and the Lua scripts that make an announce or a scrape one round trip.

A swarm is six keys sharing the hash tag ``{<info-hash hex>}``, so that in a Redis
Cluster a swarm lives on one shard and its scripts run there:

- ``btfs:{H}:p``, a hash: peer_id -> one kind digit ("0".."3") and the compact address.
- ``btfs:{H}:0`` .. ``:3``, sorted sets by kind (0 IPv4 leechers, 1 IPv4 seeds, 2 IPv6
  leechers, 3 IPv6 seeds): member peer_id + compact address, score the last announce.
- ``btfs:{H}:m``, a hash: ``d`` completed downloads, ``s`` when the next sweep is due.

Every peer in the hash has exactly one member, in the set of its kind. A sweep (at most
every half interval, run by the announce that finds it due) drops the members older than
two intervals, and sets the keys to expire a sweep period after the last peer would: a
swarm nobody announces to disappears by itself. Between sweeps, expired members are
neither counted (ZCOUNT from the cutoff) nor handed out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from tracker.store.base import WANT_V4, WANT_V6

PREFIX = b"btfs:"
SECRET_KEY = b"btfs:udp-secret"
SWARM_KEYS = (b"p", b"0", b"1", b"2", b"3", b"m")

# ARGV: 1 peer_id, 2 compact address, 3 kind (-1: stopped), 4 now, 5 cutoff (peers last
# seen before it are expired), 6 numwant, 7 candidate kinds (digits), 8 completed (0/1),
# 9 key lifetime (s), 10 unused (0), 11 peers per swarm at most (0: any), 12 sweep period,
# 13 a random integer (where the windows start).
# Returns {complete, incomplete, IPv4 members, IPv6 members, 1 if refused as full}: the
# chosen members (peer_id + address, 26 or 38 bytes) end to end, the asking peer and the
# spare among them: the client takes them out (no per-peer work in Lua, where every
# string made costs a hash).
#
# Choosing peers: each candidate set gives its share of numwant + 1 (one spare, for the
# asking peer) as WINDOWS runs of consecutive ranks, evenly spaced from a random start
# over its live peers: systematic sampling by blocks, each block one ZRANGE (O(log n)).
# The blocks are peers that announced at about the same time, two random moments per
# answer. ZRANDMEMBER would be uniform per peer, but costs ~1 us of Redis time per peer
# handed out (62 us for 51 on a 50 000-peer swarm, measured), more than the rest of the
# script; four blocks cost 45 us in all, two 40 (Redis 7.0 on this machine).
ANNOUNCE_LUA = b"""
local p, m = KEYS[1], KEYS[6]
local pid, addr = ARGV[1], ARGV[2]
local kind = tonumber(ARGV[3])
local now, cutoff = tonumber(ARGV[4]), tonumber(ARGV[5])
local numwant, cands = tonumber(ARGV[6]), ARGV[7]
local life = tonumber(ARGV[9])
local due = redis.call('HGET', m, 's')
if (not due) or tonumber(due) <= now then
  for k = 2, 5 do
    local gone = redis.call('ZRANGE', KEYS[k], '-inf', '(' .. ARGV[5], 'BYSCORE')
    if #gone > 0 then
      for i = 1, #gone do redis.call('HDEL', p, string.sub(gone[i], 1, 20)) end
      redis.call('ZREMRANGEBYSCORE', KEYS[k], '-inf', '(' .. ARGV[5])
    end
  end
  redis.call('HSET', m, 's', now + tonumber(ARGV[12]))
  for k = 1, 6 do redis.call('EXPIRE', KEYS[k], life) end
end
local full = 0
local old = redis.call('HGET', p, pid)
if old then
  local okind, oaddr = string.byte(old) - 48, string.sub(old, 2)
  if kind < 0 then
    redis.call('ZREM', KEYS[2 + okind], pid .. oaddr)
    redis.call('HDEL', p, pid)
  else
    if okind ~= kind or oaddr ~= addr then
      redis.call('ZREM', KEYS[2 + okind], pid .. oaddr)
      redis.call('HSET', p, pid, string.char(48 + kind) .. addr)
    end
    if ARGV[8] == '1' and okind % 2 == 0 then redis.call('HINCRBY', m, 'd', 1) end
    redis.call('ZADD', KEYS[2 + kind], now, pid .. addr)
  end
elseif kind >= 0 then
  local cap = tonumber(ARGV[11])
  if cap > 0 and redis.call('HLEN', p) >= cap then
    full = 1
  else
    redis.call('HSET', p, pid, string.char(48 + kind) .. addr)
    redis.call('ZADD', KEYS[2 + kind], now, pid .. addr)
    redis.call('EXPIRE', p, life)
    redis.call('EXPIRE', KEYS[2 + kind], life)
    if ARGV[8] == '1' then redis.call('HINCRBY', m, 'd', 1) end
  end
end
local c = {}
for k = 0, 3 do c[k] = redis.call('ZCOUNT', KEYS[2 + k], ARGV[5], '+inf') end
local out4, out6 = {}, {}
if kind >= 0 and full == 0 and numwant > 0 then
  local total = 0
  for i = 1, #cands do total = total + c[tonumber(string.sub(cands, i, i))] end
  local seed = tonumber(ARGV[13])
  for i = 1, #cands do
    local k = tonumber(string.sub(cands, i, i))
    local live = c[k]
    if live > 0 then
      local key = KEYS[2 + k]
      local out = out4
      if k >= 2 then out = out6 end
      -- Live peers are the top `live` ranks (the set is ordered by last announce).
      local n = redis.call('ZCARD', key)
      local first = n - live
      local need = math.ceil((numwant + 1) * live / total)
      local windows = math.min(WINDOWS, need)
      if need + windows >= live then
        out[#out + 1] = table.concat(redis.call('ZRANGE', key, first, n - 1))
      else
        local size = math.ceil(need / windows)
        for w = 0, windows - 1 do
          local lo = (seed + math.floor(w * live / windows)) % live
          local hi = lo + size - 1
          if hi < live then
            out[#out + 1] = table.concat(redis.call('ZRANGE', key, first + lo, first + hi))
          else
            out[#out + 1] = table.concat(redis.call('ZRANGE', key, first + lo, n - 1))
            out[#out + 1] = table.concat(redis.call('ZRANGE', key, first, first + hi - live))
          end
        end
      end
    end
  end
end
return {c[1] + c[3], c[0] + c[2], table.concat(out4), table.concat(out6), full}
"""

# ARGV: 1 cutoff. Returns {live peers of kind 0, 1, 2, 3, completed}.
SCRAPE_LUA = b"""
local c = {}
for k = 0, 3 do c[k + 1] = redis.call('ZCOUNT', KEYS[2 + k], ARGV[1], '+inf') end
c[5] = tonumber(redis.call('HGET', KEYS[6], 'd') or '0')
return c
"""

WINDOWS = 2
ANNOUNCE_LUA = ANNOUNCE_LUA.replace(b"WINDOWS", str(WINDOWS).encode())
ANNOUNCE_SHA = hashlib.sha1(ANNOUNCE_LUA).hexdigest().encode()
SCRAPE_SHA = hashlib.sha1(SCRAPE_LUA).hexdigest().encode()
SCRIPTS = ((ANNOUNCE_SHA, ANNOUNCE_LUA), (SCRAPE_SHA, SCRAPE_LUA))

# The sets an announce takes peers from, by [families][wants seeds]: digits of kinds.
CANDIDATES = tuple(
    tuple(
        "".join(str(k) for k in range(4)
                if (families >> (k >> 1)) & 1 and (want_seeds or not k & 1)).encode()
        for want_seeds in (False, True)
    )
    for families in range(4)
)
assert CANDIDATES[WANT_V4][True] == b"01" and CANDIDATES[WANT_V6][False] == b"2"


def swarm_keys(info_hash: bytes) -> list[bytes]:
    """The six keys of a torrent's swarm (see the module docstring)."""
    tag = PREFIX + b"{" + info_hash.hex().encode() + b"}:"
    return [tag + name for name in SWARM_KEYS]


SWARM_PATTERN = PREFIX + b"{*}:m"  # SCAN MATCH: one key per known swarm


def info_hash_of(meta_key: bytes) -> bytes | None:
    """The info-hash of a swarm's ``:m`` key, None for a key of another shape."""
    head, _, rest = meta_key.partition(b"{")
    hex_hash, _, tail = rest.partition(b"}")
    if head != PREFIX or tail != b":m" or len(hex_hash) != 40:
        return None
    try:
        return bytes.fromhex(hex_hash.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None


# ------------------------------------------------------------------ RESP


def encode_command(args: Iterable[bytes | str | int | float]) -> bytes:
    """One command as a RESP array of bulk strings."""
    parts = []
    count = 0
    for arg in args:
        if isinstance(arg, bytes):
            value = arg
        elif isinstance(arg, str):
            value = arg.encode()
        elif isinstance(arg, int):
            value = b"%d" % arg
        else:
            value = repr(float(arg)).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(value), value))
        count += 1
    return b"*%d\r\n%s" % (count, b"".join(parts))


# ------------------------------------------------------------------ the server's address


@dataclass(frozen=True)
class RedisAddress:
    """Where Redis is: TCP host and port, or a Unix socket path; database and password."""

    host: str | None
    port: int
    path: str | None
    db: int
    username: str | None
    password: str | None

    def __str__(self) -> str:
        """The URL without the password (for logs)."""
        if self.path is not None:
            return f"unix://{self.path}" + (f"?db={self.db}" if self.db else "")
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"redis://{host}:{self.port}/{self.db}"


def parse_redis_url(text: str) -> RedisAddress:
    """``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`` or
    ``unix://[[USER]:PASSWORD@]/PATH[?db=DB]``; `ValueError` with a reason otherwise."""
    try:
        url = urlsplit(text)
        port = url.port
    except ValueError as exc:
        raise ValueError(f"bad Redis URL {text!r}: {exc}") from None
    username = unquote(url.username) if url.username else None
    password = unquote(url.password) if url.password is not None else None
    if url.scheme == "redis":
        if not url.hostname:
            raise ValueError(f"bad Redis URL {text!r}: no host")
        db_text = url.path.strip("/") or "0"
        if url.query:
            raise ValueError(f"bad Redis URL {text!r}: no query expected")
        db = _db(db_text, text)
        return RedisAddress(url.hostname, port or 6379, None, db, username, password)
    if url.scheme == "unix":
        if not url.path.startswith("/") or url.hostname:
            raise ValueError(f"bad Redis URL {text!r}: expected unix:///absolute/path")
        db = 0
        for part in filter(None, url.query.split("&")):
            name, _, value = part.partition("=")
            if name != "db":
                raise ValueError(f"bad Redis URL {text!r}: unknown parameter {name!r}")
            db = _db(value, text)
        return RedisAddress(None, 0, url.path, db, username, password)
    raise ValueError(f"bad Redis URL {text!r}: expected redis://HOST:PORT/DB or "
                     "unix:///PATH")


def _db(text: str, url: str) -> int:
    if not text.isdigit() or int(text) > 1_000_000:
        raise ValueError(f"bad Redis URL {url!r}: database {text!r} is not a number")
    return int(text)
