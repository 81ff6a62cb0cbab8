//! Orders and their invoices: creation, state changes and operator retry.
//!
//! States: `pending_payment` → `provisioning_pending` (billing) →
//! `provisioning` (a worker picked the job up) → `active`, or `failed` with
//! the phase, the error and the upstream's last response. An operator retry
//! moves a failed order back to `provisioning` and requeues its job at the
//! phase that failed.

use rackhand_protocol::Phase;
use serde_json::Value;

use crate::activity::{self, Entry, Event};
use crate::db::{self, Pool, Tx};
use crate::names;
use crate::phases::OrderContext;

/// A request for a new order.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOrder {
    pub product: String,
    pub site: String,
    pub customer_email: String,
    /// The service's host name (one DNS label); `srv-<order id>` when absent.
    pub hostname: Option<String>,
    /// OpenSSH public key lines for the installed system's root account,
    /// which install templates see as `ssh_authorized_keys`.
    #[serde(default, deserialize_with = "key_lines")]
    pub ssh_authorized_keys: Vec<String>,
}

/// Reads `ssh_authorized_keys` as a list of strings. serde's own error for
/// a wrong type quotes the value, which may be a pasted private key, so
/// this one does not.
fn key_lines<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    struct Lines;

    impl<'de> serde::de::Visitor<'de> for Lines {
        type Value = Vec<String>;

        fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
            formatter.write_str("a list of OpenSSH public key lines")
        }

        fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Err(E::custom(
                "ssh_authorized_keys must be a list of OpenSSH public key lines, not one string; send [\"ssh-ed25519 AAAA… user@host\"]",
            ))
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut lines = Vec::new();
            // Bounded by the request body limit; the count is checked later.
            while let Some(line) = seq.next_element::<KeyLine>()? {
                lines.push(line.0);
            }
            Ok(lines)
        }
    }

    /// One list entry, whose type error does not quote it either.
    struct KeyLine(String);

    impl<'de> serde::Deserialize<'de> for KeyLine {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct Line;
            impl serde::de::Visitor<'_> for Line {
                type Value = KeyLine;

                fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                    formatter.write_str("an OpenSSH public key line as a string")
                }

                fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<KeyLine, E> {
                    Ok(KeyLine(value.to_string()))
                }
            }
            deserializer.deserialize_str(Line)
        }
    }

    deserializer.deserialize_any(Lines)
}

/// Most SSH keys one order may carry.
pub const MAX_SSH_KEYS: usize = 16;

/// Longest SSH key line accepted, in bytes; a 16384-bit RSA key is about
/// 2,800.
pub const MAX_SSH_KEY_BYTES: usize = 8 * 1024;

/// A created order with its invoice.
#[derive(Debug, serde::Serialize)]
pub struct CreatedOrder {
    pub order_id: i64,
    pub uid: String,
    pub invoice_id: i64,
    pub amount_minor: i64,
    pub currency: String,
    pub state: &'static str,
}

