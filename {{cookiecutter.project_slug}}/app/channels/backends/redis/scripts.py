"""The Redis layer's Lua scripts, and how concurrent calls of them are merged and pipelined.

Every list entry starts with its 13-digit expiry in epoch milliseconds (``STAMP`` digits), so the
push can drop expired heads before it reports a full list; every push also sets ``PEXPIRE`` so
abandoned lists vanish. Adjacent sends to one list in one pipeline become one ``SEND_MANY``.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # redis is imported on use: without it, the layer says which extra to install
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

    Client = Redis | RedisCluster

STAMP = 13  # digits of the expiry stamp in front of every list entry
MERGE_MAX = 256  # sends to one list in one SEND_MANY at most

_PUSH_FN = r"""
local function push(key, entry, cap, ttl, now)
  local n = redis.call('LLEN', key)
  while n >= cap do
    local head = redis.call('LINDEX', key, 0)
    if head and (tonumber(string.sub(head, 1, 13)) or 0) >= now then return 0 end
    redis.call('LPOP', key)
    n = n - 1
  end
  redis.call('RPUSH', key, entry)
  redis.call('PEXPIRE', key, ttl)
  return 1
end
"""

# KEYS[1] list; ARGV: entry (stamp + payload), capacity, ttl_ms, now_ms. Returns 1, or 0 when full.
_SEND = _PUSH_FN + r"""
return push(KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]))
"""

# KEYS[1] list; ARGV: capacity, ttl_ms, now_ms, then whole entries (stamp included), in order.
# Pushes until the list is full; returns how many it pushed.
_SEND_MANY = _PUSH_FN + r"""
local cap, ttl, now = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
for i = 4, #ARGV do
  if push(KEYS[1], ARGV[i], cap, ttl, now) == 0 then return i - 4 end
end
return #ARGV - 3
"""

# KEYS: procs zset, chans zset. ARGV: now_ms. Prunes expired members; returns {procs, chans}.
_MEMBERS = r"""
local now = ARGV[1]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)
return {redis.call('ZRANGE', KEYS[1], 0, -1), redis.call('ZRANGE', KEYS[2], 0, -1)}
"""

# KEYS: procs zset, chans zset. ARGV: stamp, now_ms, group entry, data, msgpack(data),
# capacity, inbox_capacity, ttl_ms, key prefix "{P:", sender's process (served locally, skipped).
# Returns the number of pushes.
# An other-process channel gets msgpack [0, channel, data] (base._channel_entry) built here.
_GROUP_SEND = _PUSH_FN + r"""
local stamp, now, ttl, kp = ARGV[1], tonumber(ARGV[2]), ARGV[8], ARGV[9]
local cap, icap = tonumber(ARGV[6]), tonumber(ARGV[7])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[2])
local sent, entry, named = 0, stamp .. ARGV[3], nil
for _, pid in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if pid ~= ARGV[10] then
    sent = sent + push(kp .. 'i:' .. pid .. '}', entry, icap, ttl, now)
  end
end
for _, ch in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local head = string.match(ch, '^([^!]*)!')
  if head then
    local pid = string.match(head, '([^.]*)$')
    local hdr = #ch < 32 and string.char(160 + #ch) or string.char(217, #ch)
    sent = sent + push(kp .. 'i:' .. pid .. '}', stamp .. '\147\0' .. hdr .. ch .. ARGV[5], icap, ttl, now)
  else
    named = named or stamp .. ARGV[4]
    sent = sent + push(kp .. 'c:' .. ch .. '}', named, cap, ttl, now)
  end
end
return sent
"""


class Script:
    """A Lua body and its SHA1, for ``EVALSHA`` with an ``EVAL`` fallback."""

    def __init__(self, body: str) -> None:
        self.body = body
        self.sha = hashlib.sha1(body.encode()).hexdigest()


SEND, SEND_MANY, MEMBERS, GROUP_SEND = Script(_SEND), Script(_SEND_MANY), Script(_MEMBERS), Script(_GROUP_SEND)
Call = tuple[Script, list[str], list[Any]]  # script, keys (one slot), args


def merge_sends(calls: list[Call]) -> tuple[list[Call], list[int]]:
    """Adjacent sends to one list become one ``SEND_MANY`` (order kept); returns the calls and
    how many original calls each one stands for."""
    merged: list[Call] = []
    spans: list[int] = []
    # a run: consecutive SENDs to one key (any other call is a run of its own)
    for _, run in itertools.groupby(calls, key=lambda call: call[1] if call[0] is SEND else id(call)):
        run_calls = list(run)
        for start in range(0, len(run_calls), MERGE_MAX):
            chunk = run_calls[start : start + MERGE_MAX]
            if len(chunk) == 1:
                merged.append(chunk[0])
            else:  # SEND args: [entry, capacity, ttl, now]
                _, keys, (_, capacity, ttl, _) = chunk[0]
                now = max(args[3] for _, _, args in chunk)
                merged.append((SEND_MANY, keys, [capacity, ttl, now, *(args[0] for _, _, args in chunk)]))
            spans.append(len(chunk))
    return merged, spans


def split_results(results: list[Any], spans: list[int]) -> list[Any]:
    """One result per original call: a ``SEND_MANY`` that pushed k of n gives 1 to the first k."""
    split: list[Any] = []
    for result, span in zip(results, spans, strict=True):
        if span == 1:
            split.append(result)
        elif isinstance(result, BaseException):
            split += [result] * span
        else:
            split += [1] * int(result) + [0] * (span - int(result))
    return split


async def run_script(client: Client, script: Script, keys: list[str], args: list[Any]) -> Any:
    """One script call; loads the script when the server does not know it (a restarted server)."""
    from redis.exceptions import NoScriptError

    try:
        return await client.evalsha(script.sha, len(keys), *keys, *args)  # type: ignore[no-untyped-call]
    except NoScriptError:
        return await client.eval(script.body, len(keys), *keys, *args)  # type: ignore[no-untyped-call]


async def run_scripts(
    client_for: Callable[[str], Client], calls: list[Call], *, raise_errors: bool = True
) -> list[Any]:
    """Scripts, one pipeline per server, all servers at once; each call's keys share a slot.

    With ``raise_errors=False`` a call's error is its result, so one bad call fails only itself.
    """
    from redis.exceptions import NoScriptError

    by_client: dict[int, tuple[Client, list[int]]] = {}
    for index, (_, keys, _) in enumerate(calls):
        client = client_for(keys[0])
        by_client.setdefault(id(client), (client, []))[1].append(index)
    results: list[Any] = [None] * len(calls)

    async def run(client: Client, indexes: list[int]) -> None:
        pipe = client.pipeline(transaction=False)
        for i in indexes:
            script, keys, args = calls[i]
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        for i, result in zip(indexes, await pipe.execute(raise_on_error=False), strict=True):
            if isinstance(result, NoScriptError):
                script, keys, args = calls[i]
                result = await run_script(client, script, keys, args)
            elif isinstance(result, Exception) and raise_errors:
                raise result
            results[i] = result

    await asyncio.gather(*(run(client, indexes) for client, indexes in by_client.values()))
    return results
