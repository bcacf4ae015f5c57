//! Fuzz targets kept in the repo: the node.toml parser, gzip user-data, the
//! kernel command line and the metadata HTTP response parser.
//!
//! A small deterministic mutation fuzzer (no nightly toolchain, no extra
//! dependencies): every input under `tests/fuzz/<target>/` (seeds and any crash
//! found earlier, kept as regression cases) runs first, then mutations of the
//! corpus — bit flips, byte edits, inserted tokens of the format, duplicated and
//! deleted ranges, splices of two inputs. A panic writes the input to
//! `tests/fuzz/<target>/crash-<hash>` and fails the test.
//!
//! The normal test run does a short bounded number of cases per target; set
//! `KILN_FUZZ_CASES=N` for a long run (and `KILN_FUZZ_SEED` to vary it), e.g.
//! `KILN_FUZZ_CASES=1000000 cargo nextest run -p kiln-firstboot --release --test fuzz --no-capture`.

use kiln_firstboot::contract::node::NodeConfig;
use kiln_firstboot::http::parse_response;
use kiln_firstboot::machine::cmdline::cmdline_args;
use kiln_firstboot::machine::paths::contained;
use kiln_testkit::rng::Rng;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz").join(target)
}

fn load(target: &str) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir(target))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

fn cases(default: usize) -> usize {
    std::env::var("KILN_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Mutates `input` once or a few times, using `dict` tokens and `other` for splices.
fn mutate(rng: &mut Rng, input: &[u8], other: &[u8], dict: &[&[u8]]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = v.len();
        match rng.below(10) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(len + 1);
                v.insert(i, [0u8, b'\n', b'\r', b'"', b'=', b' ', 0x7f, 0xff, b'\\', b'\''][rng.below(10)]);
            }
            3 | 4 => {
                let t = dict[rng.below(dict.len())];
                let i = rng.below(len + 1);
                v.splice(i..i, t.iter().copied());
            }
            5 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(16.min(len - a))).min(len);
                v.drain(a..b);
            }
            6 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(64.min(len - a))).min(len);
                let chunk = v[a..b].to_vec();
                let at = rng.below(len + 1);
                v.splice(at..at, chunk);
            }
            7 if !other.is_empty() => {
                let a = rng.below(len + 1);
                let b = rng.below(other.len() + 1);
                v.truncate(a);
                v.extend_from_slice(&other[b..]);
            }
            8 if len > 0 => v.truncate(rng.below(len)),
            _ => {
                let i = rng.below(len + 1);
                let n = format!("{}", rng.next() >> rng.below(64));
                v.splice(i..i, n.bytes());
            }
        }
    }
    v.truncate(64 << 10);
    v
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| (h ^ x as u64).wrapping_mul(0x100_0000_01b3))
}

/// A mutator that knows the format: a mutant, or `None` to fall back to bytes.
type Structured<'a> = &'a dyn Fn(&mut Rng, &[u8]) -> Option<Vec<u8>>;

/// Runs the corpus, then `n` mutations, through `check`; a panic saves the input.
fn fuzz(target: &str, seeds: Vec<Vec<u8>>, dict: &[&[u8]], n: usize, check: impl Fn(&[u8])) {
    fuzz_with(target, seeds, dict, n, None, check)
}

