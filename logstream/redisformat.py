"""How jobs and their lines are laid out in Redis: key names, entries, the server-side functions.

Theory of operation
-------------------
Every key of one job carries the job ID as a hash tag (``logstream:{ID}:...``), so on a Redis
Cluster all of them live in one slot and the functions below, which touch several, stay legal.

``logstream:{ID}:job``   hash: ``spec`` (JSON of the fields fixed at creation: name, command,
                         started_at, meta, owner, ...), ``lines`` (the last stored line),
                         ``status``, ``exit_code``, ``finished_at``, ``problems`` (counts, JSON,
                         recorded with the end), ``changed_ms`` (Redis's
                         clock, Unix ms, at the last stored change: creation, lines, end).
``logstream:{ID}:log``   stream: one entry per block of many lines. The entry ID is
                         ``<first line>-0`` and its fields are ``l`` (last line), ``t`` (when the
                         lines were read, Unix ms) and ``p`` (the lines as SSE records, encoded
                         once by the writer, exactly the bytes a client receives). Because IDs
                         are line numbers, the entry holding line N is ``XREVRANGE log N-0 -
                         COUNT 1`` and resuming at any line is exact. After the last line, an
                         entry with the field ``end`` (JSON status and exit code) closes the log.
``logstream:{ID}:problems`` list: one JSON record per problem found in the lines
                         (``problemlog.Found.to_record``), in the order they were found.
``logstream:{ID}:lease`` string with a TTL, refreshed by whoever runs the job; gone while the job
                         says ``running`` (and no ``runner`` key) means its runner died: the job
                         reads as interrupted.
``logstream:{ID}:runner`` string with a TTL (the runner timeout), set when a remote runner is heard
                         from: a remote job whose node died reads as running until its runner
                         has been quiet that long, since the runner resumes it on another node.
``logstream:jobs``       sorted set of every job ID (score 0, ordered by ID: IDs start with
                         their creation time), the job list.
``logstream:changes``    capped stream: one entry per job created or ended, so every node's one
                         job-list watcher wakes its clients.

Who numbers lines: the writer (a runner, local or remote). ``logstream_append`` stores a block
only when it continues the stored log exactly (its first line is the stored last + 1) and
answers with the last stored line either way: a block sent twice, by one runner retrying or by
two nodes racing, is stored once, and a writer that gets back less than its block's last line
resends from there. Appends after the end are refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from logstream import sse
from logstream.ring import Block, Chunk

PREFIX = "logstream"
JOBS_KEY = f"{PREFIX}:jobs"
CHANGES_KEY = f"{PREFIX}:changes"
CHANGES_MAX_LEN = 10_000
#: Bumped whenever a function below changes, so nodes of a new version load theirs.
LIBRARY_NAME = "logstream_v1"
#: Fields of the job hash that change while the job runs; everything else is in ``spec``.
STATE_FIELDS = ("lines", "status", "exit_code", "finished_at", "changed_ms", "problems")

LIBRARY = f"""#!lua name={LIBRARY_NAME}
-- Redis's clock in Unix ms: every node's ``changed_ms`` comes from the same clock.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- KEYS: job hash, log stream. ARGV: first, last, time_ms, payload, repeated per block.
-- Stores each block that continues the log exactly; stops at the first that does not.
-- Returns the last stored line, or an error when the job is unknown or has ended.

local function append(keys, args)
  local have = redis.call('HGET', keys[1], 'lines')
  if not have then return redis.error_reply('NOJOB no such job') end
  have = tonumber(have)
  local stored = have
  for at = 1, #args, 4 do
    local first, last = tonumber(args[at]), tonumber(args[at + 1])
    if last > stored then
      if first ~= stored + 1 then break end
      if redis.call('HGET', keys[1], 'status') ~= 'running' then
        return redis.error_reply('ENDED the job has ended')
      end
      redis.call('XADD', keys[2], first .. '-0', 'l', last, 't', args[at + 2],
                 'p', args[at + 3])
      stored = last
    end
  end
  if stored ~= have then
    redis.call('HSET', keys[1], 'lines', stored, 'changed_ms', now_ms())
  end
  return stored
