//! TLS for WebSocket (`wss://`) and RawSocket listeners, with rustls (ring
//! provider, TLS 1.2 and 1.3): the server configuration of each listener,
//! read and checked at start, and what a finished handshake tells the router
//! (the client certificate's common name, the `tls-exporter` channel
//! binding).
//!
//! TLS sits below the framing: decrypted bytes land in the connection's read
//! buffer and frames are split from it as over TCP, so payloads are still
//! spliced without a copy of their own.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;

use crate::config::{ListenerConfig, TlsConfig};
use crate::router::TlsInfo;

/// The label RFC 9266 gives the `tls-exporter` channel binding.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-Channel-Binding";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(key: &str, path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let data = std::fs::read(path).map_err(|e| format!("{key}: cannot read '{path}': {e}"))?;
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut data.as_slice()).collect();
    let certs = certs.map_err(|e| format!("{key}: '{path}' is not PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{key}: '{path}' holds no certificate"));
    }
    Ok(certs)
}

/// A TLS client set-up that trusts only the CAs in the PEM file `path`
/// (for HTTPS to servers with a private CA, such as webhook receivers);
/// errors name `key`.
pub fn client_trusting(key: &str, path: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in read_certs(key, path)? {
        roots.add(c).map_err(|e| format!("{key}: '{path}': {e}"))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("{key}: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn read_key(key: &str, path: &str) -> Result<PrivateKeyDer<'static>, String> {
    let data = std::fs::read(path).map_err(|e| format!("{key}: cannot read '{path}': {e}"))?;
    match rustls_pemfile::private_key(&mut data.as_slice()) {
        Ok(Some(k)) => Ok(k),
        Ok(None) => Err(format!("{key}: '{path}' holds no private key")),
        Err(e) => Err(format!("{key}: '{path}' is not PEM: {e}")),
    }
}

/// The server configuration of one listener's `tls` section; errors name
/// the key (`listener[i].tls.certificate`, ...).
pub fn server_config(i: usize, t: &TlsConfig) -> Result<ServerConfig, String> {
    let k = |f: &str| format!("listener[{i}].tls.{f}");
    let certs = read_certs(&k("certificate"), &t.certificate)?;
    let key = read_key(&k("key"), &t.key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("{}: {e}", k("certificate")))?;
    let builder = match &t.client_ca {
        None => {
            if t.require_client_certificate {
                return Err(format!("{}: needs client_ca", k("require_client_certificate")));
            }
            builder.with_no_client_auth()
        }
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs(&k("client_ca"), ca)? {
                roots.add(c).map_err(|e| format!("{}: '{ca}': {e}", k("client_ca")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let verifier = if t.require_client_certificate {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier.build().map_err(|e| format!("{}: {e}", k("client_ca")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("{}: the key does not fit the certificate: {e}", k("key")))
}

/// The TLS configuration of every listener (`None` for plain ones).
pub fn acceptors(listeners: &[(ListenerConfig, crate::config::Bind)]) -> Result<Vec<Option<Arc<ServerConfig>>>, String> {
    listeners
        .iter()
        .enumerate()
        .map(|(i, (l, _))| l.tls.as_ref().map(|t| server_config(i, t).map(Arc::new)).transpose())
        .collect()
}

/// The subject common name of a DER certificate.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// What a completed handshake tells the router.
pub fn info(conn: &rustls::ServerConnection) -> TlsInfo {
    let client_cn = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| common_name(c.as_ref()));
    // RFC 9266: tls-exporter binds a TLS 1.3 connection (on TLS 1.2 only
    // with the extended master secret, which rustls does not report), so
    // it is offered over TLS 1.3 only
    let exporter = (conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3))
        .then(|| conn.export_keying_material([0u8; 32], EXPORTER_LABEL, None).ok())
        .flatten();
    TlsInfo { client_cn, exporter }
}
