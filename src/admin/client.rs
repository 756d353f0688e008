//! A minimal HTTP/1.1 client for the admin endpoints of a crbridge on this host: one
//! request per connection, chunked answers read line by line (replay progress streams).

use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
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
    /// The connection broke or the answer was not HTTP.
    #[error("admin endpoint http://{addr}: {detail}")]
    Protocol {
        /// The address.
        addr: SocketAddr,
        /// What was wrong.
        detail: String,
    },
}

/// Sends `method path` with an optional JSON body and the admin `token`; calls `on_line` for
/// every line of the answer's body as it arrives; returns the HTTP status.
pub async fn request(
    addr: SocketAddr,
    token: &AdminToken,
    method: &str,
    path: &str,
    json: Option<&str>,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<u16, ClientError> {
    let proto = |detail: String| ClientError::Protocol { addr, detail };
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| ClientError::Connect { addr, source })?;
    let mut stream = BufReader::new(stream);
    let body = json.unwrap_or("");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\nauthorization: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        token.authorization(),
        body.len()
    );
    stream
        .get_mut()
        .write_all(format!("{head}{body}").as_bytes())
        .await
        .map_err(|e| proto(e.to_string()))?;
    let mut line = String::new();
    stream
        .read_line(&mut line)
        .await
        .map_err(|e| proto(e.to_string()))?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| proto(format!("not an HTTP answer: {line:?}")))?;
    let mut chunked = false;
    let mut length: Option<usize> = None;
    loop {
        line.clear();
        stream
            .read_line(&mut line)
            .await
            .map_err(|e| proto(e.to_string()))?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let lower = l.to_ascii_lowercase();
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().ok();
        }
    }
    let mut pending = String::new();
    let mut emit = |data: &[u8], pending: &mut String| {
        pending.push_str(&String::from_utf8_lossy(data));
        while let Some(i) = pending.find('\n') {
            let l: String = pending.drain(..=i).collect();
            on_line(l.trim_end_matches(['\r', '\n']));
        }
    };
    if chunked {
        loop {
            line.clear();
            stream
                .read_line(&mut line)
                .await
                .map_err(|e| proto(e.to_string()))?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| proto(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                break;
            }
            let mut buf = vec![0u8; size + 2];
            stream
                .read_exact(&mut buf)
                .await
                .map_err(|e| proto(e.to_string()))?;
            emit(&buf[..size], &mut pending);
        }
    } else {
        let mut buf = Vec::new();
        match length {
            Some(n) => {
                buf.resize(n, 0);
                stream
                    .read_exact(&mut buf)
                    .await
                    .map_err(|e| proto(e.to_string()))?;
            }
            None => {
                stream
                    .read_to_end(&mut buf)
                    .await
                    .map_err(|e| proto(e.to_string()))?;
            }
        }
        emit(&buf, &mut pending);
    }
    if !pending.is_empty() {
        on_line(pending.trim_end());
    }
    Ok(status)
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
