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
//!
//! A live check (`GET /health/live`, the service's trivial endpoint) takes
//! the same path on the same connections, so the two are measured by the
//! same client.

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
/// The service's trivial endpoint: what the HTTP stack alone serves.
const LIVE_PATH: &str = "/health/live";
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Why a service URL cannot be pressed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("service URL {url:?}: {reason}")]
    Url { url: String, reason: String },
}

/// How a press failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Never written to the service (no connection could be made, or
    /// what the press needed first failed): it cannot have been stored.
    NotSent { code: &'static str, detail: String },
    /// Written (or maybe written), and no answer came: it may have been
    /// stored without its 202.
    NoAnswer(String),
    /// An answer other than a well-formed 202 (a 200, for a live check).
    Refused { status: u16, code: String },
}

impl Failure {
    /// A general client's refusal (`button_client`): status 0 is no answer.
    pub fn from_rejected(r: Rejected) -> Failure {
        match r.status {
            0 => Failure::NoAnswer(r.code),
            status => Failure::Refused {
                status,
                code: r.code,
            },
        }
    }
}

/// One service instance's press and live endpoints and its idle
/// connections (a connection carries either).
struct Endpoint {
    /// `host:port`, what connections dial and `Host:` names.
    authority: String,
    host_header: HeaderValue,
    uri: Uri,
    live_uri: Uri,
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
    pub async fn press(&self, instance: usize, body: Bytes) -> Result<Accepted, Failure> {
        self.press_keyed(instance, body, None).await
    }

    /// A press carrying `Idempotency-Key: key`, so that a retry of it on
    /// any instance is the same press to the service.
    pub async fn press_keyed(
        &self,
        instance: usize,
        body: Bytes,
        key: Option<&HeaderValue>,
    ) -> Result<Accepted, Failure> {
        let endpoint = &self.endpoints[instance % self.endpoints.len()];
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(endpoint.uri.clone())
            .header(HOST, endpoint.host_header.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(key) = key {
            request = request.header(IDEMPOTENCY_KEY, key.clone());
        }
        let request = request
            .body(Full::new(body))
            .expect("a request from valid parts");
        let (status, body) = timed_exchange(endpoint, request).await?;
        answer(status, &body)
    }

    /// `GET /health/live` on instance `instance`, on the same connections
    /// as presses: a 200 is success.
    pub async fn live(&self, instance: usize) -> Result<(), Failure> {
        let endpoint = &self.endpoints[instance % self.endpoints.len()];
        let request = Request::builder()
            .method(Method::GET)
            .uri(endpoint.live_uri.clone())
            .header(HOST, endpoint.host_header.clone())
            .body(Full::new(Bytes::new()))
            .expect("a request from valid parts");
        match timed_exchange(endpoint, request).await? {
            (200, _) => Ok(()),
            (status, body) => Err(refusal(status, &body)),
        }
    }
}

/// `exchange` within `PRESS_TIMEOUT`.
async fn timed_exchange(
    endpoint: &Endpoint,
    request: Request<Full<Bytes>>,
) -> Result<(u16, Bytes), Failure> {
    match tokio::time::timeout(PRESS_TIMEOUT, exchange(endpoint, request)).await {
        Ok(result) => result,
        // Where it timed out is not known: counted as maybe stored.
        Err(_) => Err(Failure::NoAnswer("timed out".into())),
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
        live_uri: Uri::from_static(LIVE_PATH),
        idle: RefCell::new(Vec::new()),
    })
}

/// One request and its whole answer on an idle connection, or a new one.
async fn exchange(
    endpoint: &Endpoint,
    mut request: Request<Full<Bytes>>,
) -> Result<(u16, Bytes), Failure> {
    let not_sent = |detail: String| Failure::NotSent {
        code: "connect_failed",
        detail,
    };
    loop {
        let (mut sender, reused) = match take_idle(endpoint) {
            Some(s) => (s, true),
            None => (connect(endpoint).await.map_err(not_sent)?, false),
        };
        if let Err(e) = sender.ready().await {
            // A kept-alive connection the service closed meanwhile (it
            // restarted): the next one is tried, as a browser would.
            if reused {
                continue;
            }
            return Err(not_sent(e.to_string()));
        }
        let response = match sender.try_send_request(request).await {
            Ok(r) => r,
            Err(mut e) => match e.take_message() {
                // Not written: the same request goes on another connection.
                Some(unsent) if reused => {
                    request = unsent;
                    continue;
                }
                Some(_) => return Err(not_sent(e.into_error().to_string())),
                None => return Err(Failure::NoAnswer(e.into_error().to_string())),
            },
        };
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| Failure::NoAnswer(e.to_string()))?
            .to_bytes();
        // Only a connection whose answer was read in full goes back.
        endpoint.idle.borrow_mut().push(sender);
        return Ok((status, body));
    }
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
async fn connect(endpoint: &Endpoint) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(endpoint.authority.as_str())
        .await
        .map_err(|e| format!("connect {}: {e}", endpoint.authority))?;
    // Presses are small: send each at once rather than wait for an ACK.
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::task::spawn_local(async move {
        // Ends when the pool drops the sender or the peer closes.
        let _ = connection.await;
    });
    Ok(sender)
}

/// A 202's body as the verdict needs it, or the stable `error` code.
pub fn answer(status: u16, body: &[u8]) -> Result<Accepted, Failure> {
    if status == 202 {
        let accepted: Accepted = serde_json::from_slice(body).map_err(|e| Failure::Refused {
            status,
            code: format!("bad 202 body: {e}"),
        })?;
        if accepted.position().is_none() && accepted.outbox_id.is_none() {
            return Err(Failure::Refused {
                status,
                code: "bad 202 body: no partition and offset, no outbox_id".to_owned(),
            });
        }
        return Ok(accepted);
    }
    Err(refusal(status, body))
}