/// A rejected order operation.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("{what} {name:?} not found")]
    NotFound { what: &'static str, name: String },
    #[error("invalid field `{field}`: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("{0}")]
    Conflict(String),
    #[error("order {order_id} is {state}; {action}")]
    WrongState {
        order_id: i64,
        state: String,
        action: &'static str,
    },
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

/// Creates an order in `pending_payment` with an open invoice for the
/// product's price.
pub async fn create(pool: &Pool, request: &NewOrder) -> Result<CreatedOrder, OrderError> {
    let email = check_email(&request.customer_email)?;
    // Host names are case-insensitive in DNS; store them in lower case so
    // that WEB1 and web1 are one name.
    let hostname = request.hostname.as_deref().map(str::to_ascii_lowercase);
    if let Some(hostname) = &hostname {
        names::check_label(hostname).map_err(|message| OrderError::Invalid {
            field: "hostname",
            message,
        })?;
    }

    let ssh_keys = check_ssh_keys(&request.ssh_authorized_keys)?;

    let mut tx = db::begin(pool).await?;
    let product: Option<(i64, i64, String, Option<i64>)> = sqlx::query_as(
        "SELECT id, price_minor, currency, install_template_id FROM products WHERE name = ?",
    )
    .bind(&request.product)
    .fetch_optional(&mut *tx)
    .await?;
    let (product_id, amount_minor, currency, template) =
        product.ok_or_else(|| OrderError::NotFound {
            what: "product",
            name: request.product.clone(),
        })?;
    // Without an install template nothing would install the keys, and the
    // customer would find no key access on the server.
    if template.is_none() && !request.ssh_authorized_keys.is_empty() {
        return Err(OrderError::Invalid {
            field: "ssh_authorized_keys",
            message: format!(
                "product {:?} installs an image without an install template, so it cannot install SSH keys; leave out ssh_authorized_keys, or order a product with a template",
                request.product
            ),
        });
    }
    let site_id: Option<i64> = sqlx::query_scalar("SELECT id FROM sites WHERE name = ?")
        .bind(&request.site)
        .fetch_optional(&mut *tx)
        .await?;
    let site_id = site_id.ok_or_else(|| OrderError::NotFound {
        what: "site",
        name: request.site.clone(),
    })?;

    check_capacity(
        &mut tx,
        &request.product,
        &request.site,
        product_id,
        site_id,
    )
    .await?;
    if let Some(hostname) = &hostname {
        check_hostname_free(&mut tx, hostname, None).await?;
    }

    let now = db::now_ms();
    let uid = uuid::Uuid::new_v4().to_string();
    let order_id: i64 = sqlx::query_scalar(
        "INSERT INTO orders (uid, product_id, site_id, customer_email, hostname, ssh_authorized_keys,
                             state, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, 'pending_payment', ?, ?) RETURNING id",
    )
    .bind(&uid)
    .bind(product_id)
    .bind(site_id)
    .bind(&email)
    .bind(hostname.as_deref().unwrap_or(""))
    .bind(ssh_keys)
    .bind(now)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    if hostname.is_none() {
        sqlx::query("UPDATE orders SET hostname = ? WHERE id = ?")
            .bind(format!("srv-{order_id}"))
            .bind(order_id)
            .execute(&mut *tx)
            .await?;
    }

    let invoice_id: i64 = sqlx::query_scalar(
        "INSERT INTO invoices (order_id, amount_minor, currency, state, created_at)
         VALUES (?, ?, ?, 'open', ?) RETURNING id",
    )
    .bind(order_id)
    .bind(amount_minor)
    .bind(&currency)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;

    Ok(CreatedOrder {
        order_id,
        uid,
        invoice_id,
        amount_minor,
        currency,
        state: "pending_payment",
    })
}

/// Checks the order's SSH keys and returns them as the JSON list stored
/// with the order.
fn check_ssh_keys(keys: &[String]) -> Result<String, OrderError> {
    let invalid = |message: String| OrderError::Invalid {
        field: "ssh_authorized_keys",
        message,
    };
    if keys.len() > MAX_SSH_KEYS {
        return Err(invalid(format!(
            "has {} keys; an order may carry at most {MAX_SSH_KEYS}",
            keys.len()
        )));
    }
    let mut checked = Vec::with_capacity(keys.len());
    for (index, key) in keys.iter().enumerate() {
        // Counted from 1, as a customer reads a list. The value is never
        // quoted: a pasted private key must not reach a response or log.
        let position = index + 1;
        if key.len() > MAX_SSH_KEY_BYTES {
            return Err(invalid(format!(
                "key {position} has {} bytes; a public key line has at most {MAX_SSH_KEY_BYTES}",
                key.len()
            )));
        }
        let key = ssh_key_line(key)
            .map_err(|problem| invalid(format!("key {position} of {}: {problem}", keys.len())))?;
        checked.push(key);
    }
    Ok(serde_json::to_string(&checked).expect("a list of strings serializes"))
}

