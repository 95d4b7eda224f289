r"""Lua for `RedisStore`: every write that touches more than one key is one script.

Conventions, kept by every script:

- ``ARGV[1]`` is the key prefix; other key names are built from it (one Redis node, or a
  cluster with the whole prefix in one hash slot).
- Numbers the client reads back (timestamps, expiry) are stored as the exact strings the
  client sent (Python ``repr``): Lua's ``tostring`` keeps only 14 digits.
- A script answers with a table whose first item says how it went (``ok``, ``missing``,
  ``stale``, ``held``, ``dup``, ``transition``, ``conflict``, ``resolved``); the client
  turns that into the same errors every backend raises.

Key layout under prefix ``P``::

    P:schema                 schema version (string)
    P:run:<id>               hash: the run (fields as on RunRecord, JSON where user data)
    P:steps:<id>             hash: "<f>:<agent>" -> field f of the step (s o a e d c)
    P:seqs:<id>              zset: agent -> commit seq
    P:state:<id>             hash: v (version), d (JSON)
    P:runs                   zset of "<counter:016>:<id>" by created_at (all runs)
    P:runs:w:<wf> / :s:<st> / :ws:<st>:<wf>     the same, per workflow / status / both
    P:due                    zset: paused runs by resume_at
    P:expiring               zset: index entries of expiring runs, by server ms
    P:dlq, P:dlq:w:<wf>      zsets of entry ids by insertion counter
    P:dlq:e:<id>, P:dlq:byrun   the entry hash; run id -> entry id
    P:rv:all / :open / :resolved   zsets of review ids by counter
    P:rv:e:<id>, P:rv:openstep  the item hash; "<run>\\0<agent>" -> open item id
    P:rv:run:<run>           zset of the run's review ids by counter (schema 2)
    P:seq:runs / :dlq / :rv  counters
"""

from __future__ import annotations

__all__ = [
    "ACQUIRE",
    "BEGIN_RUN",
    "CAS_STATE",
    "COLLECT",
    "COMMIT_STEP",
    "CREATE_RUN",
    "DLQ_DROP",
    "DLQ_PUT",
    "FINISH_RUN",
    "HOT_BATCH",
    "INDEX_REVIEWS",
    "LEASE_AND_STEP",
    "RELEASE",
    "RENEW",
    "RESET_STEPS",
    "REVIEW_PUT",
    "REVIEW_RESOLVE",
    "SET_INPUT",
    "SET_RUN_STATUS",
    "UPDATE_STEP",
]

_COMMON = r"""
local P = ARGV[1]

local function fence(r, owner, token)
  local f = redis.call('HMGET', r, 'lease_owner', 'lease_token')
  if not f[2] then return 'missing' end
  if f[1] ~= owner or f[2] ~= token then return 'stale' end
  return nil
end

local function run_keys(id)
  return {P .. ':run:' .. id, P .. ':steps:' .. id, P .. ':seqs:' .. id, P .. ':state:' .. id}
end

local function index_keys(wf, st)
  return {P .. ':runs', P .. ':runs:w:' .. wf, P .. ':runs:s:' .. st,
          P .. ':runs:ws:' .. st .. ':' .. wf}
end

local function exp_member(wf, st, member)
  return st .. ' ' .. #wf .. ' ' .. wf .. member
end

local function server_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Drop index entries of runs whose keys expired (a few per call, so it stays cheap).
local function sweep()
  local due = redis.call('ZRANGEBYSCORE', P .. ':expiring', '-inf', server_ms(), 'LIMIT', 0, 32)
  for _, m in ipairs(due) do
    local sp1 = string.find(m, ' ', 1, true)
    local sp2 = string.find(m, ' ', sp1 + 1, true)
    local st = string.sub(m, 1, sp1 - 1)
    local n = tonumber(string.sub(m, sp1 + 1, sp2 - 1))
    local wf = string.sub(m, sp2 + 1, sp2 + n)
    local member = string.sub(m, sp2 + n + 1)
    if redis.call('EXISTS', P .. ':run:' .. string.sub(member, 18)) == 0 then
      for _, k in ipairs(index_keys(wf, st)) do redis.call('ZREM', k, member) end
      redis.call('ZREM', P .. ':due', member)
    end
    redis.call('ZREM', P .. ':expiring', m)
  end
end
"""

