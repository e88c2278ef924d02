//! The record on the `press_button` topic (version 1, JSON):
//!
//! ```json
//! {"v":1,"request_id":"…","kind":"press","client":"…","accepted_at_ms":1700000000000}
//! ```
//!
//! `client` is a pseudonymous id chosen by the caller, never an address.
//! Fields added later are ignored by this version; a record with another
//! `v` or `kind` is poison and goes to the dead-letter topic.

use serde::{Deserialize, Serialize};

pub const RECORD_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PressRecord {
    pub v: u32,
    pub request_id: String,
    pub kind: String,
    pub client: String,
    pub accepted_at_ms: i64,
    /// ISO 3166 alpha-2 code of the client's country, or `unknown`; absent
    /// in records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

/// Why a record could not be folded. [`DecodeError::code`] is the stable
/// reason written into the dead-letter record's headers.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record has no payload")]
    Empty,
    #[error("payload of {0} bytes is over the {MAX_RECORD_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("payload is not a JSON object: {0}")]
    Malformed(String),
    #[error("unknown record version {0}")]
    UnknownVersion(u64),
    #[error("unknown record kind `{0}`")]
    UnknownKind(String),
    #[error("invalid field: {0}")]
    InvalidField(String),
}

/// The service's records are about 200 bytes; anything past this was not
/// written by it, and is not parsed.
pub const MAX_RECORD_BYTES: usize = 16 * 1024;

impl DecodeError {
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty_payload",
            DecodeError::TooLarge(_) => "too_large",
            DecodeError::Malformed(_) => "malformed_json",
            DecodeError::UnknownVersion(_) => "unknown_version",
            DecodeError::UnknownKind(_) => "unknown_kind",
            DecodeError::InvalidField(_) => "invalid_field",
        }
    }
}

impl PressRecord {
    pub fn new(request_id: String, client: String, accepted_at_ms: i64) -> Self {
        PressRecord {
            v: RECORD_VERSION,
            request_id,
            kind: "press".to_owned(),
            client,
            accepted_at_ms,
            country: None,
        }
    }

    pub fn with_country(mut self, country: String) -> Self {
        self.country = Some(country);
        self
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a press record always serialises")
    }

    pub fn decode(payload: Option<&[u8]>) -> Result<PressRecord, DecodeError> {
        let bytes = match payload {
            None | Some([]) => return Err(DecodeError::Empty),
            Some(b) if b.len() > MAX_RECORD_BYTES => return Err(DecodeError::TooLarge(b.len())),
            Some(b) => b,
        };
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        let Some(object) = value.as_object() else {
            return Err(DecodeError::Malformed("not an object".to_owned()));
        };
        match object.get("v").and_then(|v| v.as_u64()) {
            Some(v) if v == u64::from(RECORD_VERSION) => {}
            Some(v) => return Err(DecodeError::UnknownVersion(v)),
            None => {
                return Err(DecodeError::InvalidField(
                    "`v` must be an unsigned integer".to_owned(),
                ));
            }
        }
        match object.get("kind").and_then(|k| k.as_str()) {
            Some("press") => {}
            Some(other) => return Err(DecodeError::UnknownKind(other.to_owned())),
            None => {
                return Err(DecodeError::InvalidField(
                    "`kind` must be a string".to_owned(),
                ));
            }
        }
        serde_json::from_value(value).map_err(|e| DecodeError::InvalidField(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let r = PressRecord::new("r1".into(), "c1".into(), 42);
        assert_eq!(PressRecord::decode(Some(&r.encode())), Ok(r));
    }

    #[test]
    fn huge_payloads_are_refused_unparsed() {
        let mut huge =
            br#"{"v":1,"kind":"press","request_id":"r","client":"c","accepted_at_ms":1,"pad":""#
                .to_vec();
        huge.extend(std::iter::repeat_n(b'x', MAX_RECORD_BYTES));
        huge.extend(br#""}"#);
        assert_eq!(
            PressRecord::decode(Some(&huge)).map_err(|e| e.code()),
            Err("too_large")
        );
    }

    #[test]
    fn newer_fields_are_ignored() {
        let raw = br#"{"v":1,"request_id":"r","kind":"press","client":"c","accepted_at_ms":1,"extra":true}"#;
        assert!(PressRecord::decode(Some(raw)).is_ok());
    }

    #[test]
    fn poison_is_named() {
        let cases: [(&[u8], &str); 6] = [
            (b"", "empty_payload"),
            (b"not json", "malformed_json"),
            (b"[1]", "malformed_json"),
            (br#"{"v":2,"kind":"press"}"#, "unknown_version"),
            (br#"{"v":1,"kind":"unpress"}"#, "unknown_kind"),
            (
                br#"{"v":1,"kind":"press","request_id":"r"}"#,
                "invalid_field",
            ),
        ];
        for (raw, code) in cases {
            let err = PressRecord::decode(Some(raw)).expect_err("poison");
            assert_eq!(err.code(), code, "{raw:?}");
        }
        assert_eq!(PressRecord::decode(None), Err(DecodeError::Empty));
    }
}