/// [`fuzz`] where two mutants in three come from `structured` (when it gives one).
fn fuzz_with(
    target: &str,
    seeds: Vec<Vec<u8>>,
    dict: &[&[u8]],
    n: usize,
    structured: Option<Structured<'_>>,
    check: impl Fn(&[u8]),
) {
    let seed = std::env::var("KILN_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x6b69_6c6e_u64);
    let mut rng = Rng(seed ^ fnv(target.as_bytes()) | 1);
    let mut corpus = load(target);
    corpus.extend(seeds);
    assert!(!corpus.is_empty(), "{target}: no seeds");
    let run = |input: &[u8]| {
        if catch_unwind(AssertUnwindSafe(|| check(input))).is_err() {
            let dir = corpus_dir(target);
            let _ = std::fs::create_dir_all(&dir);
            let p = dir.join(format!("crash-{:016x}", fnv(input)));
            let _ = std::fs::File::create(&p).and_then(|mut f| f.write_all(input));
            panic!("{target}: a panic on the input saved as {}", p.display());
        }
    };
    let start = Instant::now();
    for c in &corpus {
        run(c);
    }
    let base = corpus.len();
    for i in 0..n {
        let a = rng.below(corpus.len());
        let b = rng.below(corpus.len());
        let m = match structured {
            Some(f) if rng.below(3) < 2 => f(&mut rng, &corpus[a]),
            _ => None,
        };
        let m = m.unwrap_or_else(|| mutate(&mut rng, &corpus[a], &corpus[b], dict));
        run(&m);
        // Keep a few mutants as parents, so mutations stack up over a long run.
        if i % 64 == 0 {
            if corpus.len() < base + 256 {
                corpus.push(m);
            } else {
                let k = base + rng.below(256);
                corpus[k] = m;
            }
        }
    }
    eprintln!("fuzz {target}: {} inputs in {:.2?}", base + n, start.elapsed());
}

const NODE_SEEDS: [&str; 4] = [
    "[cluster]\nname = \"prod\"\nkubernetes_version = \"v1.34.2\"\ncontrol_plane_endpoint = \"[2001:db8::1]:6443\"\npod_subnet = \"10.244.0.0/16\"\nca_cert_hashes = [\"sha256:0123\"]\nbootstrap_token = \"abcdef.0123456789abcdef\"\ntoken_ttl = \"24h\"\nadmin_user = \"core\"\n",
    "[node]\nrole = \"join\"\nname = \"worker-1\"\nlabels = { \"node.kubernetes.io/pool\" = \"edge\" }\ntaints = [{ key = \"a\", value = \"b\", effect = \"NoSchedule\" }]\nnode_ip = \"10.0.0.12\"\nswap = \"limited\"\nkubelet = { maxPods = 50, x = [1, 2.5, true] }\nkubelet_extra_args = { v = \"2\" }\napi_server_bind_port = 6443\n",
    "[pki]\nca_cert = \"/etc/kiln/pki/ca.crt\"\nca_key = \"\"\"\n-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n\"\"\"\nsa_pub = '/etc/kiln/pki/sa.pub'\n",
    "# comment\n[node]\nrole = 'init'\ntaints = []\n[cluster]\ndns_domain = \"cluster.local\"\n",
];

const TOML_DICT: [&[u8]; 24] = [
    b"[node]\n",
    b"[cluster]\n",
    b"[pki]\n",
    b"[[node]]\n",
    b" = ",
    b"\"\"\"",
    b"'''",
    b"\\u0000",
    b"\\U0010ffff",
    b"{ a = 1 }",
    b"[1, [2]]",
    b"node_ip = \"10.0.0.5 --x\"\n",
    b"labels = { \"a/b\" = \"c,d\" }\n",
    b"1979-05-27T07:32:00Z",
    b"inf",
    b"nan",
    b"0x7fffffffffffffff",
    b"1e400",
    b"role = \"control-plane\"\n",
    b"a.b.c = 1\n",
    b"\xef\xbb\xbf",
    b"\r\n",
    b"#",
    b"taints = [{ key = \"k\", effect = \"NoExecute\" }]\n",
];

fn node_check(input: &[u8]) {
    if let Ok(c) = NodeConfig::parse(input) {
        // What parsed renders again, and the rendering parses.
        let text = c.to_toml();
        assert!(NodeConfig::parse_str(&text).is_ok(), "rendered node.toml does not parse:\n{text}");
    }
}

#[test]
fn fuzz_node_toml() {
    let seeds = NODE_SEEDS.iter().map(|s| s.as_bytes().to_vec()).collect();
    fuzz("node_toml", seeds, &TOML_DICT, cases(20_000), node_check);
}

/// Complete node descriptions that resolve (a worker, an init node with inline CA
/// material, a control-plane join): mutants of these get past parsing to every check
/// `resolve` makes, and to rendering.
const RESOLVING_SEEDS: [&str; 3] = [
    "[cluster]\ncontrol_plane_endpoint = \"10.0.0.1:6443\"\nbootstrap_token = \"abcdef.0123456789abcdef\"\nca_cert_hashes = [\"sha256:00ff\"]\n[node]\nrole = \"join\"\nnode_ip = \"10.0.0.12\"\nlabels = { pool = \"edge\" }\nkubelet = { maxPods = 50 }\nkubelet_extra_args = { v = \"2\" }\n",
    "[cluster]\nname = \"prod\"\nkubernetes_version = \"v1.34.2\"\ncontrol_plane_endpoint = \"api.prod.example.test:6443\"\nbootstrap_token = \"abcdef.0123456789abcdef\"\ntoken_ttl = \"24h\"\n[node]\nrole = \"init\"\nnode_ip = \"10.0.0.5\"\ntaints = []\nswap = \"limited\"\n[pki]\nca_cert = \"-----BEGIN CERTIFICATE-----\\nAA==\\n-----END CERTIFICATE-----\\n\"\nca_key = \"-----BEGIN PRIVATE KEY-----\\nAA==\\n-----END PRIVATE KEY-----\\n\"\nfront_proxy_ca_cert = \"-----BEGIN CERTIFICATE-----\"\nfront_proxy_ca_key = \"-----BEGIN PRIVATE KEY-----\"\netcd_ca_cert = \"-----BEGIN CERTIFICATE-----\"\netcd_ca_key = \"-----BEGIN PRIVATE KEY-----\"\nsa_key = \"-----BEGIN PRIVATE KEY-----\"\nsa_pub = \"-----BEGIN PUBLIC KEY-----\"\n",
    "[cluster]\ncontrol_plane_endpoint = \"[2001:db8::1]:6443\"\nbootstrap_token = \"abcdef.0123456789abcdef\"\nca_cert_hashes = [\"sha256:00ff\"]\n[node]\nrole = \"control-plane\"\nname = \"cp-2\"\nnode_ip = \"2001:db8::2\"\napi_server_bind_port = 6444\n[pki]\nca_cert = \"-----BEGIN CERTIFICATE-----\"\nca_key = \"-----BEGIN PRIVATE KEY-----\"\nfront_proxy_ca_cert = \"-----BEGIN CERTIFICATE-----\"\nfront_proxy_ca_key = \"-----BEGIN PRIVATE KEY-----\"\netcd_ca_cert = \"-----BEGIN CERTIFICATE-----\"\netcd_ca_key = \"-----BEGIN PRIVATE KEY-----\"\nsa_key = \"-----BEGIN PRIVATE KEY-----\"\nsa_pub = \"-----BEGIN PUBLIC KEY-----\"\n",
];

/// Field values for the structured mutator, `(table, key, TOML value)`: valid ones and
/// ones each check of `resolve` refuses.
const FIELD_VALUES: &[(&str, &str, &str)] = &[
    ("cluster", "control_plane_endpoint", "\"10.0.0.1:6443\""),
    ("cluster", "control_plane_endpoint", "\"lb.example.test:443\""),
    ("cluster", "control_plane_endpoint", "\"10.0.0.1\""),
    ("cluster", "control_plane_endpoint", "\"10.0.0.1:0\""),
    ("cluster", "control_plane_endpoint", "\"2001:db8::1:6443\""),
    ("cluster", "control_plane_endpoint", "\"a b:1\""),
    ("cluster", "kubernetes_version", "\"v1.34.0\""),
    ("cluster", "kubernetes_version", "\"v1.36.0\""),
    ("cluster", "kubernetes_version", "\"v1.31.1\""),
    ("cluster", "kubernetes_version", "\"1.34.2\""),
    ("cluster", "bootstrap_token", "\"abcdef.0123456789abcdef\""),
    ("cluster", "bootstrap_token", "\"ABCDEF.0123456789abcdef\""),
    ("cluster", "token_ttl", "\"1h30m\""),
    ("cluster", "token_ttl", "\"-1h\""),
    ("cluster", "token_ttl", "\"1d\""),
    ("cluster", "ca_cert_hashes", "[]"),
    ("cluster", "pod_subnet", "\"10.0.0.0/8\""),
    ("cluster", "cni_manifest", "\"/etc/kiln/cni.yaml\""),
    ("node", "role", "\"init\""),
    ("node", "role", "\"join\""),
    ("node", "role", "\"control-plane\""),
    ("node", "node_ip", "\"10.0.0.7\""),
    ("node", "node_ip", "\"fd00::7\""),
    ("node", "name", "\"Worker_1\""),
    ("node", "name", "\"a..b\""),
    ("node", "name", "\"-\""),
    ("node", "labels", "{ \"node-role.kubernetes.io/control-plane\" = \"\" }"),
    ("node", "labels", "{ \"node.kubernetes.io/pool\" = \"a\" }"),
    ("node", "labels", "{ \"example.com/x\" = \"y\" }"),
    ("node", "taints", "[{ key = \"k\", effect = \"NoExecute\" }]"),
    ("node", "taints", "[{ key = \"k\", value = \"v\", effect = \"PreferNoSchedule\" }]"),
    ("node", "kubelet_extra_args", "{ v = \"4\" }"),
    ("node", "kubelet_extra_args", "{ \"a b\" = \"c\" }"),
    ("node", "kubelet_extra_args", "{ v = \"2 --x\" }"),
    ("node", "kubelet_extra_args", "{ Node-Ip = \"1\" }"),
    ("node", "kubelet", "{ maxPods = 110, serializeImagePulls = false }"),
    ("node", "kubelet", "{ evictionHard = { \"memory.available\" = \"100Mi\" } }"),
    ("node", "kubelet", "{ syncFrequency = \"1m\" }"),
    ("node", "swap", "\"off\""),
    ("node", "api_server_bind_port", "443"),
    ("node", "unsafe_skip_ca_verification", "true"),
    ("pki", "ca_key", "\"/etc/kiln/pki/ca.key\""),
    ("pki", "ca_key", "\"/../../outside.key\""),
    ("pki", "sa_pub", "\"/etc/kiln/pki/sa.pub\""),
];

/// Replaces, adds or removes one to three fields of a node.toml that parses as TOML
/// (values from [`FIELD_VALUES`]); `None` when `input` is not TOML.
fn field_mutate(rng: &mut Rng, input: &[u8]) -> Option<Vec<u8>> {
    let mut doc: toml::Table = toml::from_str(std::str::from_utf8(input).ok()?).ok()?;
    for _ in 0..1 + rng.below(3) {
        let (table, key, value) = FIELD_VALUES[rng.below(FIELD_VALUES.len())];
        let t = doc.entry(table).or_insert_with(|| toml::Value::Table(toml::Table::new())).as_table_mut()?;
        if rng.below(8) == 0 {
            t.remove(key);
        } else {
            let v: toml::Table = toml::from_str(&format!("v = {value}")).ok()?;
            t.insert(key.to_string(), v.get("v")?.clone());
        }
    }
    toml::to_string(&doc).ok().map(String::into_bytes)
}

/// How far fuzzed node descriptions got, and where `resolve` refused the others.
#[derive(Default)]
struct Stages {
    inputs: usize,
    parsed: usize,
    resolved: usize,
    rendered: usize,
    refused: std::collections::BTreeMap<String, usize>,
}

/// A node.toml through everything `plan` does with it: parse, resolve on a scratch
/// root (no network: the node IP comes from the input or the command line, never a
/// route or DNS), render the kubeadm documents and the kubelet patch.
fn resolve_check(root: &Path, input: &[u8], stages: &std::cell::RefCell<Stages>) {
    use kiln_firstboot::{kubeadm, machine::Machine, options::Options, plan, resolve};
    stages.borrow_mut().inputs += 1;
    let Ok(c) = NodeConfig::parse(input) else { return };
    stages.borrow_mut().parsed += 1;
    std::fs::write(root.join("etc/kiln/node.toml"), input).unwrap();
    let has_ip = c.node.as_ref().is_some_and(|n| n.node_ip.is_some());
    let m = Machine {
        root: root.to_path_buf(),
        cmdline: if has_ip { String::new() } else { "kiln.node-ip=10.0.0.9".into() },
        hostname: "fuzz-node".into(),
        machine_id: "0123456789abcdef0123456789abcdef".into(),
        seed: root.join("no-seed"),
        warnings: Vec::new(),
        check_ports: false,
    };
    match resolve::resolve(&m, &Options::default()) {
        Err(errs) => {
            assert!(!errs.is_empty() && errs.iter().all(|e| !e.is_empty()));
            let first = errs[0].split(':').next().unwrap_or("").chars().take(60).collect::<String>();
            *stages.borrow_mut().refused.entry(first).or_default() += 1;
        }
        Ok(r) => {
            stages.borrow_mut().resolved += 1;
            for doc in kubeadm::render(&r.kubeadm).split("\n---\n") {
                let v: serde_json::Value = serde_json::from_str(doc).expect("a rendered document is JSON");
                assert!(v["kind"].is_string(), "{v}");
            }
            assert!(kubeadm::kubelet_patch(&r.kubeadm).is_object());
            assert!(plan::plan(&m, &r).contains(&r.kubeadm.node_name));
            stages.borrow_mut().rendered += 1;
        }
    }
}

/// The node.toml fuzzer past parsing (issue 24): complete descriptions mutated field
/// by field (and byte by byte) reach `resolve`'s checks and rendering; the counts of
/// inputs that got past each stage are printed, and every stage is reached.
#[test]
fn fuzz_node_toml_through_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("etc/kiln/pki")).unwrap();
    std::fs::write(root.join("etc/kiln/image.toml"), "schema = 1\nprofile = \"t\"\nfamily = \"flatcar\"\narch = \"amd64\"\nkubernetes_version = \"v1.34.2\"\nkubeadm_version = \"v1.34.2\"\nkubelet_version = \"v1.34.2\"\nbin_dir = \"/opt/bin\"\ncni_bin_dir = \"/opt/cni/bin\"\nflex_volume_dir = \"/opt/libexec/kubernetes/kubelet-plugins/volume/exec/\"\nruntime = \"containerd\"\nruntime_socket = \"unix:///run/containerd/containerd.sock\"\ncgroup_driver = \"systemd\"\n").unwrap();
    std::fs::write(root.join("etc/kiln/pki/ca.key"), "-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n")
        .unwrap();
    std::fs::write(root.join("etc/kiln/pki/sa.pub"), "-----BEGIN PUBLIC KEY-----\nAA==\n-----END PUBLIC KEY-----\n")
        .unwrap();
    let stages = std::cell::RefCell::new(Stages::default());
    let seeds = RESOLVING_SEEDS.iter().map(|s| s.as_bytes().to_vec()).collect();
    let structured = |rng: &mut Rng, input: &[u8]| field_mutate(rng, input);
    fuzz_with("node_resolve", seeds, &TOML_DICT, cases(5_000), Some(&structured), |input| {
        resolve_check(root, input, &stages)
    });
    let s = stages.into_inner();
    let mut refused: Vec<(usize, String)> = s.refused.into_iter().map(|(k, n)| (n, k)).collect();
    refused.sort_by(|a, b| b.cmp(a));
    let top: Vec<String> = refused.iter().take(8).map(|(n, k)| format!("{n} {k}")).collect();
    eprintln!(
        "fuzz node_resolve: {} inputs, {} parsed, {} resolved, {} rendered; refused first at: {}",
        s.inputs,
        s.parsed,
        s.resolved,
        s.rendered,
        top.join("; ")
    );
    assert!(s.parsed * 10 > s.inputs * 3, "too few mutants parse ({} of {})", s.parsed, s.inputs);
    assert!(s.resolved * 10 > s.inputs, "too few mutants resolve ({} of {})", s.resolved, s.inputs);
    assert!(refused.len() >= 5, "resolve refused mutants at only {} checks", refused.len());
    assert_eq!(s.resolved, s.rendered);
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