CREATE_RUN = (
    _COMMON
    + r"""
-- ARGV: P, run_id, workflow, input, now
local id, wf = ARGV[2], ARGV[3]
local r = P .. ':run:' .. id
if redis.call('EXISTS', r) == 1 then return {0, redis.call('HGETALL', r)} end
sweep()
local member = string.format('%016d', redis.call('INCR', P .. ':seq:runs')) .. ':' .. id
redis.call('HSET', r, 'workflow', wf, 'status', 'pending', 'input', ARGV[4],
  'created_at', ARGV[5], 'updated_at', ARGV[5], 'result', 'null', 'error', 'null',
  'lease_token', '0', 'member', member)
for _, k in ipairs(index_keys(wf, 'pending')) do redis.call('ZADD', k, ARGV[5], member) end
return {1, redis.call('HGETALL', r)}
"""
)

# The status change every status-setting script shares: indexes, resume time, expiry.
# run_json: the run's hash as one JSON object (one bulk string to parse, not 2n replies).
_APPLY_STATUS = r"""
local function run_json(r)
  local flat, h = redis.call('HGETALL', r), {}
  for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
  return cjson.encode(h)
end

-- r: the run's key; id: its run id; new: the status; result, error: JSON; resume ('' = none);
-- ttl ('' = keep forever): milliseconds until the run's keys expire
local function apply_status(r, id, new, result, error, resume, now, ttl)
  local f = redis.call('HMGET', r, 'workflow', 'status', 'member', 'created_at')
  local wf, old, member, created = f[1], f[2], f[3], f[4]
  if old ~= new then
    local before, after = index_keys(wf, old), index_keys(wf, new)
    for i = 3, 4 do
      redis.call('ZREM', before[i], member)
      redis.call('ZADD', after[i], created, member)
    end
  end
  redis.call('HSET', r, 'status', new, 'result', result, 'error', error, 'updated_at', now)
  if resume == '' then
    redis.call('HDEL', r, 'resume_at')
  else
    redis.call('HSET', r, 'resume_at', resume)
  end
  if new == 'paused' and resume ~= '' then
    redis.call('ZADD', P .. ':due', resume, member)
  else
    redis.call('ZREM', P .. ':due', member)
  end
  redis.call('ZREM', P .. ':expiring', exp_member(wf, old, member))
  if ttl == '' then
    for _, k in ipairs(run_keys(id)) do redis.call('PERSIST', k) end
  else
    local ms = tonumber(ttl)
    for _, k in ipairs(run_keys(id)) do redis.call('PEXPIRE', k, ms) end
    redis.call('ZADD', P .. ':expiring', server_ms() + ms, exp_member(wf, new, member))
  end
end
"""

SET_RUN_STATUS = (
    _COMMON
    + _APPLY_STATUS
    + r"""
-- ARGV: P, run_id, owner, token, status, result, error, resume_at ('' = none), now,
--       ttl_ms ('' = keep forever)
local id = ARGV[2]
local r = P .. ':run:' .. id
local bad = fence(r, ARGV[3], ARGV[4])
if bad then return {bad} end
apply_status(r, id, ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10])
sweep()
return {'ok', redis.call('HGETALL', r)}
"""
)

_FINISH_RUN_BODY = r"""
-- SET_RUN_STATUS, then the lease released: one script, one round trip.
-- ARGV: P, run_id, owner, token, status, result, error, resume_at ('' = none), now,
--       ttl_ms ('' = keep forever)
local id = ARGV[2]
local r = P .. ':run:' .. id
local bad = fence(r, ARGV[3], ARGV[4])
if bad then return {bad} end
apply_status(r, id, ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10])
redis.call('HDEL', r, 'lease_owner', 'lease_expires')
sweep()
return {'ok', run_json(r)}
"""

FINISH_RUN = _COMMON + _APPLY_STATUS + _FINISH_RUN_BODY


