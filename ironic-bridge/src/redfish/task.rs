//! Task monitors: a request the BMC accepts with `202 Accepted` and a
//! `Location` is polled there until the task ends.
//!
//! A task monitor returns 202 while the task runs. Once the task ended, it
//! returns either the operation's own response or the Task resource with
//! `TaskState`, and the driver accepts both. Dell's iDRAC jobs report `JobState` next to or instead of
//! `TaskState`, so that is read too.

use std::time::Duration;

use http::Method;
use reqwest::{StatusCode, Url};
use serde_json::Value;
use tokio::time::Instant;

use super::client::{EXCERPT_BYTES, Extra, RedfishClient, Reply};
use super::discovery::resolve;
use crate::driver::DriverError;

/// Poll interval when the task monitor sends no `Retry-After`.
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Longest wait between two polls, whatever `Retry-After` requests, so a
/// task that ends early is noticed within this time.
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(30);

/// Maximum polls of one task; with the one-second default interval this is
/// above every vendor's task deadline.
const MAX_POLLS: usize = 2_000;

/// Waits for the task that `reply` started, if it started one: a 202 with a
/// `Location`. Returns at once for any other reply.
pub(crate) async fn wait_for_task(
    client: &RedfishClient,
    request_url: &Url,
    reply: &Reply,
    deadline: Duration,
) -> Result<(), DriverError> {
    if reply.status != StatusCode::ACCEPTED {
        return Ok(());
    }
    let Some(location) = &reply.location else {
        tracing::debug!(node = client.node(), url = %request_url, "202 without Location; nothing to poll");
        return Ok(());
    };
    let monitor = resolve(client, request_url, location)?;
    let started = Instant::now();
    let mut wait = poll_interval(reply.retry_after);

    for _ in 0..MAX_POLLS {
        let remaining = deadline.saturating_sub(started.elapsed());
        if remaining.is_zero() {
            break;
        }
        tokio::time::sleep(wait.min(remaining)).await;

        let poll = client
            .send(Method::GET, &monitor, None, Extra::default())
            .await?;
        wait = poll_interval(poll.retry_after);
        if poll.status == StatusCode::NO_CONTENT || poll.body.trim_ascii().is_empty() {
            if poll.status == StatusCode::ACCEPTED {
                continue;
            }
            return Ok(());
        }
        let task: Value = client.parse_json(&poll, &Method::GET, &monitor)?;
        match task_outcome(&task) {
            Outcome::Running => continue,
            Outcome::Succeeded => return Ok(()),
            Outcome::Failed(state) => {
                return Err(DriverError::TaskFailed {
                    node: client.node().to_string(),
                    url: monitor.to_string(),
                    state,
                    message: task_messages(&task),
                });
            }
        }
    }
    Err(DriverError::Timeout {
        node: client.node().to_string(),
        url: monitor.to_string(),
        method: Method::GET,
        timeout: deadline,
    })
}

fn poll_interval(retry_after: Option<Duration>) -> Duration {
    retry_after
        .unwrap_or(DEFAULT_POLL_INTERVAL)
        .min(MAX_POLL_INTERVAL)
}

enum Outcome {
    Running,
    Succeeded,
    /// The state word, such as `Exception` or `Failed`.
    Failed(String),
}

/// Reads `TaskState` (DMTF) or `JobState` (Dell). A body with neither is
/// the operation's own response, which means success.
fn task_outcome(task: &Value) -> Outcome {
    let state = task
        .get("TaskState")
        .or_else(|| task.get("JobState"))
        .and_then(Value::as_str);
    let Some(state) = state else {
        return Outcome::Succeeded;
    };
    match state {
        "Completed" => {
            let status = task.get("TaskStatus").and_then(Value::as_str);
            if status == Some("Critical") {
                Outcome::Failed(format!("{state} with TaskStatus Critical"))
            } else {
                Outcome::Succeeded
            }
        }
        // A Dell job that waits for the next reset is Scheduled; the request
        // it carries was accepted.
        "Scheduled" if task.get("JobState").is_some() => Outcome::Succeeded,
        // Dell's jobs end in "CompletedWithErrors" or "Failed".
        "Exception" | "Killed" | "Cancelled" | "Interrupted" | "Failed" | "CompletedWithErrors" => {
            Outcome::Failed(state.to_string())
        }
        _ => Outcome::Running,
    }
}

/// Joins the task's `Messages[].Message` (DMTF) or `Message` (Dell).
fn task_messages(task: &Value) -> Option<String> {
    let mut messages: Vec<&str> = task
        .get("Messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .take(4)
        .filter_map(|message| message.get("Message").and_then(Value::as_str))
        .collect();
    if let Some(message) = task.get("Message").and_then(Value::as_str) {
        messages.push(message);
    }
    if messages.is_empty() {
        return None;
    }
    let mut joined = messages.join("; ");
    if joined.len() > EXCERPT_BYTES {
        let mut end = EXCERPT_BYTES;
        while !joined.is_char_boundary(end) {
            end -= 1;
        }
        joined.truncate(end);
    }
    Some(joined)
}