/// Characters a key comment may hold besides letters and digits. Install
/// templates pass keys to shells (kickstart `%post`, preseed
/// `late_command`), where a template author may quote them wrongly, so a
/// comment carries no quote, `$`, backtick or other shell syntax.
const KEY_COMMENT_PUNCTUATION: &str = " @._+-:,=/";

/// Smallest RSA modulus accepted, in bits. OpenSSH 9.1 refuses keys under
/// 1024 bits, and 2048 is what `ssh-keygen -t rsa` has made for years.
const MIN_RSA_BITS: usize = 2048;

/// Checks one OpenSSH public key line (`TYPE BASE64 [COMMENT]`, as in
/// `id_ed25519.pub`) and returns it with single spaces, or an error that
/// names the problem without quoting the line.
fn ssh_key_line(key: &str) -> Result<String, String> {
    use base64::Engine as _;

    let key = key.trim();
    if key.contains("PRIVATE KEY") || key.contains("PuTTY-User-Key-File") {
        return Err("is a private key; send the public key (the .pub file) instead".to_string());
    }
    if key.contains(['\n', '\r']) {
        return Err("holds a line break; give one key line per entry".to_string());
    }
    if key.chars().any(char::is_control) && !key.contains('\t') {
        return Err(
            "holds a control character; copy the line from the .pub file unchanged".to_string(),
        );
    }
    let mut words = key.split_ascii_whitespace();
    let key_type = words.next().unwrap_or_default();
    let body = words.next().unwrap_or_default();
    let comment: Vec<&str> = words.collect();
    let comment = comment.join(" ");
    if key_type == "ssh-dss" {
        return Err("is a DSA key, which OpenSSH no longer accepts by default; create an ed25519 key with ssh-keygen -t ed25519".to_string());
    }
    let known = [
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    ];
    if !known.contains(&key_type) {
        return Err(
            "does not start with a key type such as ssh-ed25519 or ssh-rsa; give the key without options such as from=\"…\""
                .to_string(),
        );
    }
    let blob = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| "has no valid base64 key after its type".to_string())?;
    let mut reader = SshBlob(&blob);
    if reader.string() != Some(key_type.as_bytes()) {
        return Err(format!(
            "says {key_type}, but its base64 key is of another type; copy the line from the .pub file unchanged"
        ));
    }
    let complete = match key_type {
        "ssh-ed25519" => reader.string().is_some_and(|point| point.len() == 32),
        "sk-ssh-ed25519@openssh.com" => {
            reader.string().is_some_and(|point| point.len() == 32) && reader.string().is_some()
        }
        "ssh-rsa" => {
            let exponent = reader.string();
            let modulus = reader.string();
            match (exponent, modulus) {
                (Some(_), Some(modulus)) => {
                    let bits = rsa_bits(modulus);
                    if bits < MIN_RSA_BITS {
                        return Err(format!(
                            "is a {bits}-bit RSA key; use at least {MIN_RSA_BITS} bits, or an ed25519 key (ssh-keygen -t ed25519)"
                        ));
                    }
                    true
                }
                _ => false,
            }
        }
        ecdsa => {
            let curve = ecdsa
                .trim_start_matches("sk-")
                .trim_start_matches("ecdsa-sha2-")
                .trim_end_matches("@openssh.com");
            let point_len = match curve {
                "nistp256" => 65,
                "nistp384" => 97,
                _ => 133,
            };
            reader.string() == Some(curve.as_bytes())
                && reader
                    .string()
                    .is_some_and(|point| point.len() == point_len)
                && (!ecdsa.starts_with("sk-") || reader.string().is_some())
        }
    };
    if !complete || !reader.0.is_empty() {
        return Err("has a base64 key that is cut short or padded; copy the line from the .pub file unchanged".to_string());
    }
    if !comment
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || KEY_COMMENT_PUNCTUATION.contains(c))
    {
        return Err(format!(
            "has a comment with characters other than letters, digits and {KEY_COMMENT_PUNCTUATION:?}; shorten the comment, for example to user@host"
        ));
    }
    let line = if comment.is_empty() {
        format!("{key_type} {body}")
    } else {
        format!("{key_type} {body} {comment}")
    };
    rackhand_install_templates::check_ssh_key(&line)
        .map_err(|_| "is not an OpenSSH public key line; give the type, the base64 key and an optional comment, as in id_ed25519.pub".to_string())
}

