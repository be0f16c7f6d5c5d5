//! The path of the Engine.IO requests of a session already open: those with a
//! `sid` in the query (a long-polling client's GETs and POSTs, and its upgrade
//! to a websocket). A long-polling client always has one such GET waiting for
//! the whole ping interval, so what that request holds while it waits is what
//! every long-polling client costs.
//!
//! They get what every response needs (a request id, CORS, the request
//! metrics as route `/socket.io/`, the request timeout) from layers whose
//! futures are plain structs, boxed once for the whole stack. They
//! skip what only a session's first request needs (the client's address, the
//! limit on new sessions per address, the handshake's own copy of the
//! request: Engine.IO never opens a session for a request with a `sid`), and
//! what only REST needs (routing, request spans, error bodies): each
//! middleware written as a function boxes a future of its own and clones the
//! services inside it, about 18 KiB per waiting request in all.

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::future::RouteFuture;
use futures_util::future::{BoxFuture, Either};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::request_id::REQUEST_ID;

/// Where Engine.IO listens.
const PATH: &str = "/socket.io";

/// How long any HTTP request may take (a long-poll answers within the ping
/// interval, well before).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether `request` belongs to an Engine.IO session already open: its path
/// is Engine.IO's and its query has a `sid` (the rule Engine.IO itself uses
/// to tell a new session from an open one).
fn is_session_request<B>(request: &axum::http::Request<B>) -> bool {
    is_engine_io_path(request.uri().path())
        && request.uri().query().is_some_and(|q| q.split('&').any(|p| p.starts_with("sid=")))
}

/// `/socket.io` and what is under it, as Engine.IO matches its path.
fn is_engine_io_path(path: &str) -> bool {
    path.strip_prefix(PATH).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The service for session requests: `engine_io` (the Engine.IO service, the
/// one the router serves handshakes with: it holds the sessions) inside the
/// request id, CORS, timeout and metrics layers.
pub fn session_service<S, B>(engine_io: S, cors_origins: &[String]) -> SessionService
where
    S: Service<Request, Response = axum::http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let inner = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUuid))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        .option_layer(crate::cors(cors_origins))
        .map_response(|r: axum::http::Response<B>| r.map(Body::new))
        .service(engine_io);
    SessionService { inner: Arc::new(tower::util::BoxCloneSyncService::new(inner)) }
}

/// What [`session_service`] builds. Cloned with every connection and
/// request; the boxed stack is cloned only for a session request.
#[derive(Clone)]
pub struct SessionService {
    inner: Arc<tower::util::BoxCloneSyncService<Request, Response, Infallible>>,
}

impl SessionService {
    /// Serves `request`, counted in the request metrics.
    fn serve(&self, request: Request) -> BoxFuture<'static, Result<Response, Infallible>> {
        let started = Instant::now();
        let method = request.method().clone();
        let call = (*self.inner).clone().oneshot(request);
        Box::pin(async move {
            let response = call.await?;
            switchboard_telemetry::metrics().http(
                std::borrow::Cow::Borrowed("/socket.io/"),
                method.as_str(),
                response.status().as_u16(),
                started.elapsed(),
            );
            Ok(response)
        })
    }
}

/// The whole application: session requests to [`SessionService`], every
/// other request to the router (with the connection's peer address, as
/// `ConnectInfo`).
#[derive(Clone)]
pub struct App {
    sessions: SessionService,
    router: Router,
    peer: Option<SocketAddr>,
}

impl App {
    pub fn new(sessions: SessionService, router: Router) -> Self {
        Self { sessions, router, peer: None }
    }

    /// The service of one connection from `peer`.
    pub fn for_peer(&self, peer: SocketAddr) -> Self {
        Self { peer: Some(peer), ..self.clone() }
    }

    /// What `axum::serve` takes: this app for each connection, with its peer.
    pub fn into_make_service(self) -> MakeApp {
        MakeApp(self)
    }
}

/// [`App`] per connection (see [`App::into_make_service`]).
#[derive(Clone)]
pub struct MakeApp(App);

impl<L> Service<axum::serve::IncomingStream<'_, L>> for MakeApp
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    type Response = App;
    type Error = Infallible;
    type Future = std::future::Ready<Result<App, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, incoming: axum::serve::IncomingStream<'_, L>) -> Self::Future {
        std::future::ready(Ok(self.0.for_peer(*incoming.remote_addr())))
    }
}

impl Service<Request> for App {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<BoxFuture<'static, Result<Response, Infallible>>, RouteFuture<Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Both paths are always ready: a router is, and the session path
        // calls its service through `oneshot`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        if is_session_request(&request) {
            return Either::Left(self.sessions.serve(request));
        }
        if let Some(peer) = self.peer {
            request.extensions_mut().insert(ConnectInfo(peer));
        }
        Either::Right(self.router.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str) -> axum::http::Request<()> {
        axum::http::Request::builder().uri(uri).body(()).unwrap()
    }

    #[test]
    fn only_engine_io_requests_with_a_sid_are_session_requests() {
        assert!(is_session_request(&request("/socket.io/?EIO=4&transport=polling&sid=abc")));
        assert!(is_session_request(&request("/socket.io/?sid=abc&EIO=4&transport=websocket")));
        // A handshake (no sid) takes the whole stack: it opens a session.
        assert!(!is_session_request(&request("/socket.io/?EIO=4&transport=polling")));
        assert!(!is_session_request(&request("/socket.io/?EIO=4&transport=polling&xsid=abc")));
        // REST never does, whatever its query says.
        assert!(!is_session_request(&request("/api/v1/me?sid=abc")));
        assert!(!is_session_request(&request("/socket.io/")));
        assert!(!is_session_request(&request("/socket.iox/?sid=abc")));
        assert!(is_session_request(&request("/socket.io?EIO=4&sid=abc")));
    }
}
