//! Cloud metadata services on 127.0.0.1, each written from its provider's documentation (not
//! from clb's client), recording every request:
//!
//! - **AWS EC2 IMDS** ("Use the Instance Metadata Service to access instance metadata",
//!   docs.aws.amazon.com/AWSEC2/latest/UserGuide/configuring-instance-metadata-service.html):
//!   `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds` (1–21600, else 400;
//!   a request with `X-Forwarded-For` is refused) returns a token; GETs send it as
//!   `X-aws-ec2-metadata-token` (a wrong one: 401). With IMDSv2 required, a GET without a
//!   token is 401; IMDSv1 answers plain GETs. `/latest/user-data` is 404 when unset;
//!   `/latest/meta-data/public-keys/` lists `0=name`, the key at `0/openssh-key`.
//! - **GCP** ("About VM metadata", cloud.google.com/compute/docs/metadata/querying-metadata):
//!   every request needs `Metadata-Flavor: Google` (else 403) and must not carry
//!   `X-Forwarded-For`; every answer carries `Metadata-Flavor: Google`. Attributes
//!   (`user-data`, `ssh-keys` as `user:key` lines) are 404 when unset.
//! - **Azure IMDS** (learn.microsoft.com/azure/virtual-machines/instance-metadata-service):
//!   `Metadata: true` and an `api-version` query parameter are required (else 400);
//!   `/metadata/instance` is the JSON instance document (`compute.name`,
//!   `compute.osProfile.computerName`, `compute.publicKeys[].keyData`);
//!   `/metadata/instance/compute/userData?format=text` is the base64 user data (empty when
//!   unset).
//! - **OpenStack** (docs.openstack.org/nova/latest/user/metadata.html):
//!   `/openstack/latest/meta_data.json` (`uuid`, `name`, `hostname`, `public_keys` as a
//!   name → key object), `/openstack/latest/user_data` (404 when unset) and
//!   `/openstack/latest/network_data.json`.
//! - **Hetzner Cloud** (docs.hetzner.cloud, "Server Metadata"): `/hetzner/v1/metadata/...`
//!   (`instance-id`, `hostname`, `public-keys` as a JSON list, `network-config` in
//!   cloud-init's format) and `/hetzner/v1/userdata`.
//! - **DigitalOcean** (docs.digitalocean.com/reference/api/metadata-api): `/metadata/v1/id`,
//!   `hostname`, `public-keys` (one per line), `user-data` (404 when unset).
//!
//! Besides the clouds, a server can hang (accept and never answer) or answer garbage that is
//! not HTTP, and a cloud can be told to send a malformed key list.

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::serve::{Request, read_request, respond};

/// Which service the server plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    /// IMDS with tokens; `required`: plain GETs are refused (HttpTokens=required).
    Aws {
        required: bool,
    },
    /// An EC2-compatible service without the token API: the PUT is 404, GETs are plain.
    AwsV1,
    Gcp,
    Azure,
    OpenStack,
    Hetzner,
    DigitalOcean,
    /// Accepts connections and never answers.
    Hang,
    /// Answers every request with bytes that are not HTTP.
    Garbage,
}

/// What the instance has.
#[derive(Debug, Clone, Default)]
pub struct Instance {
    pub user_data: Option<Vec<u8>>,
    pub hostname: String,
    pub ssh_keys: Vec<String>,
    /// The key list is malformed in the cloud's own way (not JSON, not a list).
    pub broken_keys: bool,
    /// Network configuration, served where the cloud serves it (OpenStack's
    /// `network_data.json`, Hetzner's `network-config`); 404 when None.
    pub network: Option<Vec<u8>>,
}

/// One request as the server saw it: method, path with query, headers.
#[derive(Debug, Clone)]
pub struct MetadataRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl MetadataRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

const AWS_TOKEN: &str = "AQAEAFakeTokenForTests==";

pub struct MetadataServer {
    addr: String,
    log: Arc<Mutex<Vec<MetadataRequest>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl MetadataServer {
    pub fn start(cloud: Cloud, instance: Instance) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the metadata server");
        let addr = listener.local_addr().expect("local address").to_string();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let instance = Arc::new(instance);
        let accept = {
            let (log, stop) = (log.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (log, instance, stop) = (log.clone(), instance.clone(), stop.clone());
                    std::thread::spawn(move || serve(conn, cloud, &instance, &log, &stop));
                }
            })
        };
        MetadataServer {
            addr,
            log,
            stop,
            accept: Some(accept),
        }
    }

    /// `127.0.0.1:PORT`, what clb is given as the metadata endpoint.
    pub fn endpoint(&self) -> &str {
        &self.addr
    }

    pub fn requests(&self) -> Vec<MetadataRequest> {
        self.log.lock().expect("metadata log lock").clone()
    }
}