/// Reads SSH wire-format strings (a 32-bit big-endian length, then the
/// bytes) from a public key blob.
struct SshBlob<'a>(&'a [u8]);

impl<'a> SshBlob<'a> {
    fn string(&mut self) -> Option<&'a [u8]> {
        let length = self.0.get(..4)?;
        let length = u32::from_be_bytes([length[0], length[1], length[2], length[3]]) as usize;
        let value = self.0.get(4..4usize.checked_add(length)?)?;
        self.0 = &self.0[4 + length..];
        Some(value)
    }
}

/// Bit length of an SSH `mpint` (big-endian, possibly with a leading zero
/// byte for the sign).
fn rsa_bits(modulus: &[u8]) -> usize {
    let significant: &[u8] = match modulus.iter().position(|&byte| byte != 0) {
        Some(first) => &modulus[first..],
        None => return 0,
    };
    significant.len() * 8 - significant[0].leading_zeros() as usize
}

/// Returns the address part of a customer e-mail address, refusing what
/// cannot receive the welcome e-mail.
fn check_email(text: &str) -> Result<String, OrderError> {
    let invalid = || OrderError::Invalid {
        field: "customer_email",
        message: format!("{text:?} is not an e-mail address such as customer@example.net"),
    };
    let mailbox: lettre::message::Mailbox = text.trim().parse().map_err(|_| invalid())?;
    let address = mailbox.email.to_string();
    // A domain without a dot (a@b, a@localhost) cannot receive mail from
    // the Internet.
    let domain = address
        .rsplit_once('@')
        .map(|(_, domain)| domain)
        .unwrap_or_default();
    if !domain.contains('.') || mailbox.name.is_some() {
        return Err(invalid());
    }
    Ok(address)
}

/// Refuses a host name that another live (not failed) order uses.
async fn check_hostname_free(
    tx: &mut Tx<'_>,
    hostname: &str,
    except_order: Option<i64>,
) -> Result<(), OrderError> {
    let taken: Option<i64> = sqlx::query_scalar(
        "SELECT id FROM orders WHERE lower(hostname) = ? AND state != 'failed' AND id != ? LIMIT 1",
    )
    .bind(hostname)
    .bind(except_order.unwrap_or(-1))
    .fetch_optional(&mut **tx)
    .await?;
    match taken {
        Some(other) => Err(OrderError::Conflict(format!(
            "host name {hostname:?} is already used by order {other}; choose another"
        ))),
        None => Ok(()),
    }
}

/// Refuses an order that no node of the site could ever fill (422), or that
/// no node could fill right now (409), before the customer pays for it.
async fn check_capacity(
    tx: &mut Tx<'_>,
    product: &str,
    site: &str,
    product_id: i64,
    site_id: i64,
) -> Result<(), OrderError> {
    let (fitting, free): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN n.state = 'available' THEN 1 ELSE 0 END), 0)
         FROM nodes n, products p
         WHERE p.id = ? AND n.site_id = ?
           AND n.cpu_cores >= p.min_cpu_cores AND n.ram_mib >= p.min_ram_mib AND n.disk_gb >= p.min_disk_gb",
    )
    .bind(product_id)
    .bind(site_id)
    .fetch_one(&mut **tx)
    .await?;
    if fitting == 0 {
        return Err(OrderError::Invalid {
            field: "site",
            message: format!(
                "no node at site {site:?} meets the minimums of product {product:?}; add one first"
            ),
        });
    }
    if free == 0 {
        return Err(OrderError::Conflict(format!(
            "all {fitting} nodes at site {site:?} that fit product {product:?} are reserved; try again later"
        )));
    }
    Ok(())
}

