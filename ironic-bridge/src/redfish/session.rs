//! Redfish sessions: login through `SessionService/Sessions`, the
//! `X-Auth-Token` on every request, and logout.
//!
//! With a session, the BMC checks the password once instead of on every
//! request. BMCs limit how many sessions are open at a time, so the driver
//! logs out when it is closed or dropped.
//! The service root decides: a root that links `Links.Sessions` gets
//! sessions, any other gets HTTP basic auth. A login that the BMC does not
//! implement (404, 405, 501) falls back to basic auth.

use http::Method;
use rackhand_protocol::Secret;
use reqwest::{StatusCode, Url};
use serde_json::json;

use super::client::{Extra, RedfishClient};
use crate::driver::{DriverError, ResponseProblem};

/// The client's authentication method.
#[derive(Debug)]
pub(crate) enum Auth {
    /// HTTP basic auth on every request.
    Basic,
    /// A session from `sessions`, logged in on the first request.
    Session { sessions: Url, login: Option<Login> },
}

/// A session the client holds.
#[derive(Debug)]
pub(crate) struct Login {
    token: Secret,
    /// The session resource (`Location` of the login response), deleted on
    /// logout. `None` when the BMC did not send one.
    location: Option<Url>,
}

/// The credentials one request carries.
#[derive(Debug, Clone)]
pub(crate) enum Credentials {
    Basic,
    Token(Secret),
    /// No credentials: the session login itself.
    None,
}

impl Credentials {
    pub fn is_session(&self) -> bool {
        matches!(self, Credentials::Token(_))
    }
}

impl RedfishClient {
    /// Switches to session authentication through the `sessions`
    /// collection. The login happens on the next request.
    pub async fn use_sessions(&self, sessions: Url) {
        let mut auth = self.auth.lock().await;
        if matches!(*auth, Auth::Basic) {
            *auth = Auth::Session {
                sessions,
                login: None,
            };
        }
    }

    /// Returns whether requests carry a session token (or will, after the
    /// next login).
    pub async fn uses_sessions(&self) -> bool {
        matches!(*self.auth.lock().await, Auth::Session { .. })
    }

    /// Returns the credentials for the next request, logging in first when
    /// sessions are on and no session is open. Concurrent callers wait for
    /// one login.
    pub(super) async fn credentials(&self) -> Result<Credentials, DriverError> {
        let mut auth = self.auth.lock().await;
        let sessions = match &*auth {
            Auth::Basic => return Ok(Credentials::Basic),
            Auth::Session {
                login: Some(login), ..
            } => return Ok(Credentials::Token(login.token.clone())),
            Auth::Session {
                sessions,
                login: None,
            } => sessions.clone(),
        };

        match self.login(&sessions).await? {
            Some(login) => {
                let token = login.token.clone();
                *auth = Auth::Session {
                    sessions,
                    login: Some(login),
                };
                Ok(Credentials::Token(token))
            }
            None => {
                *auth = Auth::Basic;
                Ok(Credentials::Basic)
            }
        }
    }

    /// Drops the session whose token `used` carried, so the next request
    /// logs in again. A session another caller already replaced is kept.
    pub(super) async fn forget_session(&self, used: &Credentials) {
        let Credentials::Token(used) = used else {
            return;
        };
        let mut auth = self.auth.lock().await;
        if let Auth::Session { login, .. } = &mut *auth
            && login
                .as_ref()
                .is_some_and(|login| login.token.expose() == used.expose())
        {
            *login = None;
        }
    }

    /// Posts the credentials to `sessions`. Returns `None` when the BMC has
    /// no working SessionService, so that basic auth is used instead.
    async fn login(&self, sessions: &Url) -> Result<Option<Login>, DriverError> {
        let body = json!({
            "UserName": self.username(),
            "Password": self.password().expose(),
        });
        let reply = self
            .exchange_once(
                &Method::POST,
                sessions,
                Some(&body),
                &Credentials::None,
                Extra::default(),
            )
            .await?;
        if matches!(
            reply.status,
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED
        ) {
            tracing::debug!(node = self.node(), url = %sessions, status = reply.status.as_u16(), "no session login; using basic auth");
            return Ok(None);
        }
        self.check_status(&reply, &Method::POST, sessions)?;

        let Some(token) = reply.auth_token else {
            let problem = ResponseProblem::UnexpectedContent(
                "the session login response has no X-Auth-Token header".into(),
            );
            return Err(self.invalid_response(&Method::POST, sessions, problem, &reply.body));
        };
        // A Location on another server is ignored rather than followed: the
        // token must not travel elsewhere, and the session expires anyway.
        let location = reply
            .location
            .as_deref()
            .and_then(|location| sessions.join(location).ok())
            .filter(|location| location.origin() == sessions.origin());
        tracing::debug!(node = self.node(), session = ?location.as_ref().map(Url::as_str), "session opened");
        Ok(Some(Login { token, location }))
    }

    /// Logs out: deletes the session resource. Later requests log in again.
    /// Does nothing with basic auth or without an open session.
    pub async fn close(&self) -> Result<(), DriverError> {
        let login = match &mut *self.auth.lock().await {
            Auth::Session { login, .. } => login.take(),
            Auth::Basic => None,
        };
        let Some(Login {
            token,
            location: Some(location),
        }) = login
        else {
            return Ok(());
        };

        let credentials = Credentials::Token(token);
        let reply = self
            .exchange_once(
                &Method::DELETE,
                &location,
                None,
                &credentials,
                Extra::default(),
            )
            .await?;
        // An expired session is gone already.
        if matches!(
            reply.status,
            StatusCode::NOT_FOUND | StatusCode::UNAUTHORIZED
        ) {
            return Ok(());
        }
        self.check_status(&reply, &Method::DELETE, &location)?;
        tracing::debug!(node = self.node(), session = %location, "session closed");
        Ok(())
    }
}

impl Drop for RedfishClient {
    /// Deletes an open session in the background. Without a tokio runtime,
    /// or when the runtime stops first, the session stays until the BMC
    /// expires it; [`RedfishClient::close`] is the way to be sure.
    fn drop(&mut self) {
        let timeout = self.timeout();
        let http = self.http().clone();
        let node = self.node().to_string();
        let Auth::Session {
            login: Some(login), ..
        } = self.auth.get_mut()
        else {
            return;
        };
        let Some(location) = login.location.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let request = http
            .delete(location)
            .header("X-Auth-Token", login.token.expose().as_str())
            .timeout(timeout);
        runtime.spawn(async move {
            if let Err(error) = request.send().await {
                tracing::debug!(node, error = %error, "session logout on drop failed");
            }
        });
    }
}
