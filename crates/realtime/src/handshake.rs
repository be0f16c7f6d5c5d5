//! The handshake guard (a socketioxide connect middleware) and the connect
//! handler. The guard reads the token (`auth.token`, else `Authorization:
//! Bearer`), verifies it, loads the tenant through the cached directory (no
//! Postgres round trip when warm), takes a slot in the tenant's cluster-wide
//! connection count, and refuses with the documented message and code (docs/socketio.md) otherwise.
//! On success it also joins the tenant and user rooms, registers the event
//! handlers (before the client can send anything) and files the socket under
//! its token's expiry. `auth:refresh { token }` moves that expiry on with a
//! fresh token of the same tenant and user.

use crate::codes::{EventError, Refusal};
use crate::event::{Ack, Ev, payload, reply, traced};
use crate::{Realtime, Session, messages, presence, subscribe};
use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::extract::{Event, SocketRef, State, TryData};
use socketioxide::socket::MessageHandlers;
use std::sync::Arc;
use switchboard_domain::{ClientAddr, ErrorKind, Principal, TenantStatus};

fn token<E>(s: &SocketRef, auth: &Result<Value, E>) -> Option<String> {
    if let Ok(auth) = auth
        && let Some(t) = auth.get("token").and_then(Value::as_str)
    {
        return Some(t.trim().to_owned()).filter(|t| !t.is_empty());
    }
    let header = s.req_parts().headers.get("authorization")?.to_str().ok()?;
    let (scheme, value) = header.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| value.trim().to_owned()).filter(|t| !t.is_empty())
}

