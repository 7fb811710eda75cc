//! [`RedisRecords`]: the session records in a Redis shared by every instance (`[cluster]
//! redis_url`), keeping the rules of [`super`] with one Lua script per write, so that each
//! compare-and-set, fencing check and quota-checked insert is one atomic step in Redis.
//!
//! Keys, under the configured prefix `P` (one Redis, not Redis Cluster: the scripts name
//! keys they compute):
//! - `P r:<id>`: a hash per record: `v` version, `f` highest fencing token that wrote it,
//!   `o` open (0/1), `w` owner, `n` reserved bytes, `s` the summary (JSON), `b` the body;
//! - `P ids`: the set of record ids (scans);
//! - `P open`, `P reserved`, `P owner:<owner>`: counts of open records and their reserved
//!   bytes, kept by the same scripts that write the records, so they always equal what a
//!   scan of the open records would compute (rule 1), for every instance at once.
//!
//! Costs: `get` is one `HMGET`; `insert`, `put_if`, `delete` and `counts` one script call
//! each; `scan` one script call that reads every record (as the redb store's scan does).
//!
//! Redis unreachable, or slower than the configured timeout: every call fails with
//! [`RecordError::Unavailable`] (a 503 with `Retry-After` for the client, never a client
//! error). The connection is dropped on any error and made again by the next call, so the
//! service resumes by itself when Redis is back.

use super::{Counts, Quota, Record, RecordError, RecordResult, SessionRecords, Stored, Version};
use futures_util::future::BoxFuture;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, FromRedisValue, Script};
use std::time::Duration;

/// A connection to the shared Redis, made on first use and again after any failure.
pub struct Redis {
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    prefix: String,
    timeout: Duration,
}

pub(super) fn unavailable(e: impl std::fmt::Display) -> RecordError {
    RecordError::Unavailable(e.to_string())
}

impl Redis {
    /// Parses `url` (`redis://host:port/db`); connects lazily. `timeout` bounds every
    /// call, connecting included.
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> RecordResult<Redis> {
        let client =
            redis::Client::open(url).map_err(|e| RecordError::Store(format!("redis_url: {e}")))?;
        Ok(Redis {
            client,
            conn: tokio::sync::Mutex::new(None),
            prefix: prefix.to_string(),
            timeout: timeout.max(Duration::from_millis(10)),
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The connection, made if needed; waiting for another caller's attempt included, this
    /// takes at most the timeout.
    async fn conn(&self) -> RecordResult<MultiplexedConnection> {
        tokio::time::timeout(self.timeout, self.connect())
            .await
            .map_err(|_| unavailable("connecting to redis timed out"))?
    }

    async fn connect(&self) -> RecordResult<MultiplexedConnection> {
        let mut held = self.conn.lock().await;
        if let Some(c) = &*held {
            return Ok(c.clone());
        }
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout);
        let c = tokio::time::timeout(
            self.timeout,
            self.client
                .get_multiplexed_async_connection_with_config(&cfg),
        )
        .await
        .map_err(|_| unavailable("connecting to redis timed out"))?
        .map_err(unavailable)?;
        *held = Some(c.clone());
        Ok(c)
    }

    /// A failed call: forget the connection (the next call makes a new one).
    fn failed(&self, e: impl std::fmt::Display) -> RecordError {
        // Locked: another caller is connecting right now, which replaces it anyway.
        if let Ok(mut held) = self.conn.try_lock() {
            *held = None;
        }
        unavailable(e)
    }

    /// Runs a script with string arguments (the prefix first).
    pub(super) async fn script<T: FromRedisValue>(
        &self,
        script: &Script,
        args: &[&[u8]],
    ) -> RecordResult<T> {
        let mut c = self.conn().await?;
        let mut inv = script.prepare_invoke();
        inv.arg(self.prefix.as_bytes());
        for a in args {
            inv.arg(*a);
        }
        match tokio::time::timeout(self.timeout, inv.invoke_async::<T>(&mut c)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.failed(e)),
            Err(_) => Err(self.failed("redis call timed out")),
        }
    }

    /// Runs one command.
    pub(super) async fn cmd<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> RecordResult<T> {
        let mut c = self.conn().await?;
        match tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut c)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.failed(e)),
            Err(_) => Err(self.failed("redis call timed out")),
        }
    }

    /// `PING` (start-up check and tests).
    pub async fn ping(&self) -> RecordResult<()> {
        self.cmd::<String>(&redis::cmd("PING")).await.map(drop)
    }
}

/// Lowers the open counts by the record at `rk`, if it is open (shared by the scripts).
const DROP_OPEN: &str = r#"
local function drop_open(p, rk)
  local cur = redis.call('HMGET', rk, 'o', 'w', 'n')
  if cur[1] == '1' then
    redis.call('DECR', p .. 'open')
    local ok = p .. 'owner:' .. cur[2]
    if redis.call('DECR', ok) <= 0 then redis.call('DEL', ok) end
    redis.call('DECRBY', p .. 'reserved', cur[3])
  end
