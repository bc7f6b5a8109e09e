//! The clouds' metadata services at the link-local address 169.254.169.254, each read
//! through its documented API (the paths, headers and shapes are listed in
//! `docs/cloud-config.md` with the documents they come from).

use base64::Engine;

use super::{CONNECT_TIMEOUT, DatasourceError, Found, MAX_USER_DATA, Probe, READ_TIMEOUT};
use crate::fetch::{Head, LimitedVec, Request, exchange};

/// The address every supported cloud serves its metadata on. GCP's documented name
/// `metadata.google.internal` resolves to it too; the address is used so that nothing is
/// sent to a DNS server off GCP.
const LINK_LOCAL: &str = "169.254.169.254";
/// The IMDSv2 token lifetime asked for: short, it serves one run (AWS allows 1–21600 s).
const AWS_TOKEN_TTL: &str = "300";
/// Azure's IMDS API versions: the instance document, and the one that added `userData`.
const AZURE_INSTANCE: &str = "/metadata/instance?api-version=2021-02-01";
const AZURE_USER_DATA: &str =
    "/metadata/instance/compute/userData?api-version=2021-01-01&format=text";

/// The metadata service of this run: where it is, and whether it accepts connections (found
/// out once, so that five absent clouds cost one connect timeout, not five).
pub(crate) struct Endpoint {
    authority: String,
    reachable: Option<Result<(), String>>,
}

impl Endpoint {
    /// `authority` (`host[:port]`), or the link-local address.
    pub fn new(authority: Option<&str>) -> Self {
        Endpoint {
            authority: authority.unwrap_or(LINK_LOCAL).to_string(),
            reachable: None,
        }
    }

    /// Ok when a TCP connection to the service succeeds (asked once per run).
    fn reachable(&mut self) -> Result<(), String> {
        let authority = self.authority.clone();
        self.reachable
            .get_or_insert_with(|| {
                let with_port = if authority.contains(':') {
                    authority.clone()
                } else {
                    format!("{authority}:80")
                };
                let addr: std::net::SocketAddr = with_port.parse().map_err(|_| {
                    format!("the metadata endpoint {authority:?} is not address:port")
                })?;
                std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
                    .map(drop)
                    .map_err(|e| format!("connect to {addr}: {e}"))
            })
            .clone()
    }
}

/// One request's result: the status and the body of a 200.
struct Answer {
    head: Head,
    body: Vec<u8>,
}

impl Answer {
    fn ok(&self) -> bool {
        self.head.status == 200
    }
}

/// Makes one request to the metadata service.
fn call(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Answer, crate::FetchError> {
    let url = format!("http://{}{path}", endpoint.authority);
    let mut body = LimitedVec {
        data: Vec::new(),
        limit: MAX_USER_DATA,
    };
    let request = Request {
        method,
        headers,
        connect_timeout: CONNECT_TIMEOUT,
        read_timeout: READ_TIMEOUT,
    };
    let head = exchange(&url, &url, &request, &mut body)?;
    Ok(Answer {
        head,
        body: body.data,
    })
}

/// A cloud's conversation: the first request decides whether the cloud is there; once it is,
/// a failed request is an error of that provider.
struct Session<'a> {
    provider: &'static str,
    endpoint: &'a Endpoint,
    headers: Vec<(&'static str, String)>,
}

impl Session<'_> {
    fn request(&self, method: &str, path: &str) -> Result<Answer, crate::FetchError> {
        let headers: Vec<(&str, &str)> =
            self.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        call(self.endpoint, method, path, &headers)
    }

    /// The first request: Err(reason) means the cloud is not there.
    fn probe(&self, method: &str, path: &str) -> Result<Answer, String> {
        match self.request(method, path) {
            Ok(a) if a.ok() => Ok(a),
            Ok(a) => Err(format!("HTTP {} for {path}", a.head.status)),
            Err(e) => Err(clb_command::one_line(&e)),
        }
    }

    /// A GET once the cloud answered: the body, None on 404 (a documented "not set").
    fn get(&self, path: &str) -> Result<Option<Vec<u8>>, DatasourceError> {
        let answer = self
            .request("GET", path)
            .map_err(|source| DatasourceError::Fetch {
                provider: self.provider,
                source: Box::new(source),
            })?;
        match answer.head.status {
            200 => Ok(Some(answer.body)),
            404 => Ok(None),
            status => Err(self.garbage(format!("HTTP {status} for {path}"))),
        }
    }

    /// A GET of text: trimmed, None when missing or empty.
    fn get_text(&self, path: &str) -> Result<Option<String>, DatasourceError> {
        Ok(self
            .get(path)?
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .filter(|s| !s.is_empty()))
    }

    fn get_json(&self, path: &str) -> Result<Option<serde_json::Value>, DatasourceError> {
        self.get(path)?
            .map(|b| {
                serde_json::from_slice(&b)
                    .map_err(|e| self.garbage(format!("{path} is not JSON: {e}")))
            })
            .transpose()
    }

    fn garbage(&self, problem: String) -> DatasourceError {
        DatasourceError::Garbage {
            provider: self.provider,
            problem,
        }
    }
}