/// An unwanted answer, with the body's `error` code if it has one.
fn refusal(status: u16, body: &[u8]) -> Failure {
    #[derive(serde::Deserialize)]
    struct Refusal {
        error: Option<String>,
    }
    let code = serde_json::from_slice::<Refusal>(body)
        .ok()
        .and_then(|r| r.error)
        .unwrap_or_else(|| "<no code>".to_owned());
    Failure::Refused { status, code }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const ACCEPTED: &str = r#"{"request_id":"r-1","partition":1,"offset":41,"accepted_at_ms":1}"#;

    /// A server that answers every request with `answer`, then closes the
    /// connection when `close` says so; counts connections.
    async fn server(
        answer: String,
        close: bool,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    loop {
                        // Each request fits one read here: "{}" bodies.
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        if socket.write_all(answer.as_bytes()).await.is_err() || close {
                            return;
                        }
                    }
                });
            }
        });
        (url, connections)
    }

    fn http(status: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    async fn local<F: std::future::Future>(f: F) -> F::Output {
        tokio::task::LocalSet::new().run_until(f).await
    }

    async fn press_once(url: String) -> Result<Accepted, Failure> {
        local(async {
            PressClient::new(&[url])
                .unwrap()
                .press(0, Bytes::from_static(b"{}"))
                .await
        })
        .await
    }

    #[test]
    fn a_202_names_a_position_or_an_outbox_row() {
        let outbox = answer(
            202,
            br#"{"request_id":"r","outbox_id":7,"accepted_at_ms":1}"#,
        )
        .expect("an outbox row");
        assert_eq!((outbox.position(), outbox.outbox_id), (None, Some(7)));
        let log = answer(202, ACCEPTED.as_bytes()).expect("a position");
        assert_eq!(log.position(), Some((1, 41)));
        let Err(Failure::Refused { code, .. }) =
            answer(202, br#"{"request_id":"r","accepted_at_ms":1}"#)
        else {
            panic!("a 202 that names nothing is refused");
        };
        assert!(
            code.contains("no partition and offset, no outbox_id"),
            "{code}"
        );
    }

    #[tokio::test]
    async fn a_202_is_read_and_its_connection_kept_alive() {
        let (url, connections) = server(http("202 Accepted", ACCEPTED), false).await;
        local(async {
            let client = PressClient::new(&[url]).unwrap();
            for _ in 0..3 {
                let a = client.press(0, Bytes::from_static(b"{}")).await.unwrap();
                assert_eq!(
                    (a.partition, a.offset, a.request_id.as_str()),
                    (Some(1), Some(41), "r-1")
                );
            }
        })
        .await;
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_service_closed_is_replaced_not_failed() {
        let (url, connections) = server(http("202 Accepted", ACCEPTED), true).await;
        local(async {
            let client = PressClient::new(&[url]).unwrap();
            // Back to back, a closed connection may still look idle: its
            // request goes on a new one. With a pause, it is seen closed.
            for i in 0..20 {
                client.press(0, Bytes::from_static(b"{}")).await.unwrap();
                if i % 2 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        })
        .await;
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 20);
    }

    #[tokio::test]
    async fn a_live_check_is_a_200_on_the_connections_presses_use() {
        // Answers by request line: a live check gets 200 "ok", a press 202.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    loop {
                        let n = match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let answer = if buf[..n].starts_with(b"GET /health/live HTTP/1.1\r\n") {
                            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_owned()
                        } else {
                            http("202 Accepted", ACCEPTED)
                        };
                        if socket.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        local(async {
            let client = PressClient::new(&[url]).unwrap();
            for _ in 0..3 {
                client.live(0).await.unwrap();
                client.press(0, Bytes::from_static(b"{}")).await.unwrap();
            }
        })
        .await;
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1);

        let body = r#"{"error":"shutting_down"}"#;
        let (url, _) = server(http("503 Service Unavailable", body), false).await;
        let got = local(async { PressClient::new(&[url]).unwrap().live(0).await }).await;
        assert_eq!(
            got.unwrap_err(),
            Failure::Refused {
                status: 503,
                code: "shutting_down".into()
            }
        );
    }

    #[tokio::test]
    async fn a_refusal_keeps_its_status_and_code() {
        let body = r#"{"error":"rate_limited","message":"slow down"}"#;
        let (url, _) = server(http("429 Too Many Requests", body), false).await;
        let got = press_once(url).await;
        assert_eq!(
            got.unwrap_err(),
            Failure::Refused {
                status: 429,
                code: "rate_limited".into()
            }
        );
    }

    #[tokio::test]
    async fn no_service_listening_is_not_sent_rather_than_unanswered() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let got = press_once(format!("http://127.0.0.1:{port}")).await;
        assert!(
            matches!(
                got,
                Err(Failure::NotSent {
                    code: "connect_failed",
                    ..
                })
            ),
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn a_service_that_drops_the_request_unanswered_may_have_stored_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = socket.read(&mut buf).await;
            // Read, then gone without a word.
        });
        let got = press_once(url).await;
        assert!(matches!(got, Err(Failure::NoAnswer(_))), "{got:?}");
    }

    #[test]
    fn urls_other_than_plain_http_are_refused_up_front() {
        assert!(PressClient::new(&["https://example.org".into()]).is_err());
        assert!(PressClient::new(&["not a url".into()]).is_err());
        assert!(PressClient::new(&["http://127.0.0.1:8080".into()]).is_ok());
    }
}
