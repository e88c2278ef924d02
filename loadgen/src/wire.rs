//! Presses on the wire: HTTP/1.1 keep-alive connections driven with
//! hyper's connection-level client, one pool per sending thread.
//!
//! A general client (reqwest over hyper-util's pool) parses the URL, builds
//! a header map, looks up a pool keyed by host and hands each request to the
//! connection's task through channels that cross threads: at the stack's
//! ceiling that cost the generator as much CPU per press as the broker. Here
//! a press is one pre-built request on a connection this thread owns, so a
//! run measures the stack rather than its client. Idle connections are
//! reused last-in first-out, so a low rate keeps few of them open.

use button_client::{Accepted, Rejected};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use std::cell::RefCell;
use std::time::Duration;
use tokio::net::TcpStream;

/// How long a press may take before it counts as unanswered.
pub const PRESS_TIMEOUT: Duration = Duration::from_secs(30);

const PRESS_PATH: &str = "/v1/events/press";

/// Why a service URL cannot be pressed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("service URL {url:?}: {reason}")]
    Url { url: String, reason: String },
}

/// Why a press got no answer.
#[derive(Debug, thiserror::Error)]
enum Exchange {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// One service instance's press endpoint and its idle connections.
struct Endpoint {
    /// `host:port`, what connections dial and `Host:` names.
    authority: String,
    host_header: HeaderValue,
    uri: Uri,
    idle: RefCell<Vec<SendRequest<Full<Bytes>>>>,
}

/// The presses of one thread (not `Send`: its connections' tasks run on
/// that thread's `LocalSet`).
pub struct PressClient {
    endpoints: Vec<Endpoint>,
}

impl PressClient {
    /// A client for these service base URLs (`http://host:port`).
    pub fn new(service_urls: &[String]) -> Result<PressClient, WireError> {
        let endpoints = service_urls
            .iter()
            .map(|url| endpoint(url))
            .collect::<Result<_, _>>()?;
        Ok(PressClient { endpoints })
    }

    /// Service instances this client spreads presses over.
    pub fn instances(&self) -> usize {
        self.endpoints.len()
    }

    /// `POST /v1/events/press` with `body` on instance `instance`.
    /// `Rejected::status` is 0 when no answer came (connect or transport
    /// failure, timeout): the press may still have been stored.
    pub async fn press(&self, instance: usize, body: Bytes) -> Result<Accepted, Rejected> {
        let endpoint = &self.endpoints[instance % self.endpoints.len()];
        match tokio::time::timeout(PRESS_TIMEOUT, exchange(endpoint, body)).await {
            Ok(Ok((status, body))) => answer(status, &body),
            Ok(Err(e)) => Err(Rejected {
                status: 0,
                code: format!("transport: {e}"),
            }),
            Err(_) => Err(Rejected {
                status: 0,
                code: "transport: timed out".into(),
            }),
        }
    }
}

fn endpoint(url: &str) -> Result<Endpoint, WireError> {
    let bad = |reason: &str| WireError::Url {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let parsed: Uri = url.parse().map_err(|_| bad("not a URL"))?;
    if parsed.scheme_str() != Some("http") {
        return Err(bad("only http:// is supported"));
    }
    let authority = parsed
        .authority()
        .ok_or_else(|| bad("no host"))?
        .as_str()
        .to_owned();
    let authority = if parsed.port().is_some() {
        authority
    } else {
        format!("{authority}:80")
    };
    Ok(Endpoint {
        host_header: HeaderValue::from_str(&authority).map_err(|_| bad("bad host"))?,
        authority,
        uri: Uri::from_static(PRESS_PATH),
        idle: RefCell::new(Vec::new()),
    })
}

/// One request and its whole answer on an idle connection, or a new one.
async fn exchange(endpoint: &Endpoint, body: Bytes) -> Result<(u16, Bytes), Exchange> {
    // A reused connection that fails before the request is written (the
    // service restarted) is dropped for the next one, as a browser would.
    let mut sender = loop {
        match take_idle(endpoint) {
            Some(mut s) => {
                if s.ready().await.is_ok() {
                    break s;
                }
            }
            None => {
                let mut s = connect(endpoint).await?;
                s.ready().await?;
                break s;
            }
        }
    };
    let request = Request::builder()
        .method(Method::POST)
        .uri(endpoint.uri.clone())
        .header(HOST, endpoint.host_header.clone())
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .body(Full::new(body))
        .expect("a request from valid parts");
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    // Only a connection whose answer was read in full goes back to the pool.
    endpoint.idle.borrow_mut().push(sender);
    Ok((status, body))
}

fn take_idle(endpoint: &Endpoint) -> Option<SendRequest<Full<Bytes>>> {
    let mut idle = endpoint.idle.borrow_mut();
    // A connection the peer closed is dropped here; one whose task has not
    // yet asked for its next request is still good (`ready` waits for it).
    while let Some(s) = idle.pop() {
        if !s.is_closed() {
            return Some(s);
        }
    }
    None
}

/// A new keep-alive connection; its task runs on this thread.
async fn connect(endpoint: &Endpoint) -> Result<SendRequest<Full<Bytes>>, Exchange> {
    let stream = TcpStream::connect(endpoint.authority.as_str())
        .await
        .map_err(Exchange::Connect)?;
    // Presses are small: send each at once rather than wait for an ACK.
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::task::spawn_local(async move {
        // Ends when the pool drops the sender or the peer closes.
        let _ = connection.await;
    });
    Ok(sender)
}

/// A 202's body as the verdict needs it, or the stable `error` code.
pub fn answer(status: u16, body: &[u8]) -> Result<Accepted, Rejected> {
    if status == 202 {
        return serde_json::from_slice(body).map_err(|e| Rejected {
            status,
            code: format!("bad 202 body: {e}"),
        });
    }
    #[derive(serde::Deserialize)]
    struct Refusal {
        error: Option<String>,
    }
    let code = serde_json::from_slice::<Refusal>(body)
        .ok()
        .and_then(|r| r.error)
        .unwrap_or_else(|| "<no code>".to_owned());
    Err(Rejected { status, code })
}