_BEGIN_RUN_BODY = r"""
-- CREATE_RUN, then (unless finished or foreign) ACQUIRE and SET_RUN_STATUS running.
-- ARGV: P, run_id, workflow, input, now, owner, expires_at
-- Reply: {created (1/0), 'ok', token, run} | {created, 'none', run} | {created, 'held', owner,
--         expires}; run: the hash as a JSON object
local id, wf, now, owner = ARGV[2], ARGV[3], ARGV[5], ARGV[6]
local r = P .. ':run:' .. id
local created = 0
if redis.call('EXISTS', r) == 0 then
  local member = string.format('%016d', redis.call('INCR', P .. ':seq:runs')) .. ':' .. id
  redis.call('HSET', r, 'workflow', wf, 'status', 'pending', 'input', ARGV[4],
    'created_at', now, 'updated_at', now, 'result', 'null', 'error', 'null',
    'lease_token', '0', 'member', member)
  for _, k in ipairs(index_keys(wf, 'pending')) do redis.call('ZADD', k, now, member) end
  created = 1
end
local f = redis.call('HMGET', r, 'workflow', 'status', 'lease_owner', 'lease_expires')
local st = f[2]
if f[1] ~= wf or st == 'succeeded' or st == 'degraded' or st == 'failed' then
  return {created, 'none', run_json(r)}
end
local holder, expires = f[3], f[4]
if holder and expires and tonumber(expires) > tonumber(now) and holder ~= owner then
  return {created, 'held', holder, expires}
end
local token = redis.call('HINCRBY', r, 'lease_token', 1)  -- re-entry too: fences the old driver
redis.call('HSET', r, 'lease_owner', owner, 'lease_expires', ARGV[7])
apply_status(r, id, 'running', 'null', 'null', '', now, '')
sweep()
return {created, 'ok', token, run_json(r)}
"""

BEGIN_RUN = _COMMON + _APPLY_STATUS + _BEGIN_RUN_BODY


ACQUIRE = r"""
-- ARGV: P, run_id, owner, now, expires_at
local r = ARGV[1] .. ':run:' .. ARGV[2]
local f = redis.call('HMGET', r, 'lease_owner', 'lease_token', 'lease_expires')
if not f[2] then return {'missing'} end
local owner, token, expires = f[1], tonumber(f[2]), f[3]
local live = owner and expires and tonumber(expires) > tonumber(ARGV[4])
if live and owner ~= ARGV[3] then return {'held', owner, expires} end
token = redis.call('HINCRBY', r, 'lease_token', 1)  -- re-entry too: fences the old driver
redis.call('HSET', r, 'lease_owner', ARGV[3], 'lease_expires', ARGV[5])
return {'ok', token}
"""

RENEW = (
    _COMMON
    + r"""
-- ARGV: P, run_id, owner, token, expires_at
local r = P .. ':run:' .. ARGV[2]
local bad = fence(r, ARGV[3], ARGV[4])
if bad then return {bad} end
redis.call('HSET', r, 'lease_expires', ARGV[5])
return {'ok'}
"""
)

RELEASE = r"""
-- ARGV: P, run_id, owner, token
local r = ARGV[1] .. ':run:' .. ARGV[2]
local f = redis.call('HMGET', r, 'lease_owner', 'lease_token')
if f[1] == ARGV[3] and f[2] == ARGV[4] then
  redis.call('HDEL', r, 'lease_owner', 'lease_expires')
end
return {'ok'}
"""

_STEP_FIELDS = r"""
local function step_fields(steps, seqs, agent)
  local v = redis.call('HMGET', steps, 's:' .. agent, 'o:' .. agent, 'a:' .. agent,
    'e:' .. agent, 'd:' .. agent, 'c:' .. agent)
  v[7] = redis.call('ZSCORE', seqs, agent)
  return v
end

local function next_seq(seqs)
  local top = redis.call('ZREVRANGE', seqs, 0, 0, 'WITHSCORES')
  if #top == 0 then return 1 end
  return tonumber(top[2]) + 1
end

-- Keys written after the run started expiring must expire with it.
local function follow_ttl(r, keys)
  local ttl = redis.call('PTTL', r)
  if ttl > 0 then
    for _, k in ipairs(keys) do redis.call('PEXPIRE', k, ttl) end
  end
end
"""

_LEASE_AND_STEP_BODY = r"""
-- A worker's check before a task: the run's lease and one step, read as one unit.
-- ARGV: P, run_id, agent
-- Reply: lease_owner, lease_token, lease_expires, the step's fields (s o a e d c), its seq;
-- nil where missing (no owner: the run is gone or its lease released; no seq: not committed)
local id = ARGV[2]
local f = redis.call('HMGET', P .. ':run:' .. id, 'lease_owner', 'lease_token', 'lease_expires')
local v = step_fields(P .. ':steps:' .. id, P .. ':seqs:' .. id, ARGV[3])
return {f[1], f[2], f[3], v[1], v[2], v[3], v[4], v[5], v[6], v[7]}
"""

LEASE_AND_STEP = "local P = ARGV[1]\n" + _STEP_FIELDS + _LEASE_AND_STEP_BODY