#[test]
fn fuzz_gzip_user_data() {
    let mut seeds: Vec<Vec<u8>> = NODE_SEEDS.iter().map(|s| gzip(s.as_bytes())).collect();
    let mut two = gzip(NODE_SEEDS[0].as_bytes());
    two.extend(gzip(NODE_SEEDS[1].as_bytes()));
    seeds.push(two);
    seeds.push(gzip(&vec![b'#'; 100_000]));
    let dict: [&[u8]; 6] = [
        b"\x1f\x8b\x08\x00",
        b"\x1f\x8b",
        b"\x00\x00\x00\x00",
        b"\xff\xff\xff\xff",
        b"\x03\x00",
        b"\x1f\x8b\x08\x08name\x00",
    ];
    fuzz("gzip", seeds, &dict, cases(20_000), |input| {
        // Mutated compressed bytes, and (sometimes) a mutated text compressed again.
        node_check(input);
        // A mutant that lost its gzip magic is mutated text: compress it, in two members.
        if !kiln_firstboot::contract::node::is_gzip(input) {
            let (a, b) = input.split_at(input.len() / 2);
            let mut two = gzip(a);
            two.extend(gzip(b));
            node_check(&two);
        }
    });
}

#[test]
fn fuzz_kernel_cmdline() {
    let seeds = [
        "BOOT_IMAGE=/vmlinuz root=UUID=1 ro quiet kiln.role=init kiln.node-name=cp-1 kiln.node-ip=10.0.0.5",
        "console=ttyS0 \"kiln.node-name=a b\" kiln.platform=aws ignition.platform.id=qemu",
        "kiln.node-name=\"a b\" kiln.role=join kiln.role=init dyndbg=\"file x +p\" = ==",
        "  \t\n",
    ];
    let dict: [&[u8]; 10] =
        [b"kiln.role=", b"kiln.node-ip=", b"kiln.node-name=", b"kiln.platform=", b"\"", b"=", b" ", b"\t", b"..", b"/"];
    let root = Path::new("/nonexistent-kiln-fuzz-root");
    fuzz("cmdline", seeds.iter().map(|s| s.as_bytes().to_vec()).collect(), &dict, cases(10_000), |input| {
        let s = String::from_utf8_lossy(input);
        let args = cmdline_args(&s);
        // Without quotes, words are exactly the whitespace-separated words.
        if !s.contains('"') {
            assert_eq!(args.len(), s.split_whitespace().count(), "{s:?}");
        }
        for (k, v) in &args {
            assert!(!k.chars().any(char::is_whitespace) || s.contains('"'), "{k:?}");
            if let Some(v) = v {
                let _ = kiln_firstboot::validate::endpoint::node_ip(v);
                let _ = kiln_firstboot::validate::names::node_name(v);
                if let Ok(p) = contained(root, v) {
                    assert!(p.starts_with(root), "{v:?} -> {}", p.display());
                }
            }
        }
    });
}

