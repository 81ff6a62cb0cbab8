//! The agent's local state (SQLite in WAL mode under `state_dir`): side
//! effects on hardware keyed by correlation key, armed netboots, and results
//! the control plane has not acknowledged yet.
//!
//! This is what lets the agent deduplicate a task handed out again after a
//! crash of either side: the record of a power-on is written before the
//! request goes to the BMC, so a later attempt knows the request may already
//! be out and never sends a reset to a machine that is booting.

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rackhand_protocol::agent::InstallFile;
use rackhand_protocol::{MacAddr, Secret};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

/// Returns the current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

/// The local database.
#[derive(Debug, Clone)]
pub struct State {
    pool: sqlx::SqlitePool,
}

/// A recorded side effect.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SideEffect {
    pub kind: String,
    pub state: String,
    pub sends: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// An armed (or finished) netboot.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Boot {
    pub correlation_key: String,
    pub mac: String,
    pub node_id: i64,
    pub node_name: String,
    pub image_name: String,
    pub kernel_sha256: String,
    pub initrd_sha256: String,
    pub kernel_args: String,
    pub hostname: String,
    pub token: String,
    pub state: String,
    pub error: Option<String>,
    pub callback_ip: Option<String>,
    /// The installer's last progress report.
    pub progress: Option<String>,
    pub armed_at: i64,
    pub deadline_at: i64,
    /// An [`InstallMethod`](rackhand_protocol::agent::InstallMethod) name.
    pub install_method: String,
    /// The disk image of an `image` install.
    pub disk_sha256: Option<String>,
    pub disk_size: Option<i64>,
}

impl Boot {
    /// Lists the image files this boot serves, by role and digest: kernel,
    /// initrd and, for an image write, the disk image.
    pub fn files(&self) -> Vec<(&'static str, &str)> {
        let mut files = vec![
            ("kernel", self.kernel_sha256.as_str()),
            ("initrd", self.initrd_sha256.as_str()),
        ];
        if let Some(disk) = &self.disk_sha256 {
            files.push(("disk image", disk.as_str()));
        }
        files
    }

    /// True for the methods that install onto the node's disk (an image
    /// write, kickstart or preseed): once such a boot called back, the
    /// disk contains the installed system.
    pub fn writes_disk(&self) -> bool {
        use rackhand_protocol::agent::InstallMethod;
        [
            InstallMethod::Image,
            InstallMethod::Kickstart,
            InstallMethod::Preseed,
        ]
        .iter()
        .any(|method| self.install_method == method.as_str())
    }
}

/// A netboot to arm.
#[derive(Debug)]
pub struct NewBoot<'a> {
    pub correlation_key: &'a str,
    pub mac: MacAddr,
    pub node_id: i64,
    pub node_name: &'a str,
    pub image_name: &'a str,
    pub kernel_sha256: &'a str,
    pub initrd_sha256: &'a str,
    pub kernel_args: &'a str,
    pub hostname: &'a str,
    pub token: &'a str,
    pub deadline_at: i64,
    pub install_method: rackhand_protocol::agent::InstallMethod,
    pub disk: Option<&'a rackhand_protocol::agent::ImageFile>,
}