_COMMIT_STEP_BODY = r"""
-- ARGV: P, run_id, owner, token, agent, status, output, attempts, error, reason, completed_at,
-- then the commands to run after a first commit, if any (`commit_step_then`: in HOT_BATCH,
-- a list of commands, each a list of strings; they run only if this commit is the first)
local id, agent = ARGV[2], ARGV[5]
local r, steps, seqs = P .. ':run:' .. id, P .. ':steps:' .. id, P .. ':seqs:' .. id
local bad = fence(r, ARGV[3], ARGV[4])
if bad then return {bad} end
if redis.call('HEXISTS', steps, 's:' .. agent) == 1 then return {'dup'} end
redis.call('HSET', steps, 's:' .. agent, ARGV[6], 'o:' .. agent, ARGV[7],
  'a:' .. agent, ARGV[8], 'e:' .. agent, ARGV[9], 'd:' .. agent, ARGV[10],
  'c:' .. agent, ARGV[11])
redis.call('ZADD', seqs, next_seq(seqs), agent)
follow_ttl(r, {steps, seqs})
if type(ARGV[12]) == 'table' then
  for _, command in ipairs(ARGV[12]) do redis.call(unpack(command)) end
end
return {'ok'}
"""

COMMIT_STEP = _COMMON + _STEP_FIELDS + _COMMIT_STEP_BODY


UPDATE_STEP = (
    _COMMON
    + _STEP_FIELDS
    + r"""
-- ARGV: P, run_id, owner, token, agent, status, error, keep_output (1/0), output, now,
--       resequence (1/0), allowed old statuses (space-separated)
local id, agent = ARGV[2], ARGV[5]
local r, steps, seqs = P .. ':run:' .. id, P .. ':steps:' .. id, P .. ':seqs:' .. id
local bad = fence(r, ARGV[3], ARGV[4])
if bad then return {bad} end
local old = redis.call('HGET', steps, 's:' .. agent)
if not old then return {'missing'} end
if not string.find(' ' .. ARGV[12] .. ' ', ' ' .. old .. ' ', 1, true) then
  return {'transition', old}
end
redis.call('HSET', steps, 's:' .. agent, ARGV[6], 'e:' .. agent, ARGV[7])
if ARGV[8] == '0' then redis.call('HSET', steps, 'o:' .. agent, ARGV[9]) end
if ARGV[11] == '1' then
  local seq = next_seq(seqs)
  redis.call('ZADD', seqs, seq, agent)
  redis.call('HSET', steps, 'c:' .. agent, ARGV[10])
end
return {'ok', step_fields(steps, seqs, agent)}
"""
)

RESET_STEPS = (
    _COMMON
    + r"""
-- ARGV: P, run_id, owner, token, agent...
local id = ARGV[2]
local r, steps, seqs = P .. ':run:' .. id, P .. ':steps:' .. id, P .. ':seqs:' .. id
local bad = fence(r, ARGV[3], ARGV[4])
if bad then return {bad} end
local n = 0
for i = 5, #ARGV do
  local a = ARGV[i]
  n = n + redis.call('HDEL', steps, 's:' .. a, 'o:' .. a, 'a:' .. a, 'e:' .. a, 'd:' .. a,
    'c:' .. a) / 6
  redis.call('ZREM', seqs, a)
end
return {'ok', n}
"""
)

SET_INPUT = (
    _COMMON
    + r"""
-- ARGV: P, run_id, owner, token, input, now
local r = P .. ':run:' .. ARGV[2]
local bad = fence(r, ARGV[3], ARGV[4])
if bad then return {bad} end
redis.call('HSET', r, 'input', ARGV[5], 'updated_at', ARGV[6])
return {'ok'}
"""
)

CAS_STATE = (
    _COMMON
    + r"""
-- ARGV: P, run_id, expected, data, owner, token ('' and '': not fenced)
if ARGV[5] ~= '' then
  local bad = fence(P .. ':run:' .. ARGV[2], ARGV[5], ARGV[6])
  if bad then return {bad} end
end
local k = ARGV[1] .. ':state:' .. ARGV[2]
local actual = tonumber(redis.call('HGET', k, 'v') or '0')
if actual ~= tonumber(ARGV[3]) then return {'conflict', actual} end
redis.call('HSET', k, 'v', actual + 1, 'd', ARGV[4])
local ttl = redis.call('PTTL', ARGV[1] .. ':run:' .. ARGV[2])
if ttl > 0 then redis.call('PEXPIRE', k, ttl) end
return {'ok', actual + 1}
"""
)