end

-- KEYS: job hash, log stream. ARGV: status, exit_code ('' for none), finished_at, last line,
-- the problem counts (JSON, as the job list shows them).
-- Records the end once every line up to ARGV[4] is stored; a repeated end changes nothing.
-- Returns the last stored line, or an error when lines are missing.
local function finish(keys, args)
  local have = redis.call('HGET', keys[1], 'lines')
  if not have then return redis.error_reply('NOJOB no such job') end
  have = tonumber(have)
  if redis.call('HGET', keys[1], 'status') ~= 'running' then return have end
  if have < tonumber(args[4]) then
    return redis.error_reply('MISSING lines after ' .. have .. ' are not stored')
  end
  redis.call('HSET', keys[1], 'status', args[1], 'exit_code', args[2],
             'finished_at', args[3], 'problems', args[5], 'changed_ms', now_ms())
  redis.call('XADD', keys[2], (have + 1) .. '-0', 'end',
             cjson.encode({{status = args[1], exit_code = tonumber(args[2])}}))
  return have
end

-- KEYS: job hash, optionally its lease. ARGV: the spec JSON, then the lease's holder and TTL
-- (ms). Creates the job unless it exists; 1 when created. The lease is taken in the same step:
-- no node can read the new job without one (it would read as interrupted, and end streams).
local function create(keys, args)
  if redis.call('EXISTS', keys[1]) == 1 then return 0 end
  if keys[2] then redis.call('SET', keys[2], args[2], 'PX', args[3]) end
  redis.call('HSET', keys[1], 'spec', args[1], 'lines', 0, 'status', 'running',
             'exit_code', '', 'finished_at', '', 'changed_ms', now_ms())
  return 1
end

-- KEYS: job hash, problems list. ARGV: how many records the writer knows are stored, then
-- the records that follow them. Appends those not stored yet (a retry after a lost reply
-- adds nothing twice) while the job exists. Returns the records stored, or -1 when the job
-- does not exist (removed meanwhile: nothing is left behind).
local function problems(keys, args)
  if redis.call('EXISTS', keys[1]) == 0 then return -1 end
  local have = redis.call('LLEN', keys[2])
  local from = 2 + math.max(0, have - tonumber(args[1]))
  for at = from, #args do redis.call('RPUSH', keys[2], args[at]) end
  return redis.call('LLEN', keys[2])
end

redis.register_function('logstream_append', append)
redis.register_function('logstream_problems', problems)
redis.register_function('logstream_finish', finish)
redis.register_function('logstream_create', create)
"""


class InvalidRedisURL(ValueError):
    """A ``--redis`` URL that is not ``redis://``, ``rediss://`` or ``unix://``."""


def check_redis_url(url: str) -> str:
    """``url`` when Redis can be reached by it, else ``InvalidRedisURL`` saying why."""
    parts = urlsplit(url)
    if parts.scheme in ("redis", "rediss"):
        if not parts.hostname:
            raise InvalidRedisURL(f"{url!r}: give a host, as in redis://HOST:6379/0")
        try:
            parts.port  # noqa: B018 (parsing it is the check)
        except ValueError:
            raise InvalidRedisURL(f"{url!r}: the port must be a number") from None
        database = parts.path.strip("/")
        if database and not database.isdigit():
            raise InvalidRedisURL(f"{url!r}: the database after the host must be a number")
        return url
    if parts.scheme == "unix":
        if not parts.path:
            raise InvalidRedisURL(f"{url!r}: give the socket's path, as in unix:///run/redis.sock")
        return url
    raise InvalidRedisURL(f"{url!r}: use redis://HOST:PORT/DB, rediss://... (TLS) or unix:///PATH")


def job_key(job_id: str) -> str:
    return f"{PREFIX}:{{{job_id}}}:job"


def log_key(job_id: str) -> str:
    return f"{PREFIX}:{{{job_id}}}:log"


