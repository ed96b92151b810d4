//! SQLite adapter for the local stack: one `items` table mirroring the DynamoDB table, WAL mode,
//! conditions checked inside an immediate transaction so concurrent writers serialize.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::json;

use super::memory::{check, order_value};
use super::*;
use crate::now_epoch;

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

    /// Runs blocking SQLite work off the async executor.
    async fn with_conn<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().map_err(|_| unavailable("connection lock poisoned"))?;
            work(&mut guard)
        })
        .await
        .map_err(unavailable)?
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
    let row = conn
        .query_row(&format!("SELECT {COLUMNS} FROM items WHERE pk = ?1 AND sk = ?2"), params![key.pk, key.sk], read_row)
        .optional()
        .map_err(unavailable)?;
    Ok(row.map(to_item).transpose()?.filter(|i| !i.is_expired(now_epoch())))
}

#[async_trait]
impl StateStore for SqliteStore {
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        let key = key.clone();
        self.with_conn(move |conn| live(conn, &key)).await
    }

    async fn put(&self, item: Item, condition: Condition) -> Result<u64, StoreError> {
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(unavailable)?;
            let current = live(&tx, &item.key)?;
            check(current.as_ref(), condition)?;
            let version = current.map_or(1, |c| c.version + 1);
            let attrs = serde_json::Value::Object(item.attrs).to_string();
            tx.execute(
                &format!("INSERT OR REPLACE INTO items ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
                params![item.key.pk, item.key.sk, item.kind, item.sort, item.expires_at, version as i64, attrs],
            )
            .map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
            Ok(version)
        })
        .await
    }

    async fn delete(&self, key: &Key, condition: Condition) -> Result<(), StoreError> {
        let key = key.clone();
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(unavailable)?;
            check(live(&tx, &key)?.as_ref(), condition)?;
            tx.execute("DELETE FROM items WHERE pk = ?1 AND sk = ?2", params![key.pk, key.sk]).map_err(unavailable)?;
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn query(&self, query: &Query) -> Result<Page, StoreError> {
        let query = query.clone();
        self.with_conn(move |conn| {
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
            // Prefix match as a range so the index is used: [prefix, prefix + U+10FFFF).
            let upper = format!("{prefix}\u{10FFFF}");
            let sql = format!(
                "SELECT {COLUMNS} FROM items
                 WHERE pk = ?1 AND {column} >= ?2 AND {column} < ?3
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
        .await
    }
}
