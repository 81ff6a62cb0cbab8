//! Outbound HTTP clients (PowerDNS and other upstream APIs), all on rustls
//! with the ring provider and the webpki root store.

use std::sync::Arc;
use std::time::Duration;

/// Builds a client with `timeout` for connect plus the whole request.
pub fn build(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    builder(timeout.min(Duration::from_secs(10)))
        .timeout(timeout)
        .build()
}

/// Builds a client without an overall time limit, for connections that
/// stay open as long as their user wants (console sessions).
pub fn build_for_streams() -> reqwest::Result<reqwest::Client> {
    builder(Duration::from_secs(10)).build()
}

fn builder(connect_timeout: Duration) -> reqwest::ClientBuilder {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("the ring provider supports the default protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();

    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("rackhand/", env!("CARGO_PKG_VERSION")))
}