impl State {
    /// Opens (creating) `state_dir/agent.db` and applies migrations.
    pub async fn open(state_dir: &Path) -> anyhow::Result<State> {
        std::fs::create_dir_all(state_dir)?;
        let url = format!("sqlite://{}", state_dir.join("agent.db").display());
        let options = SqliteConnectOptions::from_str(&url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(State { pool })
    }

    /// Returns the side effect recorded under `key`.
    pub async fn side_effect(&self, key: &str) -> Result<Option<SideEffect>, sqlx::Error> {
        sqlx::query_as("SELECT kind, state, sends, created_at, updated_at FROM side_effects WHERE correlation_key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
    }

    /// Records that a request of `kind` is about to be sent under `key`
    /// (one more send); must commit before the request leaves.
    pub async fn record_request(&self, key: &str, kind: &str) -> Result<(), sqlx::Error> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO side_effects (correlation_key, kind, state, sends, created_at, updated_at)
             VALUES (?, ?, 'requested', 1, ?, ?)
             ON CONFLICT (correlation_key) DO UPDATE SET state = 'requested', sends = sends + 1, updated_at = excluded.updated_at",
        )
        .bind(key)
        .bind(kind)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Moves the side effect under `key` to `state` (`sent`, `done`).
    pub async fn mark_side_effect(
        &self,
        key: &str,
        state: &str,
        detail: Option<&str>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE side_effects SET state = ?, detail = COALESCE(?, detail), updated_at = ? WHERE correlation_key = ?")
            .bind(state)
            .bind(detail)
            .bind(now_ms())
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Returns the boot armed under `key`.
    pub async fn boot(&self, key: &str) -> Result<Option<Boot>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM boots WHERE correlation_key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
    }

    /// Returns the newest boot for `mac`, whatever its state.
    pub async fn latest_boot_for(&self, mac: MacAddr) -> Result<Option<Boot>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM boots WHERE mac = ? ORDER BY armed_at DESC LIMIT 1")
            .bind(mac.to_string())
            .fetch_optional(&self.pool)
            .await
    }

