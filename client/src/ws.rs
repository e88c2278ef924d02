//! `GET /v1/states/ws`: the state stream over a WebSocket, one text
//! message per state (the JSON an SSE frame's `data` carries).

use futures::StreamExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

#[derive(Debug, thiserror::Error)]
pub enum WsError {
    /// The service answered the handshake with an HTTP error (a cap, say).
    #[error("the handshake was answered {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("bad request: {0}")]
    Request(String),
    #[error(transparent)]
    Socket(#[from] tungstenite::Error),
}

impl WsError {
    /// The JSON `error` code of a refused handshake.
    pub fn code(&self) -> Option<String> {
        match self {
            WsError::Refused { body, .. } => serde_json::from_str::<serde_json::Value>(body)
                .ok()?
                .get("error")?
                .as_str()
                .map(str::to_owned),
            _ => None,
        }
    }
}

/// An open state socket.
pub struct StateSocket(WebSocketStream<MaybeTlsStream<TcpStream>>);

/// `url` is the service's `http://` (or `ws://`) URL of the route;
/// `headers` go on the handshake (`last-event-id`, `x-forwarded-for`).
pub async fn connect(url: &str, headers: &[(&str, &str)]) -> Result<StateSocket, WsError> {
    let url = match url.strip_prefix("http") {
        Some(rest) => format!("ws{rest}"),
        None => url.to_owned(),
    };
    let mut request = url.into_client_request()?;
    for (name, value) in headers {
        let value = HeaderValue::from_str(value).map_err(|e| WsError::Request(e.to_string()))?;
        let name = tungstenite::http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| WsError::Request(e.to_string()))?;
        request.headers_mut().insert(name, value);
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(StateSocket(socket)),
        Err(tungstenite::Error::Http(response)) => Err(WsError::Refused {
            status: response.status().as_u16(),
            body: String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                .into_owned(),
        }),
        Err(e) => Err(e.into()),
    }
}

impl StateSocket {
    /// The next state's JSON; `None` once the service closed the socket.
    /// Pings are answered by the library while it reads.
    pub async fn next_text(&mut self) -> Option<Result<tungstenite::Utf8Bytes, WsError>> {
        loop {
            match self.0.next().await? {
                Ok(Message::Text(text)) => return Some(Ok(text)),
                Ok(Message::Close(_)) => return None,
                Ok(_) => continue,
                Err(e) => return Some(Err(e.into())),
            }
        }
    }

    /// Closes with a Close frame and waits for the service's answer.
    pub async fn close(mut self) -> Result<(), WsError> {
        self.0.close(None).await?;
        while let Some(message) = self.0.next().await {
            message?;
        }
        Ok(())
    }
}
