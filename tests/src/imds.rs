//! Loopback metadata services that speak a platform's real protocol, shared by
//! kiln-firstboot's provider unit tests and its end-to-end `plan` test.

use crate::http::{Reply, Request, Server};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// IMDSv2: a token from PUT, then the token on every GET; the token rotates
/// after `rotate_after` GETs (old token → 401). Serves `user_data` as the
/// instance's user-data; the counter is how many tokens were handed out.
pub fn aws(rotate_after: u32, user_data: Vec<u8>) -> (Server, Arc<AtomicU32>) {
    let gets = Arc::new(AtomicU32::new(0));
    let tokens = Arc::new(AtomicU32::new(0));
    let (g, t) = (Arc::clone(&gets), Arc::clone(&tokens));
    let server = Server::start(move |r: &Request| {
        if r.method == "PUT" && r.path() == "/latest/api/token" {
            if r.header("x-aws-ec2-metadata-token-ttl-seconds").is_none() {
                return Reply::status(400);
            }
            let n = t.fetch_add(1, Ordering::SeqCst) + 1;
            return Reply::ok(format!("token-{n}"));
        }
        let current = format!("token-{}", t.load(Ordering::SeqCst));
        let n = g.fetch_add(1, Ordering::SeqCst) + 1;
        if r.header("x-aws-ec2-metadata-token") != Some(current.as_str())
            || (n == rotate_after + 1 && t.load(Ordering::SeqCst) == 1)
        {
            if n == rotate_after + 1 {
                t.fetch_add(1, Ordering::SeqCst); // the service rotated: the old token is refused
            }
            return Reply::status(401);
        }
        match r.path() {
            "/latest/meta-data/instance-id" => Reply::ok("i-0abc"),
            "/latest/meta-data/local-hostname" => Reply::ok("ip-10-0-0-5.eu-west-1.compute.internal"),
            "/latest/meta-data/local-ipv4" => Reply::ok("10.0.0.5"),
            "/latest/meta-data/placement/region" => Reply::ok("eu-west-1"),
            "/latest/meta-data/placement/availability-zone" => Reply::ok("eu-west-1a"),
            "/latest/meta-data/tags/instance/kiln-role" => Reply::ok("control-plane"),
            "/latest/user-data" => Reply::ok(user_data.clone()),
            _ => Reply::status(404),
        }
    });
    (server, tokens)
}
