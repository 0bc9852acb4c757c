//! The HTTP/1 server loop of every listener (API, gateway, worker health; plain or TLS).
//!
//! It is `axum::serve` with a bound on slow clients. `axum::serve` gives hyper no timer, and
//! hyper then waits forever for a request's head: a client sending its headers a byte a second
//! (slowloris), or connecting and sending nothing, held its connection and task for as long as
//! it liked; and nothing bounded the time to receive a body either (the gateway has no request
//! deadline). Here a client gets `client_read_timeout` to send a request's head (from its
//! first byte, or from the previous answer on a kept-alive connection, so an idle connection
//! is closed after that long too), and as long again to send its body: a head not received in
//! time closes the connection, a body not received in time fails the request with the usual
//! 400 `{"code", "message"}` answer. A head larger than hyper's buffer (about 400 KB) or with
//! more than 100 headers is answered 431.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::watch;
use tower::ServiceExt;

/// How long a client may take to send a request's head, and then its body, unless configured
/// otherwise (30 s: hyper's own default for the head, which it applies only with a timer).
pub const CLIENT_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `router` on `listener` until `stop` resolves, each request with its peer address
/// as `ConnectInfo<SocketAddr>` (trusted-header mode checks it). Then it stops accepting,
/// asks every connection to finish its request in progress, and waits for them, as
/// `axum::serve`'s graceful shutdown does.
pub async fn serve<L>(
    mut listener: L,
    router: Router,
    client_read_timeout: Duration,
    stop: impl Future<Output = ()> + Send + 'static,
) where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    // Each connection holds a receiver of `closing` (so `closing.closed()` tells when the last
    // one is done) and watches `finish`.
    let (finish, finishing) = watch::channel(());
    let (closing, closed) = watch::channel(());
    tokio::pin!(stop);
    loop {
        // `Listener::accept` retries failed accepts itself (with a pause for those that would
        // repeat, such as running out of file descriptors).
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => break,
        };
        let service = router.clone().map_request(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request.map(|body| Body::new(Deadlined::new(body, client_read_timeout)))
        });
        let (mut finish_now, done) = (finishing.clone(), closed.clone());
        tokio::spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new()).header_read_timeout(client_read_timeout);
            let connection = http.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
            tokio::pin!(connection);
            // Errors are the client's (gone, timed out, malformed): nothing to log at warn.
            tokio::select! {
                outcome = connection.as_mut() => {
                    if let Err(e) = outcome {
                        tracing::trace!(%peer, error = %e, "connection ended");
                    }
                }
                _ = finish_now.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.as_mut().await;
                }
            }
            drop(done);
        });
    }
    drop(listener);
    let _ = finish.send(());
    drop(closed);
    closing.closed().await;
}

/// A request body that fails once its deadline has passed without it having arrived. The
/// timer is only set when the body is not all there already (a ping's usually is).
struct Deadlined {
    inner: Incoming,
    deadline: tokio::time::Instant,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    limit: Duration,
}

impl Deadlined {
    fn new(inner: Incoming, limit: Duration) -> Deadlined {
        Deadlined { inner, deadline: tokio::time::Instant::now() + limit, timer: None, limit }
    }
}

impl hyper::body::Body for Deadlined {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                let message = format!("the body did not arrive within {} s", this.limit.as_secs());
                Poll::Ready(Some(Err(message.into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