/// The connect middleware: `Ok` admits the socket with a [`Session`] in its
/// extensions. Every outcome is counted (accepted, or refused by code).
pub async fn guard(
    s: SocketRef,
    State(rt): State<Realtime>,
    TryData(auth): TryData<Value>,
) -> Result<(), Refusal> {
    let started = std::time::Instant::now();
    let outcome = if switchboard_telemetry::trace::enabled() {
        use tracing::Instrument;
        let span = tracing::info_span!(
            "handshake",
            "otel.kind" = "server",
            transport = ?s.transport_type(),
            tenant_id = tracing::field::Empty,
            code = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        let traceparent = auth.as_ref().ok().and_then(|a| a.get("traceparent")).and_then(Value::as_str);
        let tracestate = auth.as_ref().ok().and_then(|a| a.get("tracestate")).and_then(Value::as_str);
        switchboard_telemetry::trace::set_parent(&span, traceparent, tracestate);
        switchboard_telemetry::trace::stamp_ids(&span);
        let outcome = admit(&s, &rt, auth).instrument(span.clone()).await;
        if let Err(r) = &outcome {
            span.record("code", r.code);
        }
        outcome
    } else {
        admit(&s, &rt, auth).await
    };
    rt.inner.handshakes.record(outcome.as_ref().err().map(|r| r.code));
    let class = match &outcome {
        Ok(()) => "accepted",
        Err(r) if matches!(r.kind, ErrorKind::Unavailable | ErrorKind::Internal) => "failed",
        Err(_) => "refused",
    };
    switchboard_telemetry::metrics().handshake(class, started.elapsed());
    outcome
}

async fn admit(
    s: &SocketRef,
    rt: &Realtime,
    auth: Result<Value, socketioxide::ParserError>,
) -> Result<(), Refusal> {
    let inner = &rt.inner;
    if rt.is_draining() {
        return Err(Refusal::new(
            ErrorKind::OverCapacity,
            "node_draining",
            "this node is draining; reconnect",
        ));
    }
    let Some(token) = token(s, &auth) else {
        return Err(Refusal::new(
            ErrorKind::Unauthenticated,
            "token_missing",
            "send a token as auth.token or Authorization: Bearer",
        ));
    };
    if switchboard_auth::api_key::is_api_key(&token) {
        return Err(Refusal::new(
            ErrorKind::TokenInvalid,
            "token_invalid",
            "API keys authenticate REST calls; sockets need a user token",
        ));
    }
    // An address that keeps failing is refused before any verification work.
    let ip = s.req_parts().extensions.get::<ClientAddr>().map(|c| c.0);
    if ip.and_then(|ip| inner.auth_failures.blocked(ip)).is_some() {
        return Err(Refusal::new(
            ErrorKind::RateLimited,
            "rate_limited",
            "too many failed authentications from this address; wait before retrying",
        ));
    }
    let (principal, expires_at) = inner.verifier.verify_until(&token).await.map_err(|e| {
        if let Some(ip) = ip {
            inner.auth_failures.failed(ip);
        }
        Refusal::new(e.kind(), e.code(), e.to_string())
    })?;
    // Verification allows some clock skew; a connection does not: it would be
    // closed at once.
    if expires_at <= crate::expiry::now() {
        return Err(Refusal::new(ErrorKind::TokenExpired, "token_expired", "the token has expired"));
    }
    let Principal::User { tenant_id, user_id, role } = principal else {
        return Err(Refusal::new(
            ErrorKind::Forbidden,
            "tenant_required",
            "this token names no tenant; connect with a tenant user's token",
        ));
    };
    if switchboard_telemetry::trace::enabled() {
        tracing::Span::current().record("tenant_id", tracing::field::display(tenant_id));
    }
    let info = match inner.directory.tenant(tenant_id).await {
        Ok(Some(info)) => info,
        Ok(None) => return Err(Refusal::new(ErrorKind::Forbidden, "tenant_unknown", "no such tenant")),
        Err(e) => {
            tracing::error!(error = %e, tenant_id = %tenant_id, "handshake: directory lookup failed");
            return Err(Refusal::new(ErrorKind::Unavailable, "unavailable", "try again shortly"));
        }
    };
    if info.status == TenantStatus::Suspended {
        return Err(Refusal::new(ErrorKind::TenantSuspended, "tenant_suspended", "this tenant is suspended"));
    }
    if !inner.connections.acquire(tenant_id.as_uuid(), info.limits.max_connections).await {
        return Err(Refusal::new(
            ErrorKind::OverCapacity,
            "tenant_connection_limit",
            format!("the tenant has its {} connections", info.limits.max_connections),
        ));
    }
    let session = Arc::new(Session::new(tenant_id, user_id, role, expires_at, inner.connections.clone()));
    // Everything the socket needs is in place before the CONNECT packet goes out:
    // socketioxide runs the connect handler in a task of its own, and a client's
    // first event may arrive before that task has run.
    s.join([Session::tenant_room(tenant_id), Session::user_room(tenant_id, user_id)]);
    s.on_shared(inner.handlers.clone());
    s.on_disconnect(on_disconnect);
    s.extensions.insert(session);
    Ok(())
}

/// The client events' handlers, which every socket shares: registering them
/// per socket would cost each one a map and a box per handler.
pub(crate) fn handlers() -> MessageHandlers {
    MessageHandlers::new()
        .on("subscribe", subscribe::subscribe)
        .on("unsubscribe", subscribe::unsubscribe)
        .on("publish", subscribe::publish)
        .on("presence:track", presence::track)
        .on("presence:list", presence::list_event)
        .on("message:send", messages::send)
        .on("approval:decide", crate::approvals::decide_event)
        .on("auth:refresh", refresh)
        .on_fallback(unknown_event)
}

/// Runs once the socket is connected (its handlers were set by [`guard`]):
/// files it under its token's expiry, now that the sweeper can find it.
pub async fn on_connect(s: SocketRef, State(rt): State<Realtime>) {
    if let Some(session) = s.extensions.get::<Arc<Session>>() {
        rt.inner.expiries.add(session.expires_at(), s.id);
        tracing::debug!(sid = %s.id, tenant_id = %session.tenant, user_id = %session.user, "socket connected");
    }
}

async fn unknown_event(s: SocketRef, Event(event): Event) {
    let name: String = event.chars().take(64).collect();
    let err = EventError::invalid(format!("unknown event `{name}`"));
    let _ = s.emit("error", &err.body());
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshReq {
    token: String,
}

/// `auth:refresh { token }`: a fresh token for the same tenant and user keeps
/// the socket open past the old token's expiry; its role applies from now on.
/// Answers `{ ok, expires_at }` (seconds since the epoch).
async fn refresh(Ev { s, rt, session }: Ev, TryData(data): TryData<Value>, ack: Ack) {
    let result = traced("auth:refresh", &session, async {
        crate::event::admit(&rt, &s, &session).await?;
        let req: RefreshReq = payload(data)?;
        let (principal, expires_at) = rt
            .inner
            .verifier
            .verify_until(&req.token)
            .await
            .map_err(|e| EventError::new(e.kind(), e.to_string()).with_code(e.code()))?;
        match principal {
            switchboard_domain::Principal::User { tenant_id, user_id, role }
                if tenant_id == session.tenant && user_id == session.user =>
            {
                let before = session.expires_at();
                let role_changed = role != session.role();
                session.refreshed(role, expires_at);
                rt.inner.expiries.remove(before, s.id);
                rt.inner.expiries.add(expires_at, s.id);
                let left = if role_changed {
                    leave_what_the_role_cannot_see(&rt, &s, &session).await
                } else {
                    Vec::new()
                };
                Ok(json!({ "ok": true, "expires_at": expires_at, "left": left }))
            }
            _ => Err(EventError::new(
                ErrorKind::Forbidden,
                "a refreshed token must be for the same tenant and user; reconnect to switch",
            )),
        }
    })
    .await;
    reply(ack, "auth:refresh", result).await;
}

/// After a role change: the topics the socket may no longer see are left (as
/// an `unsubscribe` would); their names are returned.
async fn leave_what_the_role_cannot_see(rt: &Realtime, s: &SocketRef, session: &Session) -> Vec<String> {
    let Some(ops) = session.ops().await else { return Vec::new() };
    let rooms = ops.topics().rooms.clone();
    let ctx = switchboard_db::TenantContext::new(session.tenant, Some(session.user), session.role());
    let mut left = Vec::new();
    for room in rooms {
        let Some((_, topic)) = switchboard_domain::Topic::from_room(&room) else { continue };
        // Kept only on a clear yes; a failed lookup leaves the topic too.
        if matches!(rt.inner.directory.may_subscribe(&ctx, &topic).await, Ok(true)) {
            continue;
        }
        if subscribe::leave(rt, s, &ops, &room).await {
            left.push(topic.to_string());
        }
    }
    left
}

/// Waits for the socket's handlers in flight, then undoes everything it held:
/// presence entries, topics (and the node's subscriptions with the last local
/// subscriber), its place in the expiry set. The connection slot goes with the
/// session.
async fn on_disconnect(
    s: SocketRef,
    State(rt): State<Realtime>,
    reason: socketioxide::socket::DisconnectReason,
) {
    let Some(session) = s.extensions.get::<Arc<Session>>() else { return };
    let sid = s.id.to_string();
    let held = session.close().await;
    presence::untrack_all(&rt, &session, &sid, &held.presence).await;
    for room in held.rooms {
        s.leave(room.to_string());
        rt.inner.hub.leave(&rt.inner, &room);
    }
    rt.inner.expiries.remove(session.expires_at(), s.id);
    tracing::debug!(sid = %sid, tenant_id = %session.tenant, ?reason, "socket disconnected");
}

/// The headers anything reads from a Socket.IO request once it has passed
/// [`own_handshake_request`]: the guard reads `Authorization`; the Engine.IO
/// layer reads `Content-Type` (polling posts) and `Sec-WebSocket-Key`
/// (upgrades); the rest describe the connection, for anyone debugging one.
const KEPT_HEADERS: [http::HeaderName; 8] = [
    http::header::AUTHORIZATION,
    http::header::CONTENT_TYPE,
    http::header::SEC_WEBSOCKET_KEY,
    http::header::SEC_WEBSOCKET_VERSION,
    http::header::UPGRADE,
    http::header::CONNECTION,
    http::header::HOST,
    http::header::ORIGIN,
];

/// A Socket.IO request reduced to what the Socket.IO layer and the guard read,
/// in memory of its own: the Socket.IO layer keeps each socket's handshake
/// request for the socket's whole life.
///
/// - hyper parses a request's URI and header values as slices of the
///   connection's read buffer (8 KiB or more): a kept slice would pin the whole
///   buffer. The URI is copied, and the kept headers' values are copied into
///   one buffer they share.
/// - Only [`KEPT_HEADERS`] are kept: a browser sends a kilobyte or more of
///   others (cookies, user agent, languages) that nothing here reads.
/// - Of the extensions, only the client's address ([`ClientAddr`]) and hyper's
///   handle on the connection upgrade are kept; the router's (its path
///   parameters, a few hundred bytes) are not read past routing.
///
/// Other requests pass as they are.
pub fn own_handshake_request<B>(mut req: http::Request<B>) -> http::Request<B> {
    if !req.uri().path().starts_with("/socket.io") {
        return req;
    }
    // The kept values, one after another in one buffer, and where each lies.
    let mut values = bytes::BytesMut::new();
    let mut kept = Vec::with_capacity(KEPT_HEADERS.len());
    for (name, value) in req.headers().iter().filter(|(name, _)| KEPT_HEADERS.contains(name)) {
        kept.push((name.clone(), values.len()..values.len() + value.len()));
        values.extend_from_slice(value.as_bytes());
    }
    let values = values.freeze();
    let mut headers = http::HeaderMap::with_capacity(kept.len());
    for (name, at) in kept {
        if let Ok(value) = http::HeaderValue::from_maybe_shared(values.slice(at)) {
            headers.append(name, value);
        }
    }
    *req.headers_mut() = headers;
    if let Ok(uri) = http::Uri::try_from(req.uri().to_string()) {
        *req.uri_mut() = uri;
    }
    let extensions = req.extensions_mut();
    let mut kept_extensions = http::Extensions::new();
    if let Some(addr) = extensions.remove::<ClientAddr>() {
        kept_extensions.insert(addr);
    }
    if let Some(upgrade) = extensions.remove::<hyper::upgrade::OnUpgrade>() {
        kept_extensions.insert(upgrade);
    }
    *extensions = kept_extensions;
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    fn browser_handshake() -> http::Request<()> {
        let mut req = http::Request::get("/socket.io/?EIO=4&transport=websocket")
            .header("host", "app.example")
            .header("authorization", "Bearer abc")
            .header("cookie", "session=0123456789")
            .header("user-agent", "Mozilla/5.0")
            .header("accept-language", "en-GB")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        req.extensions_mut().insert(ClientAddr("203.0.113.7".parse().unwrap()));
        req.extensions_mut().insert(String::from("a router's extension"));
        req
    }

    #[test]
    fn a_socketio_request_keeps_only_what_is_read() {
        let req = own_handshake_request(browser_handshake());
        let headers = req.headers();
        assert_eq!(headers["authorization"], "Bearer abc");
        assert_eq!(headers["host"], "app.example");
        assert_eq!(headers["sec-websocket-key"], "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(headers["upgrade"], "websocket");
        for dropped in ["cookie", "user-agent", "accept-language"] {
            assert!(!headers.contains_key(dropped), "{dropped} kept");
        }
        assert_eq!(headers.len(), 4);
        assert_eq!(req.uri(), "/socket.io/?EIO=4&transport=websocket");
        assert_eq!(
            req.extensions().get::<ClientAddr>().map(|a| a.0.to_string()).as_deref(),
            Some("203.0.113.7")
        );
        assert!(req.extensions().get::<String>().is_none(), "another extension kept");
    }

    #[test]
    fn other_requests_pass_as_they_are() {
        let mut req = browser_handshake();
        *req.uri_mut() = "/api/v1/projects".parse().unwrap();
        let req = own_handshake_request(req);
        assert_eq!(req.headers().len(), 7);
        assert!(req.extensions().get::<String>().is_some());
    }
}

#[cfg(test)]
mod future_sizes {
    //! Each client event runs as a task of its own, so its handler's future is
    //! allocated and copied once per event. A lookup that carries a rarely
    //! taken Redis or Postgres path inline makes it kilobytes (a publish's was
    //! 16 KiB in a debug build): those paths are boxed where they are taken.

    fn size<A, B, C, F>(_: fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn event_handlers_futures_stay_small() {
        // `message:send` writes to Postgres on every call, so its future
        // carries that path whatever is boxed (7.5 KiB).
        for (event, bytes) in
            [("publish", size(super::subscribe::publish)), ("subscribe", size(super::subscribe::subscribe))]
        {
            assert!(bytes <= 5 * 1024, "{event}: {bytes} bytes");
        }
    }
}