impl Drop for MetadataServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn serve(
    conn: TcpStream,
    cloud: Cloud,
    instance: &Instance,
    log: &Mutex<Vec<MetadataRequest>>,
    stop: &AtomicBool,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let Some(req) = read_request(&conn) else {
        return;
    };
    log.lock()
        .expect("metadata log lock")
        .push(MetadataRequest {
            method: req.method.clone(),
            path: req.path.clone(),
            headers: req.headers.clone(),
        });
    match cloud {
        Cloud::Hang => {
            // Holds the connection open until the server stops (or 60 s).
            for _ in 0..600 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Cloud::Garbage => {
            let mut conn = conn;
            let _ = std::io::Write::write_all(&mut conn, b"\x00\x01garbage, not HTTP\r\n\r\n");
        }
        _ => {
            let (status, headers, body) = answer(cloud, instance, &req);
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            respond(conn, status, &headers, &body);
        }
    }
}

type Answer = (u16, Vec<(&'static str, String)>, Vec<u8>);

fn ok(body: impl Into<Vec<u8>>) -> Answer {
    (200, Vec::new(), body.into())
}

fn status(code: u16) -> Answer {
    (code, Vec::new(), Vec::new())
}

fn optional(data: &Option<Vec<u8>>) -> Answer {
    data.clone().map(ok).unwrap_or_else(|| status(404))
}

fn answer(cloud: Cloud, i: &Instance, req: &Request) -> Answer {
    match cloud {
        Cloud::Aws { required } => aws(i, req, true, required),
        Cloud::AwsV1 => aws(i, req, false, false),
        Cloud::Gcp => {
            let mut a = gcp(i, req);
            a.1.push(("Metadata-Flavor", "Google".to_string()));
            a
        }
        Cloud::Azure => azure(i, req),
        Cloud::OpenStack => openstack(i, req),
        Cloud::Hetzner => hetzner(i, req),
        Cloud::DigitalOcean => digitalocean(i, req),
        Cloud::Hang | Cloud::Garbage => status(500),
    }
}

fn aws(i: &Instance, req: &Request, tokens: bool, required: bool) -> Answer {
    if req.path == "/latest/api/token" {
        if !tokens {
            return status(404);
        }
        if req.method != "PUT" {
            return status(405);
        }
        if req.header("X-Forwarded-For").is_some() {
            return status(403);
        }
        let ttl = req
            .header("X-aws-ec2-metadata-token-ttl-seconds")
            .and_then(|t| t.parse::<u32>().ok());
        return match ttl {
            Some(1..=21600) => ok(AWS_TOKEN),
            _ => status(400),
        };
    }
    if req.method != "GET" {
        return status(405);
    }
    match req.header("X-aws-ec2-metadata-token") {
        Some(t) if t != AWS_TOKEN => return status(401),
        None if required => return status(401),
        _ => {}
    }
    match req.path.as_str() {
        "/latest/meta-data/instance-id" => ok("i-0123456789abcdef0"),
        "/latest/meta-data/local-hostname" => ok(i.hostname.clone()),
        "/latest/user-data" => optional(&i.user_data),
        "/latest/meta-data/public-keys/" | "/latest/meta-data/public-keys" => {
            if i.broken_keys {
                return ok("not-a-key-index\n");
            }
            if i.ssh_keys.is_empty() {
                return status(404);
            }
            let list: Vec<String> = (0..i.ssh_keys.len())
                .map(|n| format!("{n}=key{n}"))
                .collect();
            ok(list.join("\n"))
        }
        path => path
            .strip_prefix("/latest/meta-data/public-keys/")
            .and_then(|rest| rest.strip_suffix("/openssh-key"))
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| i.ssh_keys.get(n))
            .map(|k| ok(format!("{k}\n")))
            .unwrap_or_else(|| status(404)),
    }
}

fn gcp(i: &Instance, req: &Request) -> Answer {
    if req.header("Metadata-Flavor").as_deref() != Some("Google")
        || req.header("X-Forwarded-For").is_some()
    {
        return status(403);
    }
    let path = req.path.split('?').next().unwrap_or("");
    match path {
        "/computeMetadata/v1/instance/id" => ok("4567890123456789012"),
        "/computeMetadata/v1/instance/hostname" => ok(i.hostname.clone()),
        "/computeMetadata/v1/instance/attributes/user-data" => optional(&i.user_data),
        "/computeMetadata/v1/instance/attributes/ssh-keys" if !i.ssh_keys.is_empty() => {
            let lines: Vec<String> = i.ssh_keys.iter().map(|k| format!("alice:{k}")).collect();
            ok(lines.join("\n"))
        }
        _ => status(404),
    }
}

fn azure(i: &Instance, req: &Request) -> Answer {
    let (path, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
    let json = |v: serde_json::Value| {
        (
            200,
            vec![(
                "Content-Type",
                "application/json; charset=utf-8".to_string(),
            )],
            v.to_string().into_bytes(),
        )
    };
    if req.header("Metadata").as_deref() != Some("true") || req.header("X-Forwarded-For").is_some()
    {
        return (
            400,
            Vec::new(),
            br#"{"error": "Bad request. Required metadata header not specified"}"#.to_vec(),
        );
    }
    if !query.split('&').any(|p| p.starts_with("api-version=")) {
        return (
            400,
            Vec::new(),
            br#"{"error": "Bad request. api-version was not specified in the request"}"#.to_vec(),
        );
    }
    match path {
        "/metadata/instance" => {
            let keys: Vec<serde_json::Value> = i
                .ssh_keys
                .iter()
                .map(|k| serde_json::json!({"keyData": k, "path": "/home/azureuser/.ssh/authorized_keys"}))
                .collect();
            let keys = if i.broken_keys {
                serde_json::json!("not a list")
            } else {
                serde_json::Value::Array(keys)
            };
            json(serde_json::json!({
                "compute": {
                    "azEnvironment": "AzurePublicCloud",
                    "location": "westeurope",
                    "name": i.hostname,
                    "osProfile": {"adminUsername": "azureuser", "computerName": i.hostname},
                    "publicKeys": keys,
                    "vmId": "02aab8a4-74ef-476e-8182-f6d2ba4166a6"
                },
                "network": {"interface": []}
            }))
        }
        "/metadata/instance/compute/userData" => {
            use base64::Engine;
            let encode = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
            ok(i.user_data.as_deref().map(encode).unwrap_or_default())
        }
        _ => status(404),
    }
}

fn openstack(i: &Instance, req: &Request) -> Answer {
    match req.path.as_str() {
        "/openstack/latest/meta_data.json" => {
            let keys: serde_json::Map<String, serde_json::Value> = i
                .ssh_keys
                .iter()
                .enumerate()
                .map(|(n, k)| (format!("key{n}"), serde_json::Value::String(k.clone())))
                .collect();
            let keys = if i.broken_keys {
                serde_json::json!(["not", "an", "object"])
            } else {
                serde_json::Value::Object(keys)
            };
            ok(serde_json::json!({
                "uuid": "d8e02d56-2648-49a3-bf97-6be8f1204f38",
                "name": i.hostname,
                "hostname": format!("{}.novalocal", i.hostname),
                "availability_zone": "nova",
                "public_keys": keys,
                "launch_index": 0
            })
            .to_string())
        }
        "/openstack/latest/user_data" => optional(&i.user_data),
        "/openstack/latest/network_data.json" => optional(&i.network),
        _ => status(404),
    }
}

fn hetzner(i: &Instance, req: &Request) -> Answer {
    match req.path.as_str() {
        "/hetzner/v1/metadata/instance-id" => ok("42"),
        "/hetzner/v1/metadata/hostname" => ok(i.hostname.clone()),
        "/hetzner/v1/metadata/public-keys" if i.broken_keys => ok("{garbage"),
        "/hetzner/v1/metadata/public-keys" => ok(serde_json::json!(i.ssh_keys).to_string()),
        "/hetzner/v1/userdata" => ok(i.user_data.clone().unwrap_or_default()),
        "/hetzner/v1/metadata/network-config" => optional(&i.network),
        _ => status(404),
    }
}

fn digitalocean(i: &Instance, req: &Request) -> Answer {
    match req.path.as_str() {
        "/metadata/v1/id" => ok("2756294"),
        "/metadata/v1/hostname" => ok(i.hostname.clone()),
        "/metadata/v1/public-keys" => ok(i.ssh_keys.join("\n")),
        "/metadata/v1/user-data" => optional(&i.user_data),
        _ => status(404),
    }
}
