//! A static file server on 127.0.0.1 for netboot guests (reached through
//! [`crate::qemu::restricted_net_args`]): std only, so the test sees every request.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Files larger than this are sent chunked, the others with `Content-Length`.
pub const CHUNKED_ABOVE: usize = 64 * 1024;

/// Serves `root` under the URL prefix `/net/`: one thread per connection, `Connection: close`,
/// big files chunked, small ones with `Content-Length`. Records "STATUS PATH [framing]" per
/// request.
pub struct Server {
    pub port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub fn start(root: PathBuf) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (root, log) = (root.clone(), log2.clone());
                std::thread::spawn(move || {
                    if let Err(e) = serve_one(conn, &root, &log) {
                        log.lock().unwrap().push(format!("ERR {e}"));
                    }
                });
            }
        });
        Server { port, log }
    }

    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.log.lock().unwrap().clear();
    }
}

fn serve_one(conn: TcpStream, root: &Path, log: &Mutex<Vec<String>>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut r = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    r.read_line(&mut request_line)?;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string();
    let file = path
        .strip_prefix("/net/")
        .filter(|p| !p.split('/').any(|c| c == ".." || c.is_empty()))
        .map(|p| root.join(p))
        .filter(|p| p.is_file());
    let mut w = std::io::BufWriter::new(conn);
    match file {
        None => {
            log.lock().unwrap().push(format!("404 {path}"));
            w.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\nConnection: close\r\n\r\nnot found\n",
            )?;
        }
        Some(f) => {
            let mut data = Vec::new();
            std::fs::File::open(&f)?.read_to_end(&mut data)?;
            let chunked = data.len() > CHUNKED_ABOVE;
            log.lock().unwrap().push(format!(
                "200 {path} {}",
                if chunked { "chunked" } else { "length" }
            ));
            if chunked {
                w.write_all(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
                )?;
                for c in data.chunks(20_000) {
                    write!(w, "{:x}\r\n", c.len())?;
                    w.write_all(c)?;
                    w.write_all(b"\r\n")?;
                }
                w.write_all(b"0\r\n\r\n")?;
            } else {
                write!(
                    w,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    data.len()
                )?;
                w.write_all(&data)?;
            }
        }
    }
    w.flush()
}