/// User data: None when the service has none (404 or empty).
fn non_empty(data: Option<Vec<u8>>) -> Option<Vec<u8>> {
    data.filter(|d| !d.is_empty())
}

/// Asks cloud `name` (one of the metadata providers of [`super::PROVIDERS`]).
pub(crate) fn query(endpoint: &mut Endpoint, name: &str) -> Result<Probe, DatasourceError> {
    if let Err(why) = endpoint.reachable() {
        return Ok(Probe::Absent(why));
    }
    let session = |provider, headers| Session {
        provider,
        endpoint,
        headers,
    };
    match name {
        "aws" => aws(session("aws", Vec::new())),
        "gcp" => gcp(&session("gcp", vec![("Metadata-Flavor", "Google".into())])),
        "azure" => azure(&session("azure", vec![("Metadata", "true".into())])),
        "openstack" => openstack(&session("openstack", Vec::new())),
        "hetzner" => hetzner(&session("hetzner", Vec::new())),
        "digitalocean" => digitalocean(&session("digitalocean", Vec::new())),
        other => Ok(Probe::Absent(format!("{other} has no metadata service"))),
    }
}

/// AWS EC2 IMDS: IMDSv2 (a session token from `PUT /latest/api/token`, sent with every GET),
/// or IMDSv1 (plain GETs) when the token request is refused.
fn aws(mut s: Session) -> Result<Probe, DatasourceError> {
    let token = {
        let with_ttl = Session {
            provider: s.provider,
            endpoint: s.endpoint,
            headers: vec![("X-aws-ec2-metadata-token-ttl-seconds", AWS_TOKEN_TTL.into())],
        };
        with_ttl
            .probe("PUT", "/latest/api/token")
            .ok()
            .map(|a| String::from_utf8_lossy(&a.body).trim().to_string())
            .filter(|t| !t.is_empty())
    };
    if let Some(token) = token {
        s.headers.push(("X-aws-ec2-metadata-token", token));
    }
    if let Err(why) = s.probe("GET", "/latest/meta-data/instance-id") {
        return Ok(Probe::Absent(why));
    }
    let mut ssh_keys = Vec::new();
    // `public-keys/` lists `<index>=<name>` lines; each key is at `<index>/openssh-key`.
    for line in s
        .get_text("/latest/meta-data/public-keys/")?
        .unwrap_or_default()
        .lines()
    {
        let index = line.split('=').next().unwrap_or("").trim();
        if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
            return Err(s.garbage(format!("public-keys lists {line:?}")));
        }
        let path = format!("/latest/meta-data/public-keys/{index}/openssh-key");
        ssh_keys.extend(s.get_text(&path)?);
    }
    Ok(Probe::Found(Found {
        user_data: non_empty(s.get("/latest/user-data")?),
        hostname: s.get_text("/latest/meta-data/local-hostname")?,
        ssh_keys,
        network: None,
    }))
}

/// GCP: `/computeMetadata/v1/` with `Metadata-Flavor: Google`, which the server echoes (an
/// answer without it is not GCP's). User data is the `user-data` instance attribute; keys
/// are the `ssh-keys` attribute's `user:key` lines.
fn gcp(s: &Session) -> Result<Probe, DatasourceError> {
    let answer = match s.probe("GET", "/computeMetadata/v1/instance/id") {
        Ok(a) => a,
        Err(why) => return Ok(Probe::Absent(why)),
    };
    if answer.head.header("metadata-flavor") != Some("Google") {
        return Ok(Probe::Absent(
            "the answer has no Metadata-Flavor: Google header".to_string(),
        ));
    }
    let attributes = "/computeMetadata/v1/instance/attributes";
    let keys = s
        .get_text(&format!("{attributes}/ssh-keys"))?
        .unwrap_or_default();
    let ssh_keys = keys
        .lines()
        .filter_map(|l| l.split_once(':').map(|(_, key)| key.trim().to_string()))
        .filter(|k| !k.is_empty())
        .collect();
    Ok(Probe::Found(Found {
        user_data: non_empty(s.get(&format!("{attributes}/user-data"))?),
        hostname: s.get_text("/computeMetadata/v1/instance/hostname")?,
        ssh_keys,
        network: None,
    }))
}