    /// Returns the armed boot whose callback token is `token`.
    pub async fn boot_by_token(&self, token: &str) -> Result<Option<Boot>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM boots WHERE token = ?")
            .bind(token)
            .fetch_optional(&self.pool)
            .await
    }

    /// Arms a boot; an existing boot under the same key is kept as it is.
    pub async fn arm_boot(&self, boot: &NewBoot<'_>) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO boots (correlation_key, mac, node_id, node_name, image_name, kernel_sha256, initrd_sha256,
                                kernel_args, hostname, token, state, armed_at, deadline_at,
                                install_method, disk_sha256, disk_size)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'armed', ?, ?, ?, ?, ?)
             ON CONFLICT (correlation_key) DO NOTHING",
        )
        .bind(boot.correlation_key)
        .bind(boot.mac.to_string())
        .bind(boot.node_id)
        .bind(boot.node_name)
        .bind(boot.image_name)
        .bind(boot.kernel_sha256)
        .bind(boot.initrd_sha256)
        .bind(boot.kernel_args)
        .bind(boot.hostname)
        .bind(boot.token)
        .bind(now_ms())
        .bind(boot.deadline_at)
        .bind(boot.install_method.as_str())
        .bind(boot.disk.map(|disk| disk.sha256.as_str()))
        .bind(
            boot.disk
                .map(|disk| i64::try_from(disk.size).unwrap_or(i64::MAX)),
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Stores a boot's install files unless files under `key` exist
    /// already. Call it before [`State::arm_boot`], so no armed boot lacks
    /// its files; a retry after a crash in between stores nothing new.
    pub async fn store_install_files(
        &self,
        key: &str,
        files: &[InstallFile],
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        for file in files {
            sqlx::query(
                "INSERT INTO boot_files (correlation_key, name, content) VALUES (?, ?, ?)
                 ON CONFLICT (correlation_key, name) DO NOTHING",
            )
            .bind(key)
            .bind(&file.name)
            .bind(file.content.expose())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// Returns the names of a boot's install files, sorted.
    pub async fn install_file_names(&self, key: &str) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT name FROM boot_files WHERE correlation_key = ? ORDER BY name")
            .bind(key)
            .fetch_all(&self.pool)
            .await
    }

    /// Returns one install file of a boot.
    pub async fn install_file(&self, key: &str, name: &str) -> Result<Option<Secret>, sqlx::Error> {
        let content: Option<String> = sqlx::query_scalar(
            "SELECT content FROM boot_files WHERE correlation_key = ? AND name = ?",
        )
        .bind(key)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(content.map(Secret::new))
    }

    /// Finishes an armed boot as `state` (`called_back`, `failed`,
    /// `expired`); false when it was not armed any more.
    pub async fn finish_boot(
        &self,
        key: &str,
        state: &str,
        error: Option<&str>,
        callback_ip: Option<&str>,
    ) -> Result<bool, sqlx::Error> {
        let result = sqlx::query(
            "UPDATE boots SET state = ?, error = ?, callback_ip = ?, finished_at = ?
             WHERE correlation_key = ? AND state = 'armed'",
        )
        .bind(state)
        .bind(error)
        .bind(callback_ip)
        .bind(now_ms())
        .bind(key)
        .execute(&self.pool)
        .await?;
        // The install files hold the root password hash; a finished boot
        // serves them no more, so they need not stay on disk.
        sqlx::query("DELETE FROM boot_files WHERE correlation_key = ?")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Records the installer's progress on an armed boot. Returns whether
    /// the boot was still armed.
    pub async fn boot_progress(&self, key: &str, progress: &str) -> Result<bool, sqlx::Error> {
        let result = sqlx::query(
            "UPDATE boots SET progress = ? WHERE correlation_key = ? AND state = 'armed'",
        )
        .bind(progress)
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Stores a result until the control plane acknowledges it.
    pub async fn save_report(
        &self,
        key: &str,
        task_id: i64,
        body: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO pending_reports (correlation_key, task_id, body, created_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (correlation_key) DO UPDATE SET task_id = excluded.task_id, body = excluded.body",
        )
        .bind(key)
        .bind(task_id)
        .bind(body)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Returns every unacknowledged result as (key, task id, body).
    pub async fn pending_reports(&self) -> Result<Vec<(String, i64, String)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT correlation_key, task_id, body FROM pending_reports ORDER BY created_at",
        )
        .fetch_all(&self.pool)
        .await
    }

    /// Returns the stored result for `key`, if one awaits delivery.
    pub async fn pending_report(&self, key: &str) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT body FROM pending_reports WHERE correlation_key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
    }

    /// Forgets a result the control plane acknowledged.
    pub async fn delete_report(&self, key: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM pending_reports WHERE correlation_key = ?")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn request_record_counts_sends() {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = State::open(dir.path()).await.expect("opens");
        state
            .record_request("o/driver", "power_on")
            .await
            .expect("records");
        state
            .record_request("o/driver", "power_on")
            .await
            .expect("records");
        let effect = state
            .side_effect("o/driver")
            .await
            .expect("reads")
            .expect("present");
        assert_eq!(effect.sends, 2);
        assert_eq!(effect.state, "requested");
    }

    #[tokio::test]
    async fn armed_boot_finishes_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = State::open(dir.path()).await.expect("opens");
        let boot = NewBoot {
            correlation_key: "o/image",
            mac: "52:54:00:00:00:01".parse().expect("MAC"),
            node_id: 1,
            node_name: "n1",
            image_name: "img",
            kernel_sha256: "k",
            initrd_sha256: "i",
            kernel_args: "",
            hostname: "h",
            token: "t",
            deadline_at: now_ms() + 1000,
            install_method: rackhand_protocol::agent::InstallMethod::Live,
            disk: None,
        };
        state.arm_boot(&boot).await.expect("arms");
        assert!(
            state
                .finish_boot("o/image", "called_back", None, Some("10.0.0.5"))
                .await
                .expect("finishes")
        );
        assert!(
            !state
                .finish_boot("o/image", "expired", None, None)
                .await
                .expect("runs")
        );
        let stored = state
            .boot_by_token("t")
            .await
            .expect("reads")
            .expect("present");
        assert_eq!(stored.state, "called_back");
    }

    #[tokio::test]
    async fn disk_installs_are_told_apart_from_live_boots() {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = State::open(dir.path()).await.expect("opens");
        for (index, method) in rackhand_protocol::agent::InstallMethod::ALL
            .into_iter()
            .enumerate()
        {
            let key = format!("o{index}/image");
            let token = format!("t{index}");
            let boot = NewBoot {
                correlation_key: &key,
                mac: "52:54:00:00:00:02".parse().expect("MAC"),
                node_id: 1,
                node_name: "n1",
                image_name: "img",
                kernel_sha256: "k",
                initrd_sha256: "i",
                kernel_args: "",
                hostname: "h",
                token: &token,
                deadline_at: now_ms() + 1000,
                install_method: method,
                disk: None,
            };
            state.arm_boot(&boot).await.expect("arms");
            let stored = state.boot(&key).await.expect("reads").expect("present");

            let expected = matches!(method.as_str(), "image" | "kickstart" | "preseed");
            assert_eq!(stored.writes_disk(), expected, "{method}");
        }
    }
}
