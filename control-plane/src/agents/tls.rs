//! The agent listener: TLS with optional client certificates, HTTP/1.1 on
//! top, and the client certificate's fingerprint attached to each request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::agents::PeerCertificate;
use crate::pki::fingerprint_hex;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// Accepts TLS connections on `listener` until `shutdown`, serving `router`.
pub async fn serve(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    router: Router,
    shutdown: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(config);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(error = %error, "accepting an agent connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        tokio::spawn(serve_connection(
            acceptor.clone(),
            stream,
            peer,
            router.clone(),
        ));
    }
}

async fn serve_connection(
    acceptor: TlsAcceptor,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    router: Router,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::info!(peer = %peer, error = %error, "agent TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!(peer = %peer, "agent TLS handshake timed out");
            return;
        }
    };

    let fingerprint = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| fingerprint_hex(leaf));
    let service = router.map_request(move |mut request: http::Request<hyper::body::Incoming>| {
        request
            .extensions_mut()
            .insert(PeerCertificate(fingerprint.clone()));
        request
    });

    let result = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(tls), TowerToHyperService::new(service))
        .with_upgrades()
        .await;
    if let Err(error) = result {
        tracing::debug!(peer = %peer, error = %error, "agent connection ended with an error");
    }
}
