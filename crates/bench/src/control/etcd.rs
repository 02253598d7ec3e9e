//! The etcd of `srmig bench control --store etcd`: Debian's `etcd-server` (3.4) started on
//! free loopback ports with its own data directory, stopped and removed after (as the
//! controller's tests do), unless the caller gives `--etcd-endpoints`; and the request count
//! read from etcd's own `GET /metrics`.
//!
//! Requests are counted on the server: the sum of `grpc_server_handled_total` over every
//! unary method (Range, Txn, Put, DeleteRange, Lease*, ...), whatever its result code. That
//! counts what the controller's etcd client really sent (a save split into several Txns
//! counts each), and it would count another client of a shared etcd too: with
//! `--etcd-endpoints` the figure is only clean if nothing else uses that cluster.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::ControlBenchError;

/// A single-member etcd cluster this bench started; killed and its directory removed on drop.
#[derive(Debug)]
pub(crate) struct EtcdProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    dir: PathBuf,
}

fn free_port() -> Result<u16, ControlBenchError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| ControlBenchError::Io {
            what: "find a free loopback port".into(),
            source,
        })
}

impl EtcdProcess {
    /// Starts `bin` with its data under `dir` (created; removed on drop) and waits until its
    /// client port answers (at most 20 s).
    pub(crate) fn start(bin: &Path, dir: &Path) -> Result<EtcdProcess, ControlBenchError> {
        std::fs::create_dir_all(dir).map_err(|source| ControlBenchError::Io {
            what: format!("create {}", dir.display()),
            source,
        })?;
        let (client_port, peer_port) = (free_port()?, free_port()?);
        let url = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log_path = dir.join("etcd.log");
        let log = std::fs::File::create(&log_path).map_err(|source| ControlBenchError::Io {
            what: format!("create {}", log_path.display()),
            source,
        })?;
        let child = Command::new(bin)
            .arg("--name=srmig-bench")
            .arg(format!("--data-dir={}", dir.join("data").display()))
            .arg(format!("--listen-client-urls={url}"))
            .arg(format!("--advertise-client-urls={url}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=srmig-bench={peer}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|source| ControlBenchError::Io {
                what: format!("start {}", bin.display()),
                source,
            })?;
        let etcd = EtcdProcess {
            child,
            url,
            dir: dir.to_owned(),
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], client_port));
        let start = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
            if start.elapsed() > Duration::from_secs(20) {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(ControlBenchError::Etcd(format!(
                    "etcd did not listen on {} within 20 s; its log:\n{log}",
                    etcd.url
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(etcd)
    }

    /// Its process id (for its RSS).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The etcd binary: `etcd` on the PATH (Debian package `etcd-server`).
pub(crate) fn find_binary() -> Result<PathBuf, ControlBenchError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            ControlBenchError::Etcd(
                "etcd is not on the PATH (apt-get install etcd-server), and no --etcd-endpoints \
                 was given"
                    .into(),
            )
        })
}

/// The sum of `grpc_server_handled_total{grpc_type="unary"}` samples in an OpenMetrics /
/// Prometheus text body.
pub(crate) fn unary_requests(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("grpc_server_handled_total{") && l.contains("grpc_type=\"unary\"")
        })
        .filter_map(|l| l.rsplit(' ').next())
        .filter_map(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// Reads etcd's request count from `endpoint`'s `/metrics` (plain `http://` only).
pub(crate) async fn requests_served(endpoint: &str) -> Result<u64, ControlBenchError> {
    let body = http_get(endpoint, "/metrics").await?;
    Ok(unary_requests(&body))
}

/// A plain HTTP/1.1 GET of `path` on `http://host:port` (etcd's metrics; one connection).
async fn http_get(endpoint: &str, path: &str) -> Result<String, ControlBenchError> {
    use http_body_util::{BodyExt, Empty};
    use hyper::body::Bytes;
    let authority = endpoint
        .strip_prefix("http://")
        .map(|r| r.trim_end_matches('/'))
        .ok_or_else(|| {
            ControlBenchError::Etcd(format!(
                "{endpoint}: only http:// endpoints can be asked for their request count"
            ))
        })?;
    let fail = |e: String| ControlBenchError::Etcd(format!("GET {endpoint}{path}: {e}"));
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| fail(e.to_string()))?;
    let conn = tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .body(Empty::<Bytes>::new())
        .map_err(|e| fail(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| fail(e.to_string()))?
        .to_bytes();
    conn.abort();
    if !status.is_success() {
        return Err(fail(format!("answered {status}")));
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_unary_requests_of_every_code() {
        let text = "\
# TYPE grpc_server_handled_total counter
grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Txn\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 12
grpc_server_handled_total{grpc_code=\"FailedPrecondition\",grpc_method=\"Txn\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 1
grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"LeaseKeepAlive\",grpc_service=\"etcdserverpb.Lease\",grpc_type=\"bidi_stream\"} 4
grpc_server_started_total{grpc_method=\"Txn\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 13
";
        assert_eq!(unary_requests(text), 13);
    }
}