/// Azure IMDS with `Metadata: true`: the instance document (name, public keys), and
/// `userData`, base64 encoded. Without `userData`, the `customData` of the provisioning CD.
fn azure(s: &Session) -> Result<Probe, DatasourceError> {
    let answer = match s.probe("GET", AZURE_INSTANCE) {
        Ok(a) => a,
        Err(why) => return Ok(Probe::Absent(why)),
    };
    let doc: serde_json::Value = serde_json::from_slice(&answer.body)
        .map_err(|e| s.garbage(format!("the instance document is not JSON: {e}")))?;
    let compute = doc
        .get("compute")
        .ok_or_else(|| s.garbage("the instance document has no \"compute\"".to_string()))?;
    let name = compute
        .pointer("/osProfile/computerName")
        .or_else(|| compute.get("name"))
        .and_then(|v| v.as_str())
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    let ssh_keys = match compute.get("publicKeys") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::Array(keys)) => keys
            .iter()
            .filter_map(|k| k.get("keyData")?.as_str())
            .map(|k| k.trim().to_string())
            .collect(),
        Some(other) => return Err(s.garbage(format!("publicKeys is {other}, not a list"))),
    };
    let encoded = s.get_text(AZURE_USER_DATA)?;
    let user_data = match encoded {
        Some(text) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(text.as_bytes())
                .map_err(|e| s.garbage(format!("userData is not base64: {e}")))?,
        ),
        None => super::volume::azure_custom_data()?,
    };
    Ok(Probe::Found(Found {
        user_data: non_empty(user_data),
        hostname: name,
        ssh_keys,
        network: None,
    }))
}

/// OpenStack's metadata service: `meta_data.json` (hostname, `public_keys`) and `user_data`.
fn openstack(s: &Session) -> Result<Probe, DatasourceError> {
    let answer = match s.probe("GET", "/openstack/latest/meta_data.json") {
        Ok(a) => a,
        Err(why) => return Ok(Probe::Absent(why)),
    };
    let meta: serde_json::Value = serde_json::from_slice(&answer.body)
        .map_err(|e| s.garbage(format!("meta_data.json is not JSON: {e}")))?;
    let mut found = super::openstack::meta(&meta).map_err(|problem| s.garbage(problem))?;
    found.user_data = non_empty(s.get("/openstack/latest/user_data")?);
    found.network =
        non_empty(s.get("/openstack/latest/network_data.json")?).map(|d| ("network_data.json", d));
    Ok(Probe::Found(found))
}

/// Hetzner Cloud: `/hetzner/v1/metadata/...` and `/hetzner/v1/userdata`.
fn hetzner(s: &Session) -> Result<Probe, DatasourceError> {
    if let Err(why) = s.probe("GET", "/hetzner/v1/metadata/instance-id") {
        return Ok(Probe::Absent(why));
    }
    let ssh_keys = match s.get_json("/hetzner/v1/metadata/public-keys")? {
        None => Vec::new(),
        Some(serde_json::Value::Array(keys)) => keys
            .iter()
            .map(|k| {
                k.as_str()
                    .map(|k| k.trim().to_string())
                    .ok_or_else(|| s.garbage(format!("public-keys holds {k}")))
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(s.garbage(format!("public-keys is {other}, not a list"))),
    };
    Ok(Probe::Found(Found {
        user_data: non_empty(s.get("/hetzner/v1/userdata")?),
        hostname: s.get_text("/hetzner/v1/metadata/hostname")?,
        ssh_keys,
        network: non_empty(s.get("/hetzner/v1/metadata/network-config")?)
            .map(|d| ("network-config", d)),
    }))
}

/// DigitalOcean: `/metadata/v1/...` (one key per line in `public-keys`).
fn digitalocean(s: &Session) -> Result<Probe, DatasourceError> {
    if let Err(why) = s.probe("GET", "/metadata/v1/id") {
        return Ok(Probe::Absent(why));
    }
    let ssh_keys = s
        .get_text("/metadata/v1/public-keys")?
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .collect();
    Ok(Probe::Found(Found {
        user_data: non_empty(s.get("/metadata/v1/user-data")?),
        hostname: s.get_text("/metadata/v1/hostname")?,
        ssh_keys,
        network: None,
    }))
}