/// Loads what the phases need about an order.
pub async fn context(pool: &Pool, order_id: i64) -> Result<Option<OrderContext>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, uid, site_id, product_id, node_id, hostname, customer_email, agent_retries
         FROM orders WHERE id = ?",
    )
    .bind(order_id)
    .fetch_optional(pool)
    .await
}

/// Moves an order from `provisioning_pending` to `provisioning`.
pub async fn mark_provisioning(pool: &Pool, order_id: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE orders SET state = 'provisioning', updated_at = ?
         WHERE id = ? AND state = 'provisioning_pending'",
    )
    .bind(db::now_ms())
    .bind(order_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Marks an order failed at `phase`, keeping the error and upstream payload.
pub async fn mark_failed(
    tx: &mut Tx<'_>,
    order_id: i64,
    phase: Phase,
    error: &str,
    upstream: Option<&Value>,
) -> Result<(), sqlx::Error> {
    let upstream = upstream.map(|value| activity::redact(value).to_string());
    sqlx::query(
        "UPDATE orders SET state = 'failed', failed_phase = ?, failure_error = ?, failure_upstream = ?, updated_at = ?
         WHERE id = ?",
    )
    .bind(phase.as_str())
    .bind(error)
    .bind(upstream)
    .bind(db::now_ms())
    .bind(order_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Requeues a failed order at the phase that failed. With `resend_email`,
/// the handoff phase may send the welcome e-mail again even though an
/// earlier attempt may have delivered it.
pub async fn retry(pool: &Pool, order_id: i64, resend_email: bool) -> Result<(), OrderError> {
    let mut tx = db::begin(pool).await?;
    let row: Option<(String, Option<String>, String)> =
        sqlx::query_as("SELECT state, failed_phase, hostname FROM orders WHERE id = ?")
            .bind(order_id)
            .fetch_optional(&mut *tx)
            .await?;
    let (state, failed_phase, hostname) = row.ok_or_else(|| OrderError::NotFound {
        what: "order",
        name: order_id.to_string(),
    })?;
    if state != "failed" {
        return Err(OrderError::WrongState {
            order_id,
            state,
            action: "only failed orders can be retried",
        });
    }
    // Another order may have taken the host name while this one was failed.
    check_hostname_free(&mut tx, &hostname.to_ascii_lowercase(), Some(order_id)).await?;

    let now = db::now_ms();
    sqlx::query(
        "UPDATE orders SET state = 'provisioning', failed_phase = NULL, failure_error = NULL,
             failure_upstream = NULL, updated_at = ?
         WHERE id = ?",
    )
    .bind(now)
    .bind(order_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE jobs SET state = 'queued', attempt = 0, run_after = ?, last_error = NULL,
             lease_owner = NULL, lease_expires_at = NULL, updated_at = ?
         WHERE order_id = ?",
    )
    .bind(now)
    .bind(now)
    .bind(order_id)
    .execute(&mut *tx)
    .await?;
    // A failed site-agent step is run again under new correlation keys (see
    // `phases::correlation_key`), from `driver` even when `image` failed:
    // the node has to be power-cycled to netboot the new attempt. The failed
    // tasks stay as they are, for the record.
    if matches!(failed_phase.as_deref(), Some("driver" | "image")) {
        sqlx::query("UPDATE orders SET agent_retries = agent_retries + 1 WHERE id = ?")
            .bind(order_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE jobs SET phase = 'driver' WHERE order_id = ?")
            .bind(order_id)
            .execute(&mut *tx)
            .await?;
    }
    if resend_email {
        sqlx::query("UPDATE services SET email_state = NULL WHERE order_id = ?")
            .bind(order_id)
            .execute(&mut *tx)
            .await?;
    }

    let phase = failed_phase.unwrap_or_else(|| "unknown".to_string());
    let message = if resend_email {
        "operator retry (the welcome e-mail may be sent again)"
    } else {
        "operator retry"
    };
    activity::record(
        &mut *tx,
        &Entry {
            order_id,
            phase: &phase,
            event: Event::Progress,
            attempt: 0,
            correlation_key: None,
            message,
            payload: None,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
