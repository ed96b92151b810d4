//! SQLite adapter for the local stack: one `items` table mirroring the DynamoDB table, WAL mode.
//! A conditional put is one statement (its condition in the statement's `WHERE`); a conditional
//! delete runs inside an immediate transaction. Either way concurrent writers serialize.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::json;

use domain::now_epoch;
use domain::store::{
    Condition, Index, Item, Key, Page, Query, StateStore, StoreError, Write, check, check_batch, decode_cursor,
    encode_cursor, order_value,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS items (
    pk         TEXT NOT NULL,
    sk         TEXT NOT NULL,
    kind       TEXT NOT NULL,
    sort       TEXT,
    expires_at INTEGER,
    version    INTEGER NOT NULL,
    attrs      TEXT NOT NULL,
    PRIMARY KEY (pk, sk)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS items_by_sort ON items (pk, sort, sk) WHERE sort IS NOT NULL;
";

#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(unavailable)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(unavailable)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(unavailable)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(unavailable)?;
        Self::init(conn)
    }

    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory().map_err(unavailable)?)
    }

    fn init(conn: Connection) -> Result<Self, StoreError> {
        conn.execute_batch(SCHEMA).map_err(unavailable)?;
        Ok(SqliteStore { conn: Arc::new(Mutex::new(conn)) })
    }

    /// Runs SQLite work on the calling thread, under the connection's lock. Every call is one
    /// statement or one transaction that never spans an await — tens of microseconds, with WAL
    /// and no fsync per commit — so handing it to tokio's blocking pool cost more than the work
    /// itself: two thread wake-ups per call made the receiver's hot path 2.4–2.9× its floor
    /// (BENCHMARKS.md). The occasional WAL checkpoint (every 1,000 pages) does fsync; for the
    /// local stack that pause is acceptable.
    fn with_conn<T>(&self, work: impl FnOnce(&mut Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut conn = self.conn.lock().map_err(|_| unavailable("connection lock poisoned"))?;
        work(&mut conn)
    }
}

/// One row as stored; `attrs` is still JSON text.
struct Row {
    key: Key,
    kind: String,
    sort: Option<String>,
    expires_at: Option<i64>,
    version: i64,
    attrs: String,
}

fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        key: Key::new(row.get::<_, String>(0)?, row.get::<_, String>(1)?),
        kind: row.get(2)?,
        sort: row.get(3)?,
        expires_at: row.get(4)?,
        version: row.get(5)?,
        attrs: row.get(6)?,
    })
}

fn to_item(row: Row) -> Result<Item, StoreError> {
    let attrs = serde_json::from_str(&row.attrs).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(Item {
        key: row.key,
        kind: row.kind,
        sort: row.sort,
        expires_at: row.expires_at,
        version: row.version as u64,
        attrs,
    })
}

const COLUMNS: &str = "pk, sk, kind, sort, expires_at, version, attrs";

fn live(conn: &Connection, key: &Key) -> Result<Option<Item>, StoreError> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {COLUMNS} FROM items WHERE pk = ?1 AND sk = ?2")).map_err(unavailable)?;
    let row = stmt.query_row(params![key.pk, key.sk], read_row).optional().map_err(unavailable)?;
    Ok(row.map(to_item).transpose()?.filter(|i| !i.is_expired(now_epoch())))
}

// Conditional writes are one statement each, so the common case (the condition holds) is a
// single implicit transaction with no read before it; `RETURNING` yields the new version and
// no row means the condition failed. Parameters: ?1 pk, ?2 sk, ?3 kind, ?4 sort,
// ?5 expires_at, ?6 attrs, ?7 now (an item expired by then counts as absent), ?8 the expected
// version.
const UPSERT: &str = "INSERT INTO items (pk, sk, kind, sort, expires_at, version, attrs)
    VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6)
    ON CONFLICT (pk, sk) DO UPDATE SET
        kind = excluded.kind, sort = excluded.sort, expires_at = excluded.expires_at, attrs = excluded.attrs";
const LIVE_VERSION_PLUS_ONE: &str = "version = CASE WHEN items.expires_at <= ?7 THEN 1 ELSE items.version + 1 END";

fn put_sql(condition: Condition) -> String {
    match condition {
        Condition::None => format!("{UPSERT}, {LIVE_VERSION_PLUS_ONE} RETURNING version"),
        Condition::Absent => format!("{UPSERT}, version = 1 WHERE items.expires_at <= ?7 RETURNING version"),
        Condition::Version(_) => {
            "UPDATE items SET kind = ?3, sort = ?4, expires_at = ?5, attrs = ?6, version = version + 1
            WHERE pk = ?1 AND sk = ?2 AND version = ?8 AND (expires_at IS NULL OR expires_at > ?7)
            RETURNING version"
                .to_owned()
        }
    }
}

