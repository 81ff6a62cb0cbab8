//! Opening the control plane's database and running its migrations.
//!
//! SQLite runs in WAL mode with a busy timeout, so the API, the webhook
//! handler and the workers can write concurrently without `database is
//! locked` errors; every multi-row change runs in one transaction. The SQL is
//! kept to what PostgreSQL also accepts, for the later scale-out backend.

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

/// The database pool type the control plane uses.
pub type Pool = sqlx::SqlitePool;
/// A transaction on [`Pool`].
pub type Tx<'a> = sqlx::Transaction<'a, sqlx::Sqlite>;

/// Opens (creating if needed) the database at `url` and applies every
/// pending migration.
pub async fn open(url: &str) -> anyhow::Result<Pool> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10));
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await?;
    sqlx::migrate!("./migrations").run(&pool).await?;
    Ok(pool)
}

/// Begins a write transaction.
///
/// `BEGIN IMMEDIATE` takes SQLite's write lock up front, waiting up to the
/// busy timeout. A deferred transaction that reads first and writes later
/// fails at once with `database is locked` when another connection wrote in
/// between, because SQLite cannot upgrade its stale read snapshot.
pub async fn begin(pool: &Pool) -> Result<Tx<'static>, sqlx::Error> {
    pool.begin_with("BEGIN IMMEDIATE").await
}

/// Returns the current time in Unix milliseconds, the unit of every time column.
pub fn now_ms() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}
