//! The client end of the admin endpoints of a crbridge on this host: one HTTP/1.1 request
//! per connection (hyper), the answer's body handed over line by line as it arrives, so
//! replay progress shows while the replay runs.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONNECTION, CONTENT_TYPE, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::auth::AdminToken;

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers at the address.
    #[error("admin endpoint http://{addr} does not answer: {source}")]
    Connect {
        /// The address.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The method or path do not make an HTTP request.
    #[error("admin request {method} {path} is not valid HTTP: {source}")]
    Build {
        /// The method.
        method: String,
        /// The path.
        path: String,
        /// What was wrong.
        #[source]
        source: hyper::http::Error,
    },
    /// The connection broke or the answer was not HTTP.
    #[error("admin endpoint http://{addr}: {source}")]
    Exchange {
        /// The address.
        addr: SocketAddr,
        /// What went wrong, as hyper saw it.
        #[source]
        source: hyper::Error,
    },
}

/// Sends `method path` with an optional JSON body and the admin `token`; calls `on_line` for
/// every line of the answer's body as it arrives; returns the HTTP status.
///
/// Lines are cut from the body's bytes and decoded only then, so a character split across
/// two chunks arrives whole; bytes that are not UTF-8 become U+FFFD.
pub async fn request(
    addr: SocketAddr,
    token: &AdminToken,
    method: &str,
    path: &str,
    json: Option<&str>,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<u16, ClientError> {
    let exchange_error = |source| ClientError::Exchange { addr, source };
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, addr.to_string())
        .header(CONNECTION, "close")
        .header(AUTHORIZATION, token.authorization())
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(json.unwrap_or("").to_owned())))
        .map_err(|source| ClientError::Build {
            method: method.to_owned(),
            path: path.to_owned(),
            source,
        })?;
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| ClientError::Connect { addr, source })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(exchange_error)?;
    let exchange = async {
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut pending: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue; // trailers
            };
            pending.extend_from_slice(&data);
            let mut start = 0;
            while let Some(end) = pending[start..].iter().position(|b| *b == b'\n') {
                on_line(&line(&pending[start..start + end]));
                start += end + 1;
            }
            pending.drain(..start);
        }
        if !pending.is_empty() {
            on_line(line(&pending).trim_end());
        }
        Ok(status)
    };
    // The connection future does the socket I/O and the exchange reads what it delivers;
    // both are polled here (no task to spawn). The connection ends first only on an error
    // or once the answer is complete, and then the exchange finishes from what was read.
    let mut connection = std::pin::pin!(connection);
    let mut exchange = std::pin::pin!(exchange);
    tokio::select! {
        status = &mut exchange => status.map_err(exchange_error),
        ended = &mut connection => {
            ended.map_err(exchange_error)?;
            exchange.await.map_err(exchange_error)
        }
    }
}

/// One line of the body without its line ending, decoded.
fn line(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes.strip_suffix(b"\r").unwrap_or(bytes))
}

/// The address to reach a daemon listening on `listen` from this host.
pub fn local_addr(listen: SocketAddr) -> SocketAddr {
    let ip = if listen.ip().is_unspecified() {
        if listen.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        }
    } else {
        listen.ip()
    };
    SocketAddr::new(ip, listen.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Serves one connection: reads the request (head and `content-length` body), answers
    /// `response` as raw bytes, and hands back the request it read.
    async fn serve_once(listener: TcpListener, response: Vec<u8>) -> String {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        let head_end = loop {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(n > 0, "the client closed before sending a request");
            request.extend_from_slice(&buf[..n]);
            if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&request[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        while request.len() < head_end + length {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(n > 0, "the client closed before sending its body");
            request.extend_from_slice(&buf[..n]);
        }
        socket.write_all(&response).await.unwrap();
        socket.shutdown().await.unwrap();
        String::from_utf8(request).unwrap()
    }

    fn token() -> (tempfile::TempDir, AdminToken) {
        let dir = tempfile::tempdir().unwrap();
        let token = AdminToken::load_or_create(None, dir.path()).unwrap();
        (dir, token)
    }

    async fn exchange(response: Vec<u8>, json: Option<&str>) -> (u16, Vec<String>, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve_once(listener, response));
        let (_dir, token) = token();
        let mut lines = Vec::new();
        let status = request(addr, &token, "POST", "/admin/replay", json, &mut |l| {
            lines.push(l.to_owned())
        })
        .await
        .unwrap();
        let request = server.await.unwrap();
        assert!(
            request.contains(&format!("authorization: {}\r\n", token.authorization())),
            "the bearer token is sent: {request:?}"
        );
        (status, lines, request)
    }

    /// Issue 16 item 9: `é` is two bytes in UTF-8; a chunk boundary between them must not
    /// turn it into two replacement characters.
    #[tokio::test]
    async fn a_character_split_across_chunks_arrives_whole() {
        let mut response = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        let first = "{\"progress\":\"caf\u{e9}\"}\n{\"done\":\"na\u{ef}ve\"}\n".as_bytes();
        // Split inside the two-byte `é`, and again inside `ï`.
        let e = first.iter().position(|b| *b == 0xc3).unwrap() + 1;
        let i = first.iter().rposition(|b| *b == 0xc3).unwrap() + 1;
        for chunk in [&first[..e], &first[e..i], &first[i..]] {
            response.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            response.extend_from_slice(chunk);
            response.extend_from_slice(b"\r\n");
        }
        response.extend_from_slice(b"0\r\n\r\n");
        let (status, lines, request) = exchange(response, Some(r#"{"fromSeq":0}"#)).await;
        assert_eq!(status, 200);
        assert_eq!(
            lines,
            ["{\"progress\":\"caf\u{e9}\"}", "{\"done\":\"na\u{ef}ve\"}"]
        );
        assert!(
            request.starts_with("POST /admin/replay HTTP/1.1\r\n"),
            "{request:?}"
        );
        assert!(
            request.ends_with(r#"{"fromSeq":0}"#),
            "the body is sent: {request:?}"
        );
    }

    #[tokio::test]
    async fn a_sized_body_without_a_final_newline_is_one_line() {
        let body = "{\"error\":\"d\u{e9}j\u{e0} vu\"}";
        let response = format!(
            "HTTP/1.1 409 Conflict\r\ncontent-length: {}\r\ncontent-type: application/json\r\n\r\n{body}",
            body.len()
        );
        let (status, lines, _) = exchange(response.into_bytes(), None).await;
        assert_eq!(status, 409);
        assert_eq!(lines, [body]);
    }

    #[tokio::test]
    async fn a_closed_port_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let (_dir, token) = token();
        let err = request(addr, &token, "GET", "/admin/status", None, &mut |_| {})
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Connect { .. }), "{err}");
    }
}
