//! Bearer tokens the real registry accepts, and the loopback token server
//! that hands them out as registry.k8s.io's, ghcr.io's and Docker Hub's do
//! (distribution `docs/spec/auth/token.md`: `GET realm?service=…&scope=…` →
//! `{"token": …}`).
//!
//! What distribution v3.1.2 accepts (`registry/auth/token/token.go`,
//! `accesscontroller.go`): a JWS whose algorithm is one of its
//! `signingAlgorithms` (ES256 here), signed by a key it trusts — here through
//! the `x5c` header, a certificate chain verified against `rootcertbundle`
//! (`verifyCertChain`: the self-signed certificate itself is that bundle) —
//! with `iss` = the configured `issuer`, `aud` containing the configured
//! `service`, `exp`/`nbf` within 60 s of now (`Leeway`), and an `access` claim
//! (`[{type, name, actions}]`) covering every access the request needs.

use super::faults::{Hit, Shared, Via};
use super::wire::{self, Listener};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The `service` the registry is configured with (the `aud` of its tokens).
pub const SERVICE: &str = "kiln-testkit-registry";
/// The `issuer` the registry trusts.
pub const ISSUER: &str = "kiln-testkit-token-server";
/// How long a token is valid, in seconds (`expires_in`).
const TTL: u64 = 300;

/// An ES256 key and its self-signed certificate (the registry's `rootcertbundle`).
pub(crate) struct Signer {
    key: EcdsaKeyPair,
    cert_der: Vec<u8>,
    cert_pem: String,
    rng: SystemRandom,
    serial: AtomicU64,
}

impl Signer {
    pub(crate) fn new() -> Result<Signer, String> {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| format!("key: {e}"))?;
        let cert = rcgen::CertificateParams::new(vec![ISSUER.to_string()])
            .and_then(|p| p.self_signed(&pair))
            .map_err(|e| format!("token certificate: {e}"))?;
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pair.serialize_der(), &rng)
            .map_err(|e| format!("token key: {e}"))?;
        Ok(Signer { key, cert_der: cert.der().to_vec(), cert_pem: cert.pem(), rng, serial: AtomicU64::new(0) })
    }

    /// The certificate, PEM (the registry's `rootcertbundle`).
    pub(crate) fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A token granting `actions` on each repository of `access`.
    pub(crate) fn token(&self, access: &[(String, Vec<String>)]) -> Result<String, String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|e| e.to_string())?.as_secs();
        let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "x5c": [STANDARD.encode(&self.cert_der)]});
        let access: Vec<serde_json::Value> = access
            .iter()
            .map(|(name, actions)| serde_json::json!({"type": "repository", "name": name, "actions": actions}))
            .collect();
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": "anonymous", "aud": SERVICE,
            "exp": now + TTL, "nbf": now, "iat": now,
            "jti": format!("kiln-{now}-{}", self.serial.fetch_add(1, Ordering::Relaxed)),
            "access": access,
        });
        let input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let sig = self.key.sign(&self.rng, input.as_bytes()).map_err(|e| format!("signing: {e}"))?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())))
    }
}

/// The repositories and actions a token request's `scope` parameters ask
/// for (`repository:NAME:ACTION[,ACTION]`), each cut down to `pull`: the
/// server is anonymous, as a public registry's is.
fn granted(query: &str) -> Result<Vec<(String, Vec<String>)>, String> {
    let mut service = None;
    let mut access = Vec::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "service" => service = Some(v.into_owned()),
            "scope" => {
                for scope in v.split(' ').filter(|s| !s.is_empty()) {
                    let mut parts = scope.splitn(2, ':');
                    let (kind, rest) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
                    let Some((name, actions)) = rest.rsplit_once(':') else {
                        return Err(format!("scope `{scope}` is not TYPE:NAME:ACTIONS"));
                    };
                    if kind == "repository" && actions.split(',').any(|a| a == "pull" || a == "*") {
                        access.push((name.to_string(), vec!["pull".to_string()]));
                    }
                }
            }
            _ => {}
        }
    }
    match service.as_deref() {
        Some(SERVICE) => Ok(access),
        Some(other) => Err(format!("unknown service `{other}`")),
        None => Err("no service parameter".to_string()),
    }
}

fn handle(mut sock: TcpStream, signer: &Signer, shared: &Shared) {
    let Some(req) = wire::read_request(&mut sock) else { return };
    let query = req.target.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let json = [("Content-Type".to_string(), "application/json".to_string())];
    let (code, body) = match (req.path(), granted(query)) {
        ("/token", Ok(access)) => match signer.token(&access) {
            Ok(t) => (200, serde_json::json!({"token": t, "access_token": t, "expires_in": TTL})),
            Err(e) => (500, serde_json::json!({"details": e})),
        },
        ("/token", Err(e)) => (400, serde_json::json!({"details": e})),
        _ => (404, serde_json::json!({"details": "not found"})),
    };
    shared.record(Hit {
        via: Via::TokenServer,
        method: req.method.clone(),
        target: req.target.clone(),
        authorization: req.header("authorization").is_some(),
        status: code,
    });
    wire::respond(&mut sock, code, &json, body.to_string().as_bytes());
}

/// Starts the token server on 127.0.0.1; its realm is `http://ADDR/token`.
pub(crate) fn serve(signer: Arc<Signer>, shared: Arc<Shared>) -> Result<Listener, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("token server: bind 127.0.0.1: {e}"))?;
    Ok(Listener::spawn(listener, move |sock| handle(sock, &signer, &shared)))
}