#[async_trait]
impl StateStore for SqliteStore {
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        self.with_conn(|conn| live(conn, key))
    }

    async fn put(&self, item: Item, condition: Condition) -> Result<u64, StoreError> {
        self.with_conn(|conn| {
            let attrs = serde_json::Value::Object(item.attrs).to_string();
            let now = now_epoch();
            let mut stmt = conn.prepare_cached(&put_sql(condition)).map_err(unavailable)?;
            let base = params![item.key.pk, item.key.sk, item.kind, item.sort, item.expires_at, attrs, now];
            let written = match condition {
                Condition::Version(expected) => {
                    let expected = i64::try_from(expected).unwrap_or(i64::MAX);
                    let all: Vec<&dyn rusqlite::ToSql> = base.iter().copied().chain([&expected as _]).collect();
                    stmt.query_row(all.as_slice(), |row| row.get::<_, i64>(0))
                }
                _ => stmt.query_row(base, |row| row.get::<_, i64>(0)),
            }
            .optional()
            .map_err(unavailable)?;
            match written {
                Some(version) => Ok(version as u64),
                // The condition did not hold: report the live item that made it fail.
                None => Err(StoreError::ConditionFailed { current: live(conn, &item.key)?.map(Box::new) }),
            }
        })
    }

    async fn delete(&self, key: &Key, condition: Condition) -> Result<(), StoreError> {
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(unavailable)?;
            check(live(&tx, key)?.as_ref(), condition)?;
            tx.execute("DELETE FROM items WHERE pk = ?1 AND sk = ?2", params![key.pk, key.sk]).map_err(unavailable)?;
            tx.commit().map_err(unavailable)
        })
    }

    async fn write_all(&self, writes: Vec<Write>) -> Result<Vec<u64>, StoreError> {
        check_batch(&writes)?;
        self.with_conn(|conn| {
            // One immediate transaction: every condition checked, then every write, committed
            // together or (on any error, when `tx` drops) not at all.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(unavailable)?;
            let mut versions = Vec::with_capacity(writes.len());
            for write in &writes {
                let current = live(&tx, write.key())?;
                check(current.as_ref(), write.condition())?;
                versions.push(current.map_or(1, |c| c.version + 1));
            }
            for (write, version) in writes.into_iter().zip(versions.iter_mut()) {
                match write {
                    Write::Put(item, _) => {
                        let attrs = serde_json::Value::Object(item.attrs).to_string();
                        let key = item.key;
                        tx.execute(
                            &format!("INSERT OR REPLACE INTO items ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
                            params![key.pk, key.sk, item.kind, item.sort, item.expires_at, *version as i64, attrs],
                        )
                        .map_err(unavailable)?;
                    }
                    Write::Delete(key, _) => {
                        tx.execute("DELETE FROM items WHERE pk = ?1 AND sk = ?2", params![key.pk, key.sk])
                            .map_err(unavailable)?;
                        *version = 0;
                    }
                }
            }
            tx.commit().map_err(unavailable)?;
            Ok(versions)
        })
    }

    async fn query(&self, query: &Query) -> Result<Page, StoreError> {
        self.with_conn(|conn| {
            let (column, prefix) = match &query.index {
                Index::Primary { sk_prefix } => ("sk", sk_prefix.as_str()),
                Index::Sorted { prefix } => ("sort", prefix.as_str()),
            };
            let (cmp, order) = if query.descending { ("<", "DESC") } else { (">", "ASC") };
            // Position = (order value, sk); the cursor is the last position returned.
            let after: Option<(String, String)> = match query.cursor.as_deref() {
                Some(c) => Some(serde_json::from_value(decode_cursor(c)?).map_err(|_| StoreError::BadCursor)?),
                None => None,
            };
            let (after_order, after_sk) = after.clone().unzip();
            // Prefix match as a range so the index is used: [prefix, its successor).
            let upper = prefix_successor(prefix);
            let sql = format!(
                "SELECT {COLUMNS} FROM items
                 WHERE pk = ?1 AND {column} >= ?2 AND (?3 IS NULL OR {column} < ?3)
                   AND (?4 IS NULL OR ({column}, sk) {cmp} (?4, ?5))
                 ORDER BY {column} {order}, sk {order} LIMIT ?6"
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(unavailable)?;
            let rows = stmt
                .query_map(params![query.pk, prefix, upper, after_order, after_sk, (query.limit + 1) as i64], read_row)
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            let mut items = rows.into_iter().map(to_item).collect::<Result<Vec<_>, _>>()?;
            let more = items.len() > query.limit;
            items.truncate(query.limit);
            let cursor = more
                .then(|| items.last().map(|i| encode_cursor(&json!([order_value(i, &query.index), i.key.sk]))))
                .flatten();
            let now = now_epoch();
            items.retain(|i| !i.is_expired(now));
            Ok(Page { items, cursor })
        })
    }
}

/// The least string above every string that starts with `prefix` (SQLite compares text by its
/// UTF-8 bytes, which order as code points do): the last character that has a successor, moved
/// one up, with everything after it dropped. `None` when there is none (an empty prefix, or
/// one made only of U+10FFFF): then the range has no upper end.
fn prefix_successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last as u32 {
            0xD7FF => Some('\u{E000}'),
            code => char::from_u32(code + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::prefix_successor;

    #[test]
    fn the_successor_bounds_exactly_the_strings_with_the_prefix() {
        assert_eq!(prefix_successor("ENV#").as_deref(), Some("ENV$"));
        assert_eq!(prefix_successor("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_successor("\u{D7FF}").as_deref(), Some("\u{E000}"));
        assert_eq!(prefix_successor(""), None);
        assert_eq!(prefix_successor("\u{10FFFF}\u{10FFFF}"), None);
        let upper = prefix_successor("ENV#").unwrap();
        for inside in ["ENV#", "ENV#\u{10FFFF}", "ENV#\u{10FFFF}z", "ENV#\u{10FFFF}\u{10FFFF}"] {
            assert!(inside < upper.as_str(), "{inside:?}");
        }
        assert!("ENV$" >= upper.as_str());
    }
}
