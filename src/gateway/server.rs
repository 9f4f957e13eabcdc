//! The accept loop: HTTP/1.1 with WebSocket upgrades, on hyper. Unlike
//! `axum::serve`, it gives request headers a deadline
//! (`ROWCAST_HEADER_TIMEOUT`), so sockets that send nothing, or headers a
//! byte at a time, are cut off instead of holding a file descriptor each.
//! On shutdown it stops accepting, waits for the `drain` future (which
//! closes the WebSocket clients), then lets requests in flight finish.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::{Extension, Router};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

/// How long requests in flight may take to finish after shutdown.
const FINISH: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `drain` resolves.
pub(super) async fn serve(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    drain: impl Future<Output = ()>,
) {
    let connections = TaskTracker::new();
    let (stop, stopped) = watch::channel(false);
    let mut drain = std::pin::pin!(drain);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, most likely: back off a moment.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut drain => break,
        };
        let _ = tcp.set_nodelay(true);
        let service = TowerToHyperService::new(
            app.clone()
                .layer(Extension(ConnectInfo::<SocketAddr>(peer))),
        );
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(tcp), service)
            .with_upgrades();
        let mut stopped = stopped.clone();
        connections.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = stopped.changed() => {
                    // Finish the request in flight, take no other.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = stop.send(true);
    connections.close();
    if tokio::time::timeout(FINISH, connections.wait())
        .await
        .is_err()
    {
        tracing::debug!("requests still in flight at shutdown were cut off");
    }
}
