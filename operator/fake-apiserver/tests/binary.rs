//! The standalone binary: prints its URL, writes a kubeconfig a kube client can use.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use k8s_openapi::api::core::v1::Node;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

#[tokio::test]
async fn the_binary_serves_and_writes_a_kubeconfig() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    let mut child = Command::new(env!("CARGO_BIN_EXE_clb-fake-apiserver"))
        .args(["--kubeconfig".as_ref(), path.as_os_str()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut url = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut url)
        .unwrap();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    assert_eq!(
        config.cluster_url.to_string().trim_end_matches('/'),
        url.trim()
    );
    let nodes: Api<Node> = Api::all(Client::try_from(config).unwrap());
    let node: Node = serde_json::from_value(json!({"metadata": {"name": "a"}})).unwrap();
    let result = nodes.create(&PostParams::default(), &node).await;
    let listed = nodes.list(&ListParams::default()).await;
    child.kill().unwrap();
    child.wait().unwrap();
    result.unwrap();
    assert_eq!(listed.unwrap().items.len(), 1);
}

/// `start_blocking` needs no runtime and keeps serving while the test thread blocks; dropping
/// the server closes its port.
#[test]
fn a_blocking_test_thread_does_not_starve_the_server() {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    let server = clb_fake_apiserver::FakeApiServer::start_blocking().unwrap();
    let addr = server
        .url()
        .unwrap()
        .trim_start_matches("http://")
        .to_string();
    let mut stream = TcpStream::connect(&addr).unwrap();
    stream
        .write_all(b"GET /api/v1/nodes?labelSelector=a%3Db HTTP/1.1\r\nHost: fake\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.contains(r#""kind":"NodeList""#), "{response}");
    let log = server.requests();
    assert_eq!(
        (log[0].path.as_str(), log[0].query.as_str()),
        ("/api/v1/nodes", "labelSelector=a%3Db")
    );
    drop(server);
    // Binding the port proves no listener holds it. The other test spawns a process at the
    // same time: between its fork and exec the child holds a copy of every descriptor,
    // this listener's too, so the port may stay taken for a moment after the drop.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while let Err(error) = std::net::TcpListener::bind(&addr) {
        assert!(
            std::time::Instant::now() < deadline,
            "the port is still taken 10 s after the server was dropped: {error}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
