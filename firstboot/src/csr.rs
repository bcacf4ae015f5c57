//! Approving kubelet serving certificates (row 37, prevent): with
//! `serverTLSBootstrap = true` under `[node.kubelet]` each kubelet asks for a
//! serving certificate signed by the cluster CA (a `kubernetes.io/kubelet-serving`
//! CertificateSigningRequest) instead of signing its own, and nothing in a kubeadm
//! cluster approves those. `kiln-firstboot approve-csrs` on a control plane approves
//! exactly the ones a node may ask for:
//!
//! * what kube-controller-manager's signer requires of the request itself,
//!   `pkg/apis/certificates/helpers.go` `ValidateKubeletServingCSR` (v1.34.2):
//!   organisation exactly `system:nodes`, CN `system:node:<name>`, at least one DNS
//!   or IP SAN, no email or URI SAN, usages exactly {digital signature, key
//!   encipherment, server auth} or {digital signature, server auth};
//! * what kubelet-csr-approver (postfinance/kubelet-csr-approver) adds, the part
//!   a signer cannot know: the requester (`spec.username`) is that same
//!   `system:node:<name>` in group `system:nodes`, every DNS SAN is the node's name
//!   or one of its Node's DNS addresses, and every IP SAN is one of its Node's
//!   `InternalIP`/`ExternalIP` addresses (`status.addresses`).
//!
//! The request is parsed here (a few DER structures, no crypto library): only
//! the subject and the subjectAltName extension are read; the signer checks the
//! signature.

use base64::Engine;
use serde_json::Value;
use std::net::IpAddr;

/// What a certificate request asks for, as far as approval is concerned.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Request {
    /// Subject common names.
    pub common_names: Vec<String>,
    /// Subject organisations.
    pub organizations: Vec<String>,
    /// DNS SANs.
    pub dns: Vec<String>,
    /// IP SANs.
    pub ips: Vec<IpAddr>,
    /// Email, URI and any other SANs (never allowed for a serving certificate).
    pub other_sans: usize,
}

/// One DER element: its tag and its contents.
struct Tlv<'a> {
    tag: u8,
    body: &'a [u8],
}

/// Reads one DER element from the front of `b`, returning it and the rest.
fn tlv(b: &[u8]) -> Result<(Tlv<'_>, &[u8]), String> {
    let (&tag, rest) = b.split_first().ok_or("truncated DER: no tag")?;
    if tag & 0x1f == 0x1f {
        return Err("DER: high tag numbers are not used in certificate requests".into());
    }
    let (&first, rest) = rest.split_first().ok_or("truncated DER: no length")?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return Err("DER: bad length".into());
        }
        let len = rest[..n].iter().fold(0usize, |a, &d| (a << 8) | usize::from(d));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err("truncated DER: length beyond the data".into());
    }
    Ok((Tlv { tag, body: &rest[..len] }, &rest[len..]))
}

/// Every element inside `b` (a constructed element's contents).
fn elements(mut b: &[u8]) -> Result<Vec<Tlv<'_>>, String> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let (t, rest) = tlv(b)?;
        out.push(t);
        b = rest;
    }
    Ok(out)
}

/// The one element `b` holds, which must have `tag`.
fn expect<'a>(b: &'a [u8], tag: u8, what: &str) -> Result<Tlv<'a>, String> {
    let (t, _) = tlv(b)?;
    if t.tag != tag {
        return Err(format!("DER: {what}: tag {:#04x}, expected {tag:#04x}", t.tag));
    }
    Ok(t)
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const OCTETS: u8 = 0x04;
/// 2.5.4.3 commonName.
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
/// 2.5.4.10 organizationName.
const OID_O: &[u8] = &[0x55, 0x04, 0x0a];
/// 1.2.840.113549.1.9.14 extensionRequest (PKCS #9).
const OID_EXTENSION_REQUEST: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x0e];
/// 2.5.29.17 subjectAltName.
const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];

/// A directory string (UTF8String, PrintableString, IA5String, TeletexString as Latin-1).
fn text(t: &Tlv<'_>) -> Result<String, String> {
    match t.tag {
        0x0c | 0x13 | 0x16 => String::from_utf8(t.body.to_vec()).map_err(|_| "DER: a name is not UTF-8".into()),
        0x14 => Ok(t.body.iter().map(|&b| char::from(b)).collect()),
        other => Err(format!("DER: a name in an unsupported string type {other:#04x}")),
    }
}

/// Parses a PEM `CERTIFICATE REQUEST` (PKCS #10).
pub fn parse_pem(pem: &str) -> Result<Request, String> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .skip_while(|l| *l != "-----BEGIN CERTIFICATE REQUEST-----")
        .skip(1)
        .take_while(|l| *l != "-----END CERTIFICATE REQUEST-----")
        .collect();
    if body.is_empty() {
        return Err("no PEM CERTIFICATE REQUEST block".into());
    }
    let der = base64::engine::general_purpose::STANDARD.decode(body).map_err(|e| format!("PEM is not base64: {e}"))?;
    parse_der(&der)
}

