//! Failpoints: named places where a test makes the agent stop dead.
//!
//! `RACKHAND_FAILPOINTS=name[,name…]` arms them. An armed failpoint logs
//! `failpoint reached`, prints `FAILPOINT <name>` on stderr and blocks
//! forever, so the test can `kill -9` the agent exactly there. Unarmed
//! failpoints cost one set lookup.

use std::collections::HashSet;

/// The armed failpoints.
#[derive(Debug, Default, Clone)]
pub struct Failpoints {
    armed: HashSet<String>,
}

impl Failpoints {
    /// Reads `RACKHAND_FAILPOINTS`.
    pub fn from_env() -> Failpoints {
        let armed = std::env::var("RACKHAND_FAILPOINTS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(str::to_string)
            .collect();
        Failpoints { armed }
    }

    /// Returns the armed names, for the start-up warning.
    pub fn armed(&self) -> Vec<&str> {
        self.armed.iter().map(String::as_str).collect()
    }

    /// Blocks forever if `name` is armed; returns at once otherwise.
    pub async fn hit(&self, name: &str) {
        if !self.armed.contains(name) {
            return;
        }
        tracing::warn!(failpoint = name, "failpoint reached; blocking until killed");
        eprintln!("FAILPOINT {name}");
        std::future::pending::<()>().await;
    }
}