DLQ_PUT = r"""
-- ARGV: P, new_id, run_id, workflow, reason, error, input, steps, now
local P, run_id, wf = ARGV[1], ARGV[3], ARGV[4]
local byrun = P .. ':dlq:byrun'
local id = redis.call('HGET', byrun, run_id)
if id then
  local e = P .. ':dlq:e:' .. id
  local owf = redis.call('HGET', e, 'workflow')
  if owf then redis.call('ZREM', P .. ':dlq:w:' .. owf, id) end
  redis.call('ZREM', P .. ':dlq', id)
  redis.call('DEL', e)
else
  id = ARGV[2]
end
local n = redis.call('INCR', P .. ':seq:dlq')
redis.call('HSET', P .. ':dlq:e:' .. id, 'id', id, 'run_id', run_id, 'workflow', wf,
  'reason', ARGV[5], 'error', ARGV[6], 'input', ARGV[7], 'steps', ARGV[8], 'created_at', ARGV[9])
redis.call('ZADD', P .. ':dlq', n, id)
redis.call('ZADD', P .. ':dlq:w:' .. wf, n, id)
redis.call('HSET', byrun, run_id, id)
return id
"""

DLQ_DROP = r"""
-- ARGV: P, id
local P, id = ARGV[1], ARGV[2]
local e = P .. ':dlq:e:' .. id
local f = redis.call('HMGET', e, 'run_id', 'workflow')
if not f[1] then return 0 end
redis.call('DEL', e)
redis.call('ZREM', P .. ':dlq', id)
redis.call('ZREM', P .. ':dlq:w:' .. f[2], id)
if redis.call('HGET', P .. ':dlq:byrun', f[1]) == id then
  redis.call('HDEL', P .. ':dlq:byrun', f[1])
end
return 1
"""

REVIEW_PUT = r"""
-- ARGV: P, new_id, run_id, workflow, agent, reason, suggestions, context, now
local P, id = ARGV[1], ARGV[2]
local step = ARGV[3] .. '\0' .. ARGV[5]
local old = redis.call('HGET', P .. ':rv:openstep', step)
if old then return old end
local n = redis.call('INCR', P .. ':seq:rv')
redis.call('HSET', P .. ':rv:e:' .. id, 'id', id, 'run_id', ARGV[3], 'workflow', ARGV[4],
  'agent', ARGV[5], 'reason', ARGV[6], 'suggestions', ARGV[7], 'context', ARGV[8],
  'status', 'open', 'value', 'null', 'created_at', ARGV[9])
redis.call('ZADD', P .. ':rv:all', n, id)
redis.call('ZADD', P .. ':rv:open', n, id)
redis.call('ZADD', P .. ':rv:run:' .. ARGV[3], n, id)
redis.call('HSET', P .. ':rv:openstep', step, id)
return id
"""

INDEX_REVIEWS = r"""
-- Schema 1 -> 2: add up to ARGV[3] items of P:rv:all, from rank ARGV[2], to their run's
-- P:rv:run:<run>; after the last, mark the prefix schema 2 (if still 1). Repeatable: a ZADD
-- of what is there changes nothing. Returns the count read (< ARGV[3]: done).
local P, start, count = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local ids = redis.call('ZRANGE', P .. ':rv:all', start, start + count - 1, 'WITHSCORES')
for i = 1, #ids, 2 do
  local run = redis.call('HGET', P .. ':rv:e:' .. ids[i], 'run_id')
  if run then redis.call('ZADD', P .. ':rv:run:' .. run, ids[i + 1], ids[i]) end
end
if #ids / 2 < count and redis.call('GET', P .. ':schema') == '1' then
  redis.call('SET', P .. ':schema', '2')
end
return #ids / 2
"""

REVIEW_RESOLVE = r"""
-- ARGV: P, id, value, now
local P, id = ARGV[1], ARGV[2]
local e = P .. ':rv:e:' .. id
local f = redis.call('HMGET', e, 'status', 'run_id', 'agent')
if not f[1] then return {'missing'} end
if f[1] == 'resolved' then return {'resolved'} end
redis.call('HSET', e, 'status', 'resolved', 'value', ARGV[3], 'resolved_at', ARGV[4])
local n = redis.call('ZSCORE', P .. ':rv:open', id)
redis.call('ZREM', P .. ':rv:open', id)
redis.call('ZADD', P .. ':rv:resolved', n, id)
-- Indexed again: an item a process of schema 1 wrote after the upgrade (a rolling deploy)
-- has no entry there, and a resume must find its answer.
redis.call('ZADD', P .. ':rv:run:' .. f[2], n, id)
local step = f[2] .. '\0' .. f[3]
if redis.call('HGET', P .. ':rv:openstep', step) == id then
  redis.call('HDEL', P .. ':rv:openstep', step)
end
return {'ok', redis.call('HGETALL', e)}
"""