def problems_key(job_id: str) -> str:
    return f"{PREFIX}:{{{job_id}}}:problems"


def lease_key(job_id: str) -> str:
    return f"{PREFIX}:{{{job_id}}}:lease"


def runner_key(job_id: str) -> str:
    return f"{PREFIX}:{{{job_id}}}:runner"


def alive_keys(job_id: str) -> list[str]:
    """The keys that say someone still writes the job (any one of them)."""
    return [lease_key(job_id), runner_key(job_id)]


def job_keys(job_id: str) -> list[str]:
    """Every key of one job (for removal)."""
    return [job_key(job_id), log_key(job_id), problems_key(job_id), *alive_keys(job_id)]


def job_id_of(key: str) -> str:
    """The job ID in one of its keys."""
    return key[key.index("{") + 1 : key.index("}")]


def entry_id(first: int) -> str:
    return f"{first}-0"


def entry_first(identifier: bytes | str) -> int:
    """The first line of the entry with this stream ID."""
    text = identifier.decode() if isinstance(identifier, bytes) else identifier
    return int(text.partition("-")[0])


def append_args(blocks: list[Block]) -> list[bytes | int]:
    """The ARGV of ``logstream_append`` for these blocks."""
    args: list[bytes | int] = []
    for block in blocks:
        args += [block.first, block.last, block.time_ms, block.payload]
    return args


@dataclass(frozen=True, slots=True)
class End:
    """The entry that closes a job's log."""

    status: str
    exit_code: int | None


def parse_entry(identifier: bytes | str, fields: dict[bytes, bytes]) -> Block | End:
    """A stream entry as the block it holds, or the job's end."""
    if b"end" in fields:
        end = json.loads(fields[b"end"])
        return End(str(end["status"]), end.get("exit_code"))
    return Block(entry_first(identifier), int(fields[b"l"]), fields[b"p"], int(fields[b"t"]))


def chunk_after(blocks: list[Block], cursor: int, max_bytes: int) -> tuple[Chunk, int]:
    """Records after line ``cursor`` from consecutive ``blocks``: ``(chunk, first line in it)``.

    ``blocks`` start with the one holding line ``cursor + 1`` (or a later one, when lines were
    lost: the first line found is then more than ``cursor + 1`` and the caller reports a gap).
    Whole records up to ``max_bytes`` (at least one line), as ``Ring.read_after``.
    """
    parts: list[bytes] = []
    size = 0
    first_found = cursor + 1
    last = cursor
    time_ms = 0
    for block in blocks:
        if block.last <= cursor:
            continue
        payload = block.payload
        if not parts:
            time_ms = block.time_ms
            if block.first <= cursor:
                payload = payload[sse.find_line_record(payload, cursor + 1) :]
            else:
                first_found = block.first
            if len(payload) > max_bytes:
                return Chunk(payload, block.last, time_ms).within(max_bytes), first_found
        elif size + len(payload) > max_bytes:
            break
        parts.append(payload)
        size += len(payload)
        last = block.last
    return Chunk(b"".join(parts), last, time_ms), first_found


def spec_json(job_fields: dict[str, Any]) -> str:
    """The ``spec`` field: a job's fields without the ones that change while it runs."""
    return json.dumps({k: v for k, v in job_fields.items() if k not in STATE_FIELDS})


def job_fields_from_hash(fields: dict[bytes, bytes]) -> dict[str, Any]:
    """The job's fields from its hash (as ``spec_json`` wrote them, plus the current state)."""
    shown: dict[str, Any] = json.loads(fields[b"spec"])
    exit_code = fields.get(b"exit_code", b"")
    finished_at = fields.get(b"finished_at", b"")
    shown["lines"] = int(fields.get(b"lines", b"0"))
    shown["status"] = fields.get(b"status", b"running").decode()
    shown["exit_code"] = int(exit_code) if exit_code else None
    shown["finished_at"] = finished_at.decode() or None
    if b"problems" in fields:  # the counts recorded with the end
        shown["problems"] = json.loads(fields[b"problems"])
    return shown
