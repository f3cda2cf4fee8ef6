//! The reference server in `ringnet bench --compare`: a tokio echo server as
//! most users would write it — a current-thread runtime, one task per
//! connection, a 4 KiB buffer each, TCP_NODELAY on (as ringnet sets it).
//! With TLS it is tokio-rustls over the same rustls and the same crypto
//! provider (ring) as ringnet, so both negotiate the same cipher suite.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serve echo on `addr` on the calling thread (pinned to `cpu` if given)
/// until the process ends; `ready` receives the bound address first.
pub fn tokio_echo(
    addr: SocketAddr,
    cpu: Option<usize>,
    tls: Option<(&std::path::Path, &std::path::Path)>,
    ready: impl FnOnce(SocketAddr),
) -> io::Result<()> {
    let acceptor = match tls {
        None => None,
        Some((cert, key)) => Some(tokio_rustls::TlsAcceptor::from(
            crate::tls::single_cert_config(cert, key)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
        )),
    };
    if let Some(cpu) = cpu {
        crate::sys::pin_current_thread(cpu)?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        ready(listener.local_addr()?);
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                // Out of descriptors and the like: pause instead of spinning.
                Err(_) => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            match acceptor.clone() {
                None => {
                    tokio::spawn(echo(stream));
                }
                Some(acceptor) => {
                    tokio::spawn(async move {
                        if let Ok(tls) = acceptor.accept(stream).await {
                            echo(tls).await;
                        }
                    });
                }
            }
        }
    })
}

/// Echo until the peer closes or an error.
async fn echo<S: AsyncReadExt + AsyncWriteExt + Unpin>(mut stream: S) {
    let mut buf = vec![0u8; 4096];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stream.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