/// Parses a DER PKCS #10 request: `SEQUENCE { CertificationRequestInfo { version,
/// subject, subjectPKInfo, [0] attributes }, signatureAlgorithm, signature }`.
pub fn parse_der(der: &[u8]) -> Result<Request, String> {
    let outer = expect(der, SEQUENCE, "CertificationRequest")?;
    let info = expect(outer.body, SEQUENCE, "CertificationRequestInfo")?;
    let parts = elements(info.body)?;
    if parts.len() < 3 {
        return Err("DER: CertificationRequestInfo is incomplete".into());
    }
    let mut req = Request::default();
    if parts[1].tag != SEQUENCE {
        return Err("DER: subject is not a Name".into());
    }
    for rdn in elements(parts[1].body)? {
        if rdn.tag != SET {
            return Err("DER: subject RDN is not a SET".into());
        }
        for atv in elements(rdn.body)? {
            let f = elements(atv.body)?;
            if atv.tag != SEQUENCE || f.len() != 2 || f[0].tag != OID {
                return Err("DER: bad subject attribute".into());
            }
            if f[0].body == OID_CN {
                req.common_names.push(text(&f[1])?);
            } else if f[0].body == OID_O {
                req.organizations.push(text(&f[1])?);
            }
        }
    }
    let Some(attrs) = parts.get(3) else { return Ok(req) };
    if attrs.tag != 0xa0 {
        return Err("DER: attributes are not [0]".into());
    }
    for attr in elements(attrs.body)? {
        let f = elements(attr.body)?;
        if attr.tag != SEQUENCE || f.len() != 2 || f[0].tag != OID || f[1].tag != SET {
            return Err("DER: bad request attribute".into());
        }
        if f[0].body != OID_EXTENSION_REQUEST {
            continue;
        }
        for exts in elements(f[1].body)? {
            for ext in elements(exts.body)? {
                let e = elements(ext.body)?;
                let (Some(id), Some(value)) = (e.first(), e.last()) else {
                    return Err("DER: bad extension".into());
                };
                if id.tag != OID || value.tag != OCTETS {
                    return Err("DER: bad extension".into());
                }
                if id.body == OID_SAN {
                    sans(value.body, &mut req)?;
                }
            }
        }
    }
    Ok(req)
}

/// GeneralNames: `[2]` dNSName, `[7]` iPAddress; everything else counted as other.
fn sans(value: &[u8], req: &mut Request) -> Result<(), String> {
    let names = expect(value, SEQUENCE, "GeneralNames")?;
    for n in elements(names.body)? {
        match n.tag {
            0x82 => req.dns.push(String::from_utf8(n.body.to_vec()).map_err(|_| "DER: a DNS SAN is not ASCII")?),
            0x87 => match n.body.len() {
                4 => req.ips.push(IpAddr::from(<[u8; 4]>::try_from(n.body).map_err(|_| "DER: bad IPv4 SAN")?)),
                16 => req.ips.push(IpAddr::from(<[u8; 16]>::try_from(n.body).map_err(|_| "DER: bad IPv6 SAN")?)),
                _ => return Err("DER: an IP SAN is neither 4 nor 16 bytes".into()),
            },
            _ => req.other_sans += 1,
        }
    }
    Ok(())
}

/// A Node's `status.addresses`: (type, address) pairs.
pub type Addresses = Vec<(String, String)>;

/// The signer name of kubelet serving certificates.
pub const KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";