end
local function add_open(p, owner, open, reserved)
  if open == '1' then
    redis.call('INCR', p .. 'open')
    redis.call('INCR', p .. 'owner:' .. owner)
    redis.call('INCRBY', p .. 'reserved', reserved)
  end
end
"#;

// Results: a non-negative number is success; -1 conflict, -2 fenced, -3 too many open,
// -4 too many for the owner, -5 reserved bytes exceeded.

/// ARGV: prefix, id, owner, open, reserved, summary, body, max_open, max_owner, max_reserved.
const INSERT: &str = r#"
local p, id = ARGV[1], ARGV[2]
local rk = p .. 'r:' .. id
if redis.call('EXISTS', rk) == 1 then return -1 end
if ARGV[4] == '1' then
  if tonumber(redis.call('GET', p .. 'open') or '0') >= tonumber(ARGV[8]) then return -3 end
  if tonumber(redis.call('GET', p .. 'owner:' .. ARGV[3]) or '0') >= tonumber(ARGV[9]) then
    return -4
  end
  local r = tonumber(redis.call('GET', p .. 'reserved') or '0')
  if r + tonumber(ARGV[5]) > tonumber(ARGV[10]) then return -5 end
end
add_open(p, ARGV[3], ARGV[4], ARGV[5])
redis.call('HSET', rk, 'v', '1', 'f', '0', 'o', ARGV[4], 'w', ARGV[3], 'n', ARGV[5],
  's', ARGV[6], 'b', ARGV[7])
redis.call('SADD', p .. 'ids', id)
return 1
"#;

/// ARGV: prefix, id, expected version, fence ('' = none), owner, open, reserved, summary, body.
const PUT_IF: &str = r#"
local p, id = ARGV[1], ARGV[2]
local rk = p .. 'r:' .. id
local cur = redis.call('HMGET', rk, 'v', 'f')
if not cur[1] then return -1 end
local fence = cur[2]
if ARGV[4] ~= '' then
  if tonumber(ARGV[4]) < tonumber(cur[2]) then return -2 end
  fence = ARGV[4]
end
if tonumber(cur[1]) ~= tonumber(ARGV[3]) then return -1 end
drop_open(p, rk)
add_open(p, ARGV[5], ARGV[6], ARGV[7])
local v = tonumber(cur[1]) + 1
redis.call('HSET', rk, 'v', string.format('%d', v), 'f', fence, 'o', ARGV[6], 'w', ARGV[5],
  'n', ARGV[7], 's', ARGV[8], 'b', ARGV[9])
return v
"#;

/// ARGV: prefix, id, expected version ('' = any). 1 deleted, 0 already gone.
const DELETE: &str = r#"
local p, id = ARGV[1], ARGV[2]
local rk = p .. 'r:' .. id
local v = redis.call('HGET', rk, 'v')
if not v then return 0 end
if ARGV[3] ~= '' and tonumber(v) ~= tonumber(ARGV[3]) then return -1 end
drop_open(p, rk)
redis.call('DEL', rk)
redis.call('SREM', p .. 'ids', id)
return 1
"#;

/// ARGV: prefix. Every record as {id, version, fence, summary, body}.
const SCAN: &str = r#"
local p = ARGV[1]
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', p .. 'ids')) do
  local r = redis.call('HMGET', p .. 'r:' .. id, 'v', 'f', 's', 'b')
  if r[1] then table.insert(out, {id, r[1], r[2], r[3], r[4]}) end
end
return out
"#;

/// ARGV: prefix, owner. {open, open for owner, reserved}.
const COUNTS: &str = r#"
local p = ARGV[1]
return {
  redis.call('GET', p .. 'open') or '0',
  redis.call('GET', p .. 'owner:' .. ARGV[2]) or '0',
  redis.call('GET', p .. 'reserved') or '0',
}
"#;

/// The session records in Redis (see the module docs).
pub struct RedisRecords {
    redis: std::sync::Arc<Redis>,
    insert: Script,
    put_if: Script,
    delete: Script,
    scan: Script,
    counts: Script,
}

fn outcome(n: i64) -> RecordResult<u64> {
    match n {
        -1 => Err(RecordError::Conflict),
        -2 => Err(RecordError::Fenced),
        -3 => Err(RecordError::TooManyOpen),
        -4 => Err(RecordError::TooManyForOwner),
        -5 => Err(RecordError::ReservedExceeded),
        n => u64::try_from(n).map_err(|_| RecordError::Store(format!("redis script: {n}"))),
    }
}

/// The fields of a record as the scripts take them: owner, open, reserved, summary, body.
struct Fields {
    owner: Vec<u8>,
    open: &'static [u8],
    reserved: Vec<u8>,
    summary: Vec<u8>,
    body: Vec<u8>,
}

