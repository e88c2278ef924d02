//! The client's country, coarse, from an offline database: the
//! geo-whois-asn-country MMDB (sapics/ip-location-db, npm package
//! `@ip-location-db/geo-whois-asn-country-mmdb`; data CC BY 4.0 by the NRO,
//! package CC0), installed by scripts/setup. Only the code reaches the
//! record; the address is never stored.

use serde::Deserialize;
use std::net::IpAddr;
use std::path::Path;

pub const UNKNOWN: &str = "unknown";

pub struct Geo {
    reader: Option<maxminddb::Reader<Vec<u8>>>,
}

#[derive(Deserialize)]
struct Record<'a> {
    country_code: Option<&'a str>,
}

impl Geo {
    /// The database at `path`; every address is `unknown` when `path` is
    /// empty or the file is missing (said in the log at start-up).
    pub fn open(path: &str) -> Geo {
        if path.is_empty() {
            return Geo { reader: None };
        }
        match maxminddb::Reader::open_readfile(Path::new(path)) {
            Ok(reader) => Geo {
                reader: Some(reader),
            },
            Err(e) => {
                tracing::warn!(path, error = %e, "no country database: every country is `unknown`");
                Geo { reader: None }
            }
        }
    }

    /// ISO 3166 alpha-2 code, or `unknown` for loopback, private and
    /// unlisted addresses.
    pub fn country(&self, address: Option<IpAddr>) -> String {
        let (Some(reader), Some(address)) = (&self.reader, address.map(|a| a.to_canonical()))
        else {
            return UNKNOWN.to_owned();
        };
        if !is_public(address) {
            return UNKNOWN.to_owned();
        }
        match reader.lookup::<Record<'_>>(address) {
            Ok(Some(Record {
                country_code: Some(code),
            })) if code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase()) => {
                code.to_owned()
            }
            _ => UNKNOWN.to_owned(),
        }
    }
}

fn is_public(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => {
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation())
        }
        IpAddr::V6(v6) => {
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_unique_local()
                || v6.is_unicast_link_local())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_loopback_addresses_are_unknown_without_a_lookup() {
        let geo = Geo { reader: None };
        assert_eq!(geo.country(Some("8.8.8.8".parse().unwrap())), UNKNOWN);
        assert!(!is_public("127.0.0.1".parse().unwrap()));
        assert!(!is_public("10.1.2.3".parse().unwrap()));
        assert!(!is_public("192.168.0.1".parse().unwrap()));
        assert!(!is_public("203.0.113.7".parse().unwrap()));
        assert!(!is_public("fd00::1".parse().unwrap()));
        assert!(is_public("8.8.8.8".parse().unwrap()));
    }
}