/// Why a kubelet-serving CSR (one `certificates.k8s.io/v1` object) is not approved,
/// or `Ok(node name)`. `node` looks up a Node's `status.addresses` by name (`None`:
/// no such Node).
pub fn check(csr: &Value, node: &dyn Fn(&str) -> Option<Addresses>) -> Result<String, String> {
    let spec = &csr["spec"];
    if spec["signerName"] != KUBELET_SERVING {
        return Err(format!("signer {} is not {KUBELET_SERVING}", spec["signerName"]));
    }
    let user = spec["username"].as_str().unwrap_or_default();
    let name = user
        .strip_prefix("system:node:")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("requested by {}, not a node (system:node:<name>)", crate::http::escape(user)))?;
    crate::validate::names::node_name(name).map_err(|e| format!("node name in {user}: {e}"))?;
    let groups: Vec<&str> = spec["groups"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    if !groups.contains(&"system:nodes") {
        return Err(format!("{user} is not in group system:nodes"));
    }
    let mut usages: Vec<&str> = spec["usages"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    usages.sort_unstable();
    if usages != ["digital signature", "key encipherment", "server auth"]
        && usages != ["digital signature", "server auth"]
    {
        return Err(format!("usages {usages:?} are not a serving certificate's"));
    }
    let pem = spec["request"]
        .as_str()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or("spec.request is not base64 PEM")?;
    let req = parse_pem(&pem)?;
    if req.common_names != [user] {
        return Err(format!("subject CN {:?} is not the requester {user}", req.common_names));
    }
    if req.organizations != ["system:nodes"] {
        return Err(format!("subject O {:?} is not exactly system:nodes", req.organizations));
    }
    if req.other_sans > 0 {
        return Err("email, URI or other SANs are not allowed".into());
    }
    if req.dns.is_empty() && req.ips.is_empty() {
        return Err("no DNS or IP SAN".into());
    }
    let addresses = node(name).ok_or_else(|| format!("no Node {name}"))?;
    let has = |kinds: &[&str], v: &str| addresses.iter().any(|(k, a)| kinds.contains(&k.as_str()) && a == v);
    for d in &req.dns {
        if d != name && !has(&["Hostname", "InternalDNS", "ExternalDNS"], d) {
            return Err(format!("DNS SAN {} is neither {name} nor one of its Node's names", crate::http::escape(d)));
        }
    }
    for ip in &req.ips {
        let node_has = addresses.iter().any(|(k, a)| {
            (k == "InternalIP" || k == "ExternalIP") && a.parse::<IpAddr>().map(|a| a == *ip).unwrap_or(false)
        });
        if !node_has {
            return Err(format!("IP SAN {ip} is not one of Node {name}'s addresses"));
        }
    }
    Ok(name.to_string())
}

/// Whether a CSR still waits for a decision (no Approved or Denied condition).
pub fn pending(csr: &Value) -> bool {
    !csr["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Approved" || c["type"] == "Denied" || c["type"] == "Failed")
}

/// A Node's `status.addresses` as (type, address) pairs.
pub fn addresses(node: &Value) -> Addresses {
    node["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| Some((a["type"].as_str()?.to_string(), a["address"].as_str()?.to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl req -new -newkey ec ... -subj "/O=system:nodes/CN=system:node:worker-1"
    /// -addext "subjectAltName=DNS:worker-1,IP:10.0.0.21,IP:fd00::21,email:a@b.c"`.
    const OPENSSL_REQUEST: &str = "-----BEGIN CERTIFICATE REQUEST-----\nMIIBNTCB3QIBADA2MRUwEwYDVQQKDAxzeXN0ZW06bm9kZXMxHTAbBgNVBAMMFHN5\nc3RlbTpub2RlOndvcmtlci0xMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEfvpS\nZ3cZ1YXvWGBar67PwyR4dZGojBnXDRD94k8Ed7KoD7spyXlOzeRQmyZKJthpyjTs\nrD6YHe2GeKL8IPBZqqBFMEMGCSqGSIb3DQEJDjE2MDQwMgYDVR0RBCswKYIId29y\na2VyLTGHBAoAABWHEP0AAAAAAAAAAAAAAAAAACGBBWFAYi5jMAoGCCqGSM49BAMC\nA0cAMEQCIGkCS5DHU3OgpeKLlgdL8KHrNGy5Aq6p16OLYIXrywa9AiAKnDjeoXjS\nqsn4hv4lSQfJn6+ELoIjxFMdvw/5bLD89g==\n-----END CERTIFICATE REQUEST-----\n";

    #[test]
    fn reads_what_openssl_wrote() {
        let r = parse_pem(OPENSSL_REQUEST).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.common_names, ["system:node:worker-1"]);
        assert_eq!(r.organizations, ["system:nodes"]);
        assert_eq!(r.dns, ["worker-1"]);
        assert_eq!(
            r.ips,
            [
                "10.0.0.21".parse::<IpAddr>().unwrap_or(IpAddr::from([0; 4])),
                "fd00::21".parse().unwrap_or(IpAddr::from([0; 4]))
            ]
        );
        assert_eq!(r.other_sans, 1, "the email SAN");
    }

    #[test]
    fn every_truncation_and_byte_flip_of_a_request_is_an_answer_not_a_panic() {
        let body: String = OPENSSL_REQUEST.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD.decode(body).unwrap_or_default();
        assert!(parse_der(&der).is_ok());
        for n in 0..der.len() {
            assert!(parse_der(&der[..n]).is_err(), "truncated at {n}");
        }
        for i in 0..der.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut d = der.clone();
                d[i] ^= flip;
                let _ = parse_der(&d);
            }
        }
    }

    #[test]
    fn hostile_der_is_an_error_not_a_panic() {
        for b in [&[][..], &[0x30], &[0x30, 0x85, 1, 2, 3, 4, 5], &[0x30, 0x05, 0x30], &[0x1f, 0x01, 0x00]] {
            assert!(parse_der(b).is_err(), "{b:?}");
        }
        assert!(parse_pem("not pem").is_err());
        assert!(parse_pem("-----BEGIN CERTIFICATE REQUEST-----\n!!!\n-----END CERTIFICATE REQUEST-----\n").is_err());
    }

    #[test]
    fn only_pending_csrs_are_considered() {
        assert!(pending(&serde_json::json!({"status": {}})));
        assert!(!pending(&serde_json::json!({"status": {"conditions": [{"type": "Approved"}]}})));
        assert!(!pending(&serde_json::json!({"status": {"conditions": [{"type": "Denied"}]}})));
    }
}