fn fields(r: Record) -> RecordResult<Fields> {
    let summary = serde_json::to_vec(&r.summary).map_err(|e| RecordError::Store(e.to_string()))?;
    // Redis integers are signed 64-bit.
    let reserved = r.summary.reserved.min(i64::MAX as u64);
    Ok(Fields {
        owner: r.summary.owner.into_bytes(),
        open: if r.summary.open { b"1" } else { b"0" },
        reserved: reserved.to_string().into_bytes(),
        summary,
        body: r.body,
    })
}

fn stored(version: u64, fence: u64, summary: &[u8], body: Vec<u8>) -> RecordResult<Stored> {
    let summary = serde_json::from_slice(summary).map_err(|e| RecordError::Store(e.to_string()))?;
    Ok(Stored {
        version,
        fence,
        record: Record { summary, body },
    })
}

impl RedisRecords {
    pub fn new(redis: std::sync::Arc<Redis>) -> RedisRecords {
        let s = |body: &str| Script::new(&format!("{DROP_OPEN}\n{body}"));
        RedisRecords {
            redis,
            insert: s(INSERT),
            put_if: s(PUT_IF),
            delete: s(DELETE),
            scan: Script::new(SCAN),
            counts: Script::new(COUNTS),
        }
    }

    fn key(&self, id: &str) -> String {
        format!("{}r:{id}", self.redis.prefix())
    }
}

type Row = (Option<u64>, Option<u64>, Option<Vec<u8>>, Option<Vec<u8>>);

impl SessionRecords for RedisRecords {
    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, RecordResult<Option<Stored>>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("HMGET");
            cmd.arg(self.key(id)).arg(&["v", "f", "s", "b"]);
            match self.redis.cmd::<Row>(&cmd).await? {
                (Some(v), Some(f), Some(s), b) => stored(v, f, &s, b.unwrap_or_default()).map(Some),
                _ => Ok(None),
            }
        })
    }

    fn insert<'a>(
        &'a self,
        id: &'a str,
        record: Record,
        quota: Quota,
    ) -> BoxFuture<'a, RecordResult<Version>> {
        Box::pin(async move {
            let f = fields(record)?;
            let (max_open, max_owner, max_reserved) = (
                quota.max_open.to_string(),
                quota.max_open_per_owner.to_string(),
                quota.max_reserved.to_string(),
            );
            let args: [&[u8]; 9] = [
                id.as_bytes(),
                &f.owner,
                f.open,
                &f.reserved,
                &f.summary,
                &f.body,
                max_open.as_bytes(),
                max_owner.as_bytes(),
                max_reserved.as_bytes(),
            ];
            outcome(self.redis.script::<i64>(&self.insert, &args).await?)
        })
    }

    fn put_if<'a>(
        &'a self,
        id: &'a str,
        record: Record,
        expected: Version,
        fence: Option<u64>,
    ) -> BoxFuture<'a, RecordResult<Version>> {
        Box::pin(async move {
            let f = fields(record)?;
            let expected = expected.to_string();
            let fence = fence.map(|t| t.to_string()).unwrap_or_default();
            let args: [&[u8]; 8] = [
                id.as_bytes(),
                expected.as_bytes(),
                fence.as_bytes(),
                &f.owner,
                f.open,
                &f.reserved,
                &f.summary,
                &f.body,
            ];
            outcome(self.redis.script::<i64>(&self.put_if, &args).await?)
        })
    }

    fn delete<'a>(
        &'a self,
        id: &'a str,
        expected: Option<Version>,
    ) -> BoxFuture<'a, RecordResult<bool>> {
        Box::pin(async move {
            let expected = expected.map(|v| v.to_string()).unwrap_or_default();
            let args: [&[u8]; 2] = [id.as_bytes(), expected.as_bytes()];
            outcome(self.redis.script::<i64>(&self.delete, &args).await?).map(|n| n == 1)
        })
    }

    fn scan(&self) -> BoxFuture<'_, RecordResult<Vec<(String, Stored)>>> {
        Box::pin(async move {
            type Item = (String, u64, u64, Vec<u8>, Vec<u8>);
            let rows: Vec<Item> = self.redis.script(&self.scan, &[]).await?;
            let mut out = Vec::with_capacity(rows.len());
            for (id, v, f, s, b) in rows {
                match stored(v, f, &s, b) {
                    Ok(st) => out.push((id, st)),
                    Err(e) => tracing::warn!(%id, error = %e, "skipping a malformed record"),
                }
            }
            Ok(out)
        })
    }

    fn counts<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, RecordResult<Counts>> {
        Box::pin(async move {
            let (open, mine, reserved): (u64, u64, u64) =
                self.redis.script(&self.counts, &[owner.as_bytes()]).await?;
            Ok(Counts {
                open: usize::try_from(open).unwrap_or(usize::MAX),
                open_for_owner: usize::try_from(mine).unwrap_or(usize::MAX),
                reserved,
            })
        })
    }
}
