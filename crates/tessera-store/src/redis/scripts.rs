//! The Lua scripts: each runs atomically and touches the keys of one hash tag (one cluster slot).
//! Keys a script names itself (a session of a listed hash, a family's set) carry the same tag as
//! the `KEYS` it was given, so they live in the slot the script runs on.

use std::sync::LazyLock;

use ::redis::aio::ConnectionLike;
use ::redis::{FromRedisValue, Pipeline, RedisResult, Script, ToRedisArgs};

/// Helpers every script starts with. Redis's Lua numbers are doubles: timestamps in
/// milliseconds are exact, and `int` formats them without an exponent.
const PRELUDE: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function int(x)
  return string.format('%d', x)
end
-- The key expires at `deadline` unless it already lasts longer.
local function extend(key, now, deadline)
  local pttl = redis.call('PTTL', key)
  if pttl == -1 or (pttl >= 0 and now + pttl < deadline) then
    redis.call('PEXPIREAT', key, int(deadline))
  end
end
-- The zset `z` (scored by deadlines on Redis's clock) forgets what is dead, takes `member`, and
-- expires with its last member.
local function index_put(z, now, member, deadline)
  redis.call('ZREMRANGEBYSCORE', z, '-inf', int(now))
  redis.call('ZADD', z, int(deadline), member)
  local last = redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', z, int(tonumber(last[2])))
end
-- `key` expires `grace` ms after the last expiry in the zset `z` (scored by the callers' clock),
-- and never sooner than `grace` from now, nor later than `max_ttl` from now.
local function expire_after_last(key, z, now, grace, max_ttl)
  local last = redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')
  local deadline = now + grace
  if last[2] then
    deadline = math.max(tonumber(last[2]), now) + grace
  end
  deadline = math.min(deadline, now + max_ttl)
  redis.call('PEXPIREAT', key, int(deadline))
  return deadline
end
";

/// A script and its source (pipelines send the source with `EVAL`; single calls use `EVALSHA`).
pub(super) struct Lua {
    code: String,
    script: Script,
}

impl Lua {
    fn new(body: &str) -> Self {
        let code = format!("{PRELUDE}{body}");
        Self {
            script: Script::new(&code),
            code,
        }
    }

    pub(super) fn call(&self) -> Call<'_> {
        Call {
            lua: self,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }
}

/// One invocation: keys and arguments.
pub(super) struct Call<'a> {
    lua: &'a Lua,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl Call<'_> {
    pub(super) fn key(mut self, key: impl ToRedisArgs) -> Self {
        key.write_redis_args(&mut self.keys);
        self
    }

    pub(super) fn arg(mut self, arg: impl ToRedisArgs) -> Self {
        arg.write_redis_args(&mut self.args);
        self
    }

    /// The first key: every key of a script shares its hash tag, so this names the slot.
    pub(super) fn first_key(&self) -> &[u8] {
        self.keys.first().map_or(&[], Vec::as_slice)
    }

    /// Runs the script by its hash, loading it first if Redis does not know it (after a restart).
    pub(super) async fn run<T: FromRedisValue>(
        &self,
        conn: &mut impl ConnectionLike,
    ) -> RedisResult<T> {
        let mut invocation = self.lua.script.prepare_invoke();
        for key in &self.keys {
            invocation.key(key);
        }
        for arg in &self.args {
            invocation.arg(arg);
        }
        invocation.invoke_async(conn).await
    }

    /// Adds the script to a pipeline (as `EVAL`, which needs no loading).
    pub(super) fn add_to(&self, pipe: &mut Pipeline) {
        pipe.cmd("EVAL")
            .arg(&self.lua.code)
            .arg(self.keys.len())
            .arg(&self.keys)
            .arg(&self.args);
    }
}

macro_rules! script {
    ($(#[$doc:meta])* $name:ident = $body:expr) => {
        $(#[$doc])*
        pub(super) static $name: LazyLock<Lua> = LazyLock::new(|| Lua::new($body));
    };
}

// ---------------------------------------------------------------------------------------------
// Sessions. KEYS[1] is the session hash and KEYS[2] the user's index, both tagged by the user.

script!(
    /// ARGV: ttl_ms, hash, then field/value pairs. Writes the session and indexes it.
    SESSION_CREATE = r"
local now = now_ms()
local deadline = now + tonumber(ARGV[1])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('PEXPIREAT', KEYS[1], int(deadline))
index_put(KEYS[2], now, ARGV[2], deadline)
return 1
"
);

script!(
    /// ARGV: handle, hash, last_seen_at, expires_at, ttl_ms. 1 if touched, 0 if gone.
    SESSION_TOUCH = r"
if redis.call('HGET', KEYS[1], 'handle') ~= ARGV[1] then
  return 0
end
local now = now_ms()
local deadline = now + tonumber(ARGV[5])
redis.call('HSET', KEYS[1], 'seen', ARGV[3], 'exp', ARGV[4])
redis.call('PEXPIREAT', KEYS[1], int(deadline))
index_put(KEYS[2], now, ARGV[2], deadline)
return 1
"
);

script!(
    /// KEYS[1] only. ARGV: handle, expected version, new version, data. The compare-and-swap:
    /// versions compare as strings (both written from an i64 by Rust), so no precision is lost.
    SESSION_DATA = r"
if redis.call('HGET', KEYS[1], 'handle') ~= ARGV[1] then
  return 0
end
if redis.call('HGET', KEYS[1], 'ver') ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], 'data', ARGV[4], 'ver', ARGV[3])
return 1
"
);

script!(
    /// KEYS[1] only. ARGV: handle, the authentication context's stored form. 1 if written, 0
    /// when the session is gone (a write to a missing hash would recreate part of it).
    SESSION_AUTH = r"
if redis.call('HGET', KEYS[1], 'handle') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'auth', ARGV[2])
return 1
"
);

script!(
    /// ARGV: handle, hash. 1 if deleted, 0 if it was not there.
    SESSION_DELETE = r"
if redis.call('HGET', KEYS[1], 'handle') ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
"
);

script!(
    /// The sweep of one session. ARGV: hash, now (the caller's clock). Returns {1, handle} if
    /// deleted, {2, expires_at} if it has not expired (the index was stale), {0, ''} if gone.
    SESSION_EXPIRE = r"
local f = redis.call('HMGET', KEYS[1], 'handle', 'exp')
if not f[1] then
  return {0, ''}
end
if tonumber(f[2]) > tonumber(ARGV[2]) then
  return {2, f[2]}
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return {1, f[1]}
"
);

script!(
    /// KEYS[1]: the user's index. ARGV: the user's session key prefix. Every session as a flat
    /// field/value list; entries whose session is gone leave the index.
    SESSIONS_OF_USER = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', int(now_ms()))
local out = {}
for _, hash in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local fields = redis.call('HGETALL', ARGV[1] .. hash)
  if #fields == 0 then
    redis.call('ZREM', KEYS[1], hash)
  else
    out[#out + 1] = fields
  end
end
return out
"
);

script!(
    /// KEYS[1]: the user's index. ARGV: the user's session key prefix, the handle to keep (or '').
    /// Deletes the others; returns hash, handle, hash, handle… of those deleted.
    SESSIONS_DELETE_OF_USER = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', int(now_ms()))
local out = {}
for _, hash in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = ARGV[1] .. hash
  local handle = redis.call('HGET', key, 'handle')
  if not handle then
    redis.call('ZREM', KEYS[1], hash)
  elseif handle ~= ARGV[2] then
    redis.call('DEL', key)
    redis.call('ZREM', KEYS[1], hash)
    out[#out + 1] = hash
    out[#out + 1] = handle
  end
end
return out
"
);

script!(
    /// KEYS[1]: the sweep index. ARGV: expires_at, member, ttl_ms. Adds or moves the member and
    /// keeps the index alive as long as its longest-lived session.
    SWEEP_INDEX_PUT = r"
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
local now = now_ms()
extend(KEYS[1], now, now + tonumber(ARGV[3]))
return 1
"
);

// ---------------------------------------------------------------------------------------------
// Revocations: every key is tagged `{rev}`. The allowlist's records are `[family, user,
// expires_at]`; its family and user sets are named from ARGV's base, in the same slot.

script!(
    /// KEYS[1]: the denylist. ARGV: expires_at, member, grace_ms, max_ttl_ms. Recorded again, an
    /// entry keeps the later expiry (`GT`).
    DENY_ADD = r"
redis.call('ZADD', KEYS[1], 'GT', ARGV[1], ARGV[2])
expire_after_last(KEYS[1], KEYS[1], now_ms(), tonumber(ARGV[3]), tonumber(ARGV[4]))
return 1
"
);

/// Removes the allowlist record of `jti`, and its entries in the family and user sets.
const ALLOW_FORGET: &str = r"
local function forget(records, expiry, base, jti)
  local old = redis.call('HGET', records, jti)
  if not old then
    return 0
  end
  local rec = cjson.decode(old)
  redis.call('SREM', base .. 'fam:' .. rec[1], jti)
  redis.call('SREM', base .. 'usr:' .. rec[2], jti)
  redis.call('HDEL', records, jti)
  redis.call('ZREM', expiry, jti)
  return 1
end
";

script!(
    /// KEYS: records, expiry index, family set, user set. ARGV: jti, record, expires_at,
    /// grace_ms, max_ttl_ms, base. Recorded again, a jti takes the new record's place everywhere.
    ALLOW_ADD = &format!(
        "{ALLOW_FORGET}{}",
        r"
forget(KEYS[1], KEYS[2], ARGV[6], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[1])
local now = now_ms()
local grace = tonumber(ARGV[4])
local max_ttl = tonumber(ARGV[5])
expire_after_last(KEYS[1], KEYS[2], now, grace, max_ttl)
expire_after_last(KEYS[2], KEYS[2], now, grace, max_ttl)
local mine = math.min(math.max(tonumber(ARGV[3]), now) + grace, now + max_ttl)
extend(KEYS[3], now, mine)
extend(KEYS[4], now, mine)
return 1
"
    )
);

script!(
    /// KEYS: records, expiry index. ARGV: jti, base. 1 if it was there.
    ALLOW_REMOVE = &format!(
        "{ALLOW_FORGET}{}",
        r"
return forget(KEYS[1], KEYS[2], ARGV[2], ARGV[1])
"
    )
);

script!(
    /// KEYS: records, expiry index, a family's or a user's set. ARGV: base. How many went.
    ALLOW_REMOVE_SET = &format!(
        "{ALLOW_FORGET}{}",
        r"
local n = 0
for _, jti in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  n = n + forget(KEYS[1], KEYS[2], ARGV[1], jti)
end
redis.call('DEL', KEYS[3])
return n
"
    )
);

script!(
    /// KEYS: denylist, records, expiry index. ARGV: now (the caller's clock), base, batch.
    /// Returns {denylist entries removed, tokens removed, tokens looked at}; tokens go `batch`
    /// at a time.
    PURGE = &format!(
        "{ALLOW_FORGET}{}",
        r"
local entries = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local removed = 0
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, jti in ipairs(expired) do
  if forget(KEYS[2], KEYS[3], ARGV[2], jti) == 1 then
    removed = removed + 1
  else
    redis.call('ZREM', KEYS[3], jti)
  end
end
return {entries, removed, #expired}
"
    )
);

// ---------------------------------------------------------------------------------------------
// Throttling

script!(
    /// GCRA. KEYS[1]: the key's theoretical arrival time (µs, Redis's clock). ARGV: burst,
    /// per_minute, spend (1: spend the attempt when it may go ahead; 0: only tell). Returns
    /// {1, 0} when the attempt may go ahead, {0, µs to wait} when not.
    GCRA = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local burst = tonumber(ARGV[1])
local interval = 60000000 / tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then
  tat = now
end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if allow_at > now then
  return {0, math.ceil(allow_at - now)}
end
if ARGV[3] ~= '1' then
  return {1, 0}
end
redis.call('SET', KEYS[1], int(math.ceil(new_tat)), 'PX', int(math.ceil((new_tat - now) / 1000) + 1))
return {1, 0}
"
);

script!(
    /// Gives back one attempt spent by GCRA. KEYS[1]: as GCRA's. ARGV: per_minute. The
    /// theoretical arrival time moves back one interval, never before now. Returns 1.
    GCRA_REFUND = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = 60000000 / tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local new_tat = tat - interval
if new_tat <= now then
  redis.call('DEL', KEYS[1])
  return 1
end
redis.call('SET', KEYS[1], int(math.ceil(new_tat)), 'PX', int(math.ceil((new_tat - now) / 1000) + 1))
return 1
"
);

// ---------------------------------------------------------------------------------------------
// Login challenges. KEYS[1] is the challenge hash and KEYS[2] the expiry index, both tagged
// `{ch}`: one slot for every challenge, which are few and short-lived.

script!(
    /// ARGV: ttl_ms, hash, expires_at (caller's clock), then field/value pairs. 1 if written, 0
    /// if a challenge with this hash exists.
    CHALLENGE_CREATE = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
extend(KEYS[2], now_ms(), now_ms() + tonumber(ARGV[1]))
return 1
"
);

script!(
    /// ARGV: now (caller's clock), max attempts, hash. Counts one attempt and returns the
    /// challenge's fields if it is live and has attempts left; otherwise deletes it and returns
    /// nil.
    CHALLENGE_ATTEMPT = r"
local exp = redis.call('HGET', KEYS[1], 'exp')
if not exp then
  redis.call('ZREM', KEYS[2], ARGV[3])
  return false
end
local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
if tonumber(exp) <= tonumber(ARGV[1]) or attempts >= tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[3])
  return false
end
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
return redis.call('HGETALL', KEYS[1])
"
);

script!(
    /// ARGV: hash. 1 if the challenge was there (and is now gone), else 0.
    CHALLENGE_DELETE = r"
local gone = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return gone
"
);

script!(
    /// ARGV: hash, now (caller's clock). Deletes the challenge if it expired by now; 1 if it was
    /// still listed in the index (and so counts as swept), else 0.
    CHALLENGE_SWEEP_ONE = r"
local exp = redis.call('HGET', KEYS[1], 'exp')
if exp and tonumber(exp) > tonumber(ARGV[2]) then
  return 0
end
redis.call('DEL', KEYS[1])
return redis.call('ZREM', KEYS[2], ARGV[1])
"
);