#[test]
fn fuzz_http_response() {
    let seeds: [&[u8]; 7] = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nMetadata-Flavor: Google\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n3\r\nabc\r\n0\r\nTrailer: x\r\n\r\n",
        b"HTTP/1.0 404 Not Found\r\nConnection: close\r\n\r\nnot found",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 3, 3\r\n\r\nerr",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\nffffffffffffffff\r\n",
    ];
    let dict: [&[u8]; 14] = [
        b"\r\n",
        b"Content-Length: ",
        b"Transfer-Encoding: chunked\r\n",
        b"18446744073709551616",
        b"ffffffffffffffff",
        b"0\r\n\r\n",
        b"HTTP/1.1 ",
        b": ",
        b";",
        b"\r\n\r\n",
        b"\t",
        b"Content-Length: 1\r\nContent-Length: 2\r\n",
        b"\x00",
        b"7fffffff\r\n",
    ];
    fuzz("http", seeds.iter().map(|s| s.to_vec()).collect(), &dict, cases(20_000), |input| {
        for max in [16, 4096] {
            match parse_response(&mut &input[..], max) {
                Ok(r) => {
                    assert!(r.body.len() <= max, "a body of {} bytes over the {max} cap", r.body.len());
                    assert!((100..600).contains(&r.status));
                    assert!(r.headers.iter().all(|(_, v)| !v.chars().any(|c| c.is_control() && c != '\t')));
                }
                Err(e) => assert!(!e.message.is_empty()),
            }
        }
    });
}
