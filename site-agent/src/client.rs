//! The agent's client of the control plane's agent API, over mutual TLS.

use std::time::Duration;

use anyhow::{Context as _, bail};
use rackhand_protocol::agent::{
    self as wire, ClaimRequest, Heartbeat, HeartbeatAck, Operation, OperationClaim,
    OperationOutcome, SiteState, Task, TaskReport,
};
use rackhand_protocol::images::StageReport;
use rackhand_protocol::{PROTOCOL_HEADER, PROTOCOL_VERSION};
use reqwest::StatusCode;

use crate::enroll::Identity;

/// A connection to the control plane.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    http: reqwest::Client,
    /// The same identity without an overall time limit, for console
    /// sessions that last as long as the operator stays.
    streams: reqwest::Client,
    base: String,
}

/// Seconds a claim may stay open waiting for a task.
pub const CLAIM_WAIT_SECONDS: u32 = 20;

impl ControlPlane {
    pub fn new(base: &str, identity: &Identity) -> anyhow::Result<ControlPlane> {
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(identity.tls.clone())
            .connect_timeout(Duration::from_secs(10))
            // Long enough for a claim's long poll plus slack.
            .timeout(Duration::from_secs(u64::from(CLAIM_WAIT_SECONDS) + 20))
            .build()?;
        let streams = reqwest::Client::builder()
            .tls_backend_preconfigured(identity.tls.clone())
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(ControlPlane {
            http,
            streams,
            base: base.to_string(),
        })
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .header(PROTOCOL_HEADER, PROTOCOL_VERSION.to_string())
    }

    async fn check(response: reqwest::Response, what: &str) -> anyhow::Result<reqwest::Response> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        bail!("control plane rejected {what}: {status}: {body}")
    }

    /// Fetches the site's nodes.
    pub async fn site(&self) -> anyhow::Result<SiteState> {
        let response = self
            .http
            .get(format!("{}{}", self.base, wire::SITE_PATH))
            .header(PROTOCOL_HEADER, PROTOCOL_VERSION.to_string())
            .send()
            .await
            .context("fetching the site state")?;
        Ok(Self::check(response, "the site state request")
            .await?
            .json()
            .await?)
    }

    /// Long-polls for the next task; `None` when none came in time.
    /// `running` lists the correlation keys of the tasks running here, which
    /// the control plane does not hand out.
    pub async fn claim(&self, resume: bool, running: Vec<String>) -> anyhow::Result<Option<Task>> {
        let response = self
            .post(wire::CLAIM_PATH)
            .json(&ClaimRequest {
                wait_seconds: CLAIM_WAIT_SECONDS,
                resume,
                running,
            })
            .send()
            .await
            .context("claiming a task")?;
        if response.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        Ok(Some(
            Self::check(response, "the claim").await?.json().await?,
        ))
    }

    /// Extends a task's lease.
    pub async fn heartbeat(&self, task_id: i64, beat: &Heartbeat) -> anyhow::Result<HeartbeatAck> {
        let response = self
            .post(&wire::heartbeat_path(task_id))
            .json(beat)
            .send()
            .await
            .context("sending a heartbeat")?;
        Ok(Self::check(response, "the heartbeat").await?.json().await?)
    }

    /// Reports a task's result (JSON body of a [`TaskReport`]).
    pub async fn report(&self, task_id: i64, body: &str) -> anyhow::Result<()> {
        let response = self
            .post(&wire::result_path(task_id))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .context("reporting a result")?;
        Self::check(response, "the result").await?;
        Ok(())
    }
}

impl ControlPlane {
    /// Long-polls for the next node operation; `None` when none came in time.
    pub async fn claim_operation(&self) -> anyhow::Result<Option<Operation>> {
        let response = self
            .post(wire::OPERATION_CLAIM_PATH)
            .json(&OperationClaim {
                wait_seconds: CLAIM_WAIT_SECONDS,
            })
            .send()
            .await
            .context("claiming a node operation")?;
        if response.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        Ok(Some(
            Self::check(response, "the operation claim")
                .await?
                .json()
                .await?,
        ))
    }

    /// Joins the console session of operation `operation_id`; returns the
    /// upgraded connection that carries the operator's bytes.
    pub async fn join_console(&self, operation_id: i64) -> anyhow::Result<reqwest::Upgraded> {
        let response = self
            .streams
            .post(format!(
                "{}{}",
                self.base,
                wire::console_attach_path(operation_id)
            ))
            .header(PROTOCOL_HEADER, PROTOCOL_VERSION.to_string())
            .header(reqwest::header::CONNECTION, "upgrade")
            .header(reqwest::header::UPGRADE, wire::CONSOLE_UPGRADE)
            .send()
            .await
            .context("joining a console session")?;
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            bail!("control plane refused the console session {operation_id}: {status}: {body}");
        }
        Ok(response.upgrade().await?)
    }

    /// Reports a node operation's result.
    pub async fn report_operation(
        &self,
        operation_id: i64,
        outcome: &OperationOutcome,
    ) -> anyhow::Result<()> {
        let response = self
            .post(&wire::operation_result_path(operation_id))
            .json(outcome)
            .send()
            .await
            .context("reporting a node operation's result")?;
        Self::check(response, "the operation result").await?;
        Ok(())
    }
}

impl ControlPlane {
    /// Returns the origin that the image cache fetches uploaded files from:
    /// this control plane, with the agent's identity and a read timeout in
    /// place of an overall one, because a disk image may take long.
    pub fn image_origin(&self, identity: &Identity) -> anyhow::Result<rackhand_images::Origin> {
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(identity.tls.clone())
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            PROTOCOL_HEADER,
            reqwest::header::HeaderValue::from(PROTOCOL_VERSION),
        );
        Ok(rackhand_images::Origin {
            base_url: self.base.clone(),
            client,
            headers,
        })
    }

    /// Reports the status of a staged image.
    pub async fn report_stage(&self, report: &StageReport) -> anyhow::Result<()> {
        let response = self
            .post(rackhand_protocol::images::STAGE_REPORT_PATH)
            .json(report)
            .send()
            .await
            .context("reporting a pre-staging status")?;
        Self::check(response, "the pre-staging status").await?;
        Ok(())
    }
}

/// Serializes a report for storage and sending.
pub fn encode_report(report: &TaskReport) -> String {
    serde_json::to_string(report).expect("a task report always serializes")
}