COLLECT = r"""
-- Read up to a page of records listed in a sorted set, from a rank on, dropping entries
-- whose record has expired. The client calls it page by page (`RedisStore._collect`), so
-- no call blocks the server for long however big the index.
-- KEYS[1]: the zset. ARGV: hash-key prefix, chars of the member before the id (0 or 17),
-- mode (asc | desc | upto), page size, max score (mode upto), start rank.
-- Returns {next start rank (-1: the index is exhausted), records}: fewer than a page when
-- it met more expired entries than records (each dropped), so no call scans without bound.
local idx, pfx, skip, mode, page = KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local out, start, scanned, most = {}, tonumber(ARGV[6]), 0, 2 * tonumber(ARGV[4]) + 100
while #out < page and scanned < most do
  local ms
  if mode == 'desc' then
    ms = redis.call('ZREVRANGE', idx, start, start + 99)
  elseif mode == 'asc' then
    ms = redis.call('ZRANGE', idx, start, start + 99)
  else
    ms = redis.call('ZRANGEBYSCORE', idx, '-inf', ARGV[5], 'LIMIT', start, 100)
  end
  if #ms == 0 then return {-1, out} end
  for _, m in ipairs(ms) do
    if #out >= page or scanned >= most then break end
    scanned = scanned + 1
    local rec = redis.call('HGETALL', pfx .. string.sub(m, skip + 1))
    if #rec == 0 then
      redis.call('ZREM', idx, m)
    else
      out[#out + 1] = rec
      start = start + 1
    end
  end
end
return {start, out}
"""

HOT_BATCH = (
    _COMMON
    + _APPLY_STATUS
    + _STEP_FIELDS
    + "\nlocal function begin_run(ARGV)\n"
    + _BEGIN_RUN_BODY
    + "end\n\nlocal function commit_step(ARGV)\n"
    + _COMMIT_STEP_BODY
    + "end\n\nlocal function finish_run(ARGV)\n"
    + _FINISH_RUN_BODY
    + "end\n\nlocal function lease_and_step(ARGV)\n"
    + _LEASE_AND_STEP_BODY
    + r"""end

-- COMMIT_STEP, then FINISH_RUN only if the commit was the first (`commit_step_and_finish`).
-- ARGV: COMMIT_STEP's (P .. completed_at), then FINISH_RUN's after the fence: status,
--       result, error, resume_at ('' = none), now, ttl_ms ('' = keep forever)
-- Reply: the commit's
local function commit_finish(ARGV)
  local done = commit_step({unpack(ARGV, 1, 11)})
  if done[1] == 'ok' then
    finish_run({ARGV[1], ARGV[2], ARGV[3], ARGV[4], unpack(ARGV, 12, 17)})
  end
  return done
end

-- The hot calls of many runs in one call: BEGIN_RUN, COMMIT_STEP, FINISH_RUN, the two
-- together, and a worker's LEASE_AND_STEP, each run as its own script would run it (so as
-- a unit of its own, in the order given).
-- ARGV: P, a JSON array of operations [kind, arguments after P...], every argument a
--       string (but a commit's commands to run after it); kind 'b' (BEGIN_RUN),
--       'c' (COMMIT_STEP), 'f' (FINISH_RUN), 'cf' (commit_finish) or 'l' (LEASE_AND_STEP).
-- Reply: each operation's reply, in order; {'err', message} for one whose script raised
-- (the others still apply, as in a pipeline of the separate scripts).
local scripts = {b = begin_run, c = commit_step, f = finish_run, cf = commit_finish,
                 l = lease_and_step}
local out = {}
for i, op in ipairs(cjson.decode(ARGV[2])) do
  local fn = scripts[op[1]]
  op[1] = P
  local ok, reply = pcall(fn, op)
  if not ok then
    if type(reply) == 'table' then reply = reply.err end
    reply = {'err', tostring(reply)}
  end
  out[i] = reply
end
return out
"""
)
