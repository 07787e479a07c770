//! Listen addresses as users type them (`--http-addr`, `--otlp-grpc-addr`,
//! `--otlp-http-addr`, their `SKEIN_*` variables and config keys).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;

use serde::Deserialize;

/// Where a server listens. Accepted forms:
/// - `IP:PORT` or `[IPv6]:PORT` (`127.0.0.1:16686`, `[::1]:16686`);
/// - `:PORT`: every interface, as Go programs (Jaeger, Tempo, the
///   OpenTelemetry Collector) read it;
/// - `HOST:PORT` with a host name (`localhost:16686`), resolved when the
///   server binds.
///
/// A bare port, a URL, or an IPv6 address without brackets is refused
/// with a message that shows the form to use.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(crate) enum ListenAddr {
    /// A literal socket address.
    Socket(SocketAddr),
    /// `:PORT`.
    AllInterfaces(u16),
    /// A host name and port, resolved at bind time.
    Host(String, u16),
}

impl ListenAddr {
    /// `127.0.0.1:port`, the defaults: nothing is exposed beyond this
    /// machine unless asked.
    pub(crate) fn loopback(port: u16) -> Self {
        ListenAddr::Socket((Ipv4Addr::LOCALHOST, port).into())
    }

    /// The socket addresses to try binding, in order. `:PORT` is `[::]`
    /// first (which also takes IPv4 where IPv6 sockets are dual-stack, the
    /// Linux default), then `0.0.0.0` for hosts without IPv6, as Go does. A
    /// host name's IPv4 addresses come first, as Go's `net.Listen` prefers
    /// them, so `localhost:16686` is `127.0.0.1:16686` like the default.
    ///
    /// # Errors
    /// When a host name does not resolve.
    pub(crate) fn resolve(&self) -> Result<Vec<SocketAddr>, String> {
        match self {
            ListenAddr::Socket(a) => Ok(vec![*a]),
            ListenAddr::AllInterfaces(p) => {
                Ok(vec![(Ipv6Addr::UNSPECIFIED, *p).into(), (Ipv4Addr::UNSPECIFIED, *p).into()])
            }
            ListenAddr::Host(h, p) => {
                let mut addrs: Vec<SocketAddr> = (h.as_str(), *p)
                    .to_socket_addrs()
                    .map_err(|e| format!("cannot resolve host {h:?}: {e}"))?
                    .collect();
                addrs.sort_by_key(|a| !a.is_ipv4());
                if addrs.is_empty() {
                    return Err(format!("host {h:?} has no address"));
                }
                Ok(addrs)
            }
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Socket(a) => write!(f, "{a}"),
            ListenAddr::AllInterfaces(p) => write!(f, ":{p}"),
            ListenAddr::Host(h, p) => write!(f, "{h}:{p}"),
        }
    }
}

fn port(s: &str, addr: &str) -> Result<u16, String> {
    s.parse().map_err(|_| format!("{addr:?}: the port must be a number from 0 to 65535"))
}

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(ListenAddr::Socket(a));
        }
        if s.contains("://") || s.contains('/') {
            return Err(format!("{s:?} is a URL; give HOST:PORT, e.g. 127.0.0.1:16686 or :16686"));
        }
        if s.is_empty() {
            return Err("empty address; give HOST:PORT, e.g. 127.0.0.1:16686 or :16686".into());
        }
        if let Some(p) = s.strip_prefix(':').filter(|p| !p.contains(':')) {
            return Ok(ListenAddr::AllInterfaces(port(p, s)?));
        }
        if s.starts_with('[') {
            return Err(format!("{s:?}: expected [IPv6]:PORT, e.g. [::1]:16686"));
        }
        let Some((host, p)) = s.rsplit_once(':') else {
            // A bare port or a bare host: show the form with what was typed
            // in its place (issue 9 review: "localhost" gave
            // "127.0.0.1:localhost").
            return Err(if s.bytes().all(|b| b.is_ascii_digit()) {
                format!("{s:?} has no host; give HOST:PORT, e.g. 127.0.0.1:{s} (this machine only) or :{s} (every interface)")
            } else {
                format!("{s:?} has no port; give HOST:PORT, e.g. {s}:16686")
            });
        };
        if host.contains(':') {
            // Not a valid bracketed or literal address (parsed above).
            return Err(format!("{s:?}: an IPv6 address needs brackets, e.g. [::1]:16686"));
        }
        let p = port(p, s)?;
        let valid_host = !host.is_empty()
            && host.len() <= 253
            && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        if !valid_host {
            return Err(format!("{s:?}: {host:?} is not an IP address or a host name"));
        }
        Ok(ListenAddr::Host(host.to_string(), p))
    }
}

impl TryFrom<String> for ListenAddr {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_accepted_forms() {
        let sock = |s: &str| ListenAddr::Socket(s.parse().unwrap());
        for (input, want) in [
            ("127.0.0.1:16686", sock("127.0.0.1:16686")),
            ("0.0.0.0:4317", sock("0.0.0.0:4317")),
            ("[::1]:16686", sock("[::1]:16686")),
            ("[::]:4318", sock("[::]:4318")),
            (" 127.0.0.1:0 ", sock("127.0.0.1:0")),
            (":16686", ListenAddr::AllInterfaces(16686)),
            (":0", ListenAddr::AllInterfaces(0)),
            ("localhost:16686", ListenAddr::Host("localhost".into(), 16686)),
            (
                "skein-0.skein.svc.cluster.local:4317",
                ListenAddr::Host("skein-0.skein.svc.cluster.local".into(), 4317),
            ),
        ] {
            assert_eq!(input.parse::<ListenAddr>(), Ok(want.clone()), "{input}");
            // Shown as typed (less surrounding blanks), so errors quote it.
            assert_eq!(want.to_string(), input.trim(), "{input}");
        }
    }

    #[test]
    fn test_refused_forms_say_what_to_type() {
        for (input, hint) in [
            ("16686", "has no host; give HOST:PORT, e.g. 127.0.0.1:16686"),
            ("", "empty address"),
            ("localhost", "has no port; give HOST:PORT, e.g. localhost:16686"),
            (":", "port must be a number"),
            (":99999", "port must be a number"),
            ("localhost:http", "port must be a number"),
            ("::1:16686", "needs brackets"),
            ("[::1]", "expected [IPv6]:PORT"),
            ("[nope]:1", "expected [IPv6]:PORT"),
            ("http://localhost:16686", "is a URL"),
            ("local host:1", "not an IP address or a host name"),
        ] {
            let err = input.parse::<ListenAddr>().unwrap_err();
            assert!(err.contains(hint), "{input:?}: {err}");
        }
    }

    #[test]
    fn test_resolve() {
        assert_eq!(
            ListenAddr::AllInterfaces(80).resolve().unwrap(),
            vec!["[::]:80".parse::<SocketAddr>().unwrap(), "0.0.0.0:80".parse().unwrap()]
        );
        let local = ListenAddr::Host("localhost".into(), 16686).resolve().unwrap();
        assert_eq!(local[0], "127.0.0.1:16686".parse::<SocketAddr>().unwrap(), "{local:?}");
        assert!(ListenAddr::Host("no-such-host.invalid".into(), 1).resolve().is_err());
    }

    #[test]
    fn test_config_file_form() {
        #[derive(Deserialize)]
        struct C {
            a: ListenAddr,
        }
        let c: C = toml::from_str("a = \":4317\"").unwrap();
        assert_eq!(c.a, ListenAddr::AllInterfaces(4317));
        assert!(toml::from_str::<C>("a = \"4317\"").is_err());
    }
}
