//! Outbound HTTP proxies: `HTTPS_PROXY` for `https://` servers, `HTTP_PROXY`
//! for `http://` ones, `NO_PROXY` for the hosts to reach directly.
//!
//! A proxied connection is a tunnel: the client connects to the proxy over
//! TCP, sends `CONNECT host:port HTTP/1.1` (with `Proxy-Authorization: Basic
//! …` when the proxy URL carries `user:password@`), expects a 2xx answer and
//! then speaks to the server through it; for `https://` servers, TLS runs
//! end to end over the tunnel, so the proxy sees only the host name.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use base64::Engine as _;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The longest answer to CONNECT the client reads (status line and headers).
const MAX_CONNECT_RESPONSE: usize = 16 * 1024;

/// One proxy: where it is and, optionally, its credentials.
///
/// `Debug` and `Display` show `host:port` only, never the credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    host: String,
    port: u16,
    /// The `Proxy-Authorization` header value, when the URL had user:password.
    authorization: Option<String>,
}

impl Proxy {
    /// Parses a proxy URL: `http://[user:password@]host[:port][/]`, or the
    /// same without the scheme. The port defaults to 80. `https://` proxies
    /// (TLS to the proxy itself) are not supported.
    pub fn parse(url: &str) -> Result<Proxy, String> {
        let url = url.trim();
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => {
                return Err(format!(
                    "proxy scheme {scheme:?} is not supported: use an http:// proxy URL"
                ));
            }
            None => url,
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => (Some(userinfo), host_port),
            None => (None, authority),
        };
        let (host, port) = split_host_port(host_port)
            .ok_or_else(|| "the proxy URL has no valid host[:port]".to_owned())?;
        let authorization = userinfo.map(|userinfo| {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            let credentials = format!("{}:{}", percent_decode(user), percent_decode(password));
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(credentials)
            )
        });
        Ok(Proxy {
            host,
            port: port.unwrap_or(80),
            authorization,
        })
    }

    /// The proxy's host.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the URL carried credentials.
    pub fn has_credentials(&self) -> bool {
        self.authorization.is_some()
    }

    fn address(&self) -> String {
        join_host_port(&self.host, self.port)
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "Proxy({})", self.address())
    }
}

impl fmt::Display for Proxy {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.address())
    }
}

/// The proxy settings of a process: which proxy each kind of URL goes
/// through, and which hosts bypass it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxySettings {
    /// For `https://` URLs (`HTTPS_PROXY`).
    pub https: Option<Proxy>,
    /// For `http://` URLs (`HTTP_PROXY`).
    pub http: Option<Proxy>,
    /// Hosts reached directly (`NO_PROXY`).
    pub no_proxy: NoProxy,
}

impl ProxySettings {
    /// No proxy at all.
    pub fn none() -> ProxySettings {
        ProxySettings::default()
    }

    /// From the environment: `https_proxy`/`HTTPS_PROXY`,
    /// `http_proxy`/`HTTP_PROXY` and `no_proxy`/`NO_PROXY` (the lowercase
    /// name wins when both are set; empty values count as unset).
    pub fn from_env() -> Result<ProxySettings, String> {
        ProxySettings::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`ProxySettings::from_env`], reading variables with `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<ProxySettings, String> {
        let variable = |name: &str| {
            [name.to_ascii_lowercase(), name.to_owned()]
                .into_iter()
                .find_map(|key| lookup(&key).filter(|value| !value.trim().is_empty()))
        };
        let parse = |name: &str| -> Result<Option<Proxy>, String> {
            variable(name)
                .map(|value| Proxy::parse(&value).map_err(|error| format!("{name}: {error}")))
                .transpose()
        };
        Ok(ProxySettings {
            https: parse("HTTPS_PROXY")?,
            http: parse("HTTP_PROXY")?,
            no_proxy: NoProxy::parse(&variable("NO_PROXY").unwrap_or_default()),
        })
    }

    /// The proxy to reach `uri` through, if any.
    pub fn proxy_for(&self, uri: &http::Uri) -> Option<&Proxy> {
        let proxy = match uri.scheme_str() {
            Some("https") => self.https.as_ref(),
            Some("http") => self.http.as_ref(),
            _ => None,
        }?;
        let host = uri.host()?;
        let port = uri.port_u16().unwrap_or(default_port(uri));
        if self.no_proxy.matches(host, port) {
            None
        } else {
            Some(proxy)
        }
    }
}

/// `NO_PROXY`: comma-separated hosts reached without the proxy. An entry
/// matches the host itself and every subdomain (`example.com` and
/// `.example.com` both match `ci.example.com`); `*` matches everything; an
/// entry with `:port` matches that port only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NoProxy {
    all: bool,
    entries: Vec<(String, Option<u16>)>,
}

impl NoProxy {
    /// Parses a `NO_PROXY` value.
    pub fn parse(text: &str) -> NoProxy {
        let mut no_proxy = NoProxy::default();
        for entry in text
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
        {
            if entry == "*" {
                no_proxy.all = true;
                continue;
            }
            let (host, port) = match split_host_port(entry) {
                Some((host, port)) => (host, port),
                None => (entry.to_owned(), None),
            };
            let host = host
                .trim_start_matches("*.")
                .trim_start_matches('.')
                .to_ascii_lowercase();
            if !host.is_empty() {
                no_proxy.entries.push((host, port));
            }
        }
        no_proxy
    }

    /// Whether `host:port` is reached directly.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        if self.all {
            return true;
        }
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        self.entries.iter().any(|(entry, entry_port)| {
            let host_matches = host == *entry
                || host
                    .strip_suffix(entry.as_str())
                    .is_some_and(|prefix| prefix.ends_with('.'));
            host_matches && entry_port.is_none_or(|entry_port| entry_port == port)
        })
    }
}

/// Splits `host[:port]` (with `[v6]` brackets) into the host without
/// brackets and the port.
fn split_host_port(text: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(port) => Some(port.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return (!host.is_empty()).then(|| (host.to_owned(), port));
    }
    let (host, port) = match text.rsplit_once(':') {
        // More than one colon without brackets: a bare IPv6 address.
        Some((host, _)) if host.contains(':') => (text, None),
        Some((host, port)) => (host, Some(port.parse().ok()?)),
        None => (text, None),
    };
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn default_port(uri: &http::Uri) -> u16 {
    if uri.scheme_str() == Some("https") {
        443
    } else {
        80
    }
}

/// `%XX` decoding for the user name and password of a proxy URL.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if byte == b'%'
            && let Some(hex) = bytes.get(index + 1..index + 3)
            && let Ok(hex) = std::str::from_utf8(hex)
            && let Ok(value) = u8::from_str_radix(hex, 16)
        {
            out.push(value);
            index += 3;
            continue;
        }
        out.push(byte);
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A tower connector that opens a CONNECT tunnel through a proxy to the
/// host and port of the URI it is called with. tonic layers TLS on top for
/// `https://` endpoints that have a TLS configuration.
#[derive(Clone, Debug)]
pub struct ProxyConnector {
    proxy: Proxy,
    nodelay: bool,
}

impl ProxyConnector {
    /// A connector through `proxy`.
    pub fn new(proxy: Proxy) -> ProxyConnector {
        ProxyConnector {
            proxy,
            nodelay: true,
        }
    }
}

type ConnectFuture = Pin<Box<dyn Future<Output = std::io::Result<TokioIo<TcpStream>>> + Send>>;

impl tower::Service<http::Uri> for ProxyConnector {
    type Response = TokioIo<TcpStream>;
    type Error = std::io::Error;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let proxy = self.proxy.clone();
        let nodelay = self.nodelay;
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| invalid_input("the server URL has no host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(default_port(&uri));
            let stream = tunnel(&proxy, &host, port).await?;
            stream.set_nodelay(nodelay)?;
            Ok(TokioIo::new(stream))
        })
    }
}

fn invalid_input(message: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, message.to_owned())
}

/// Connects to the proxy and opens a tunnel to `host:port`.
pub async fn tunnel(proxy: &Proxy, host: &str, port: u16) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect((proxy.host.as_str(), proxy.port))
        .await
        .map_err(|error| {
            std::io::Error::new(
                error.kind(),
                format!("cannot connect to the proxy {proxy}: {error}"),
            )
        })?;
    let target = join_host_port(host, port);
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(authorization) = &proxy.authorization {
        request.push_str("Proxy-Authorization: ");
        request.push_str(authorization);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    // Read byte by byte up to the blank line: nothing after it may be
    // consumed, it belongs to the tunnel.
    let mut response = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !response.ends_with(b"\r\n\r\n") && !response.ends_with(b"\n\n") {
        if response.len() >= MAX_CONNECT_RESPONSE {
            return Err(std::io::Error::other(format!(
                "the proxy {proxy} sent an over-long answer to CONNECT"
            )));
        }
        if stream.read(&mut byte).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the proxy {proxy} closed the connection during CONNECT"),
            ));
        }
        response.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&response);
    let status_line = text.lines().next().unwrap_or("").trim();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok());
    match status {
        Some(200..=299) => Ok(stream),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            format!("the proxy {proxy} refused the tunnel to {target}: {status_line:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> ProxySettings {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        ProxySettings::from_lookup(|name| {
            pairs
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        })
        .expect("settings")
    }

    #[test]
    fn proxy_urls_parse_with_and_without_credentials() {
        let proxy = Proxy::parse("http://alice:p%40ss@proxy.corp:3128/").expect("parse");
        assert_eq!((proxy.host(), proxy.port()), ("proxy.corp", 3128));
        assert_eq!(
            proxy.authorization.as_deref(),
            Some(
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode("alice:p@ss")
                )
                .as_str()
            )
        );
        let debug = format!("{proxy:?} {proxy}");
        assert!(
            !debug.contains("alice") && !debug.contains("p%40ss"),
            "{debug}"
        );

        let proxy = Proxy::parse("proxy.corp").expect("parse");
        assert_eq!((proxy.host(), proxy.port()), ("proxy.corp", 80));
        assert!(!proxy.has_credentials());
        let proxy = Proxy::parse("http://[::1]:8080").expect("parse");
        assert_eq!((proxy.host(), proxy.port()), ("::1", 8080));
        assert_eq!(proxy.to_string(), "[::1]:8080");
        assert!(Proxy::parse("https://proxy:443").is_err());
        assert!(Proxy::parse("socks5://proxy:1080").is_err());
        assert!(Proxy::parse("http://proxy:notaport").is_err());
        assert!(Proxy::parse("http://").is_err());
    }

    #[test]
    fn the_scheme_picks_the_proxy_and_lowercase_wins() {
        let settings = settings(&[
            ("HTTPS_PROXY", "http://upper:1"),
            ("https_proxy", "http://lower:2"),
            ("HTTP_PROXY", "http://plain:3"),
        ]);
        let https: http::Uri = "https://ferry.example:8443".parse().expect("uri");
        let http: http::Uri = "http://ferry.example".parse().expect("uri");
        assert_eq!(settings.proxy_for(&https).map(Proxy::host), Some("lower"));
        assert_eq!(settings.proxy_for(&http).map(Proxy::host), Some("plain"));
        let only_https = self::settings(&[("HTTPS_PROXY", "http://p:1"), ("http_proxy", " ")]);
        assert!(only_https.proxy_for(&http).is_none());
        assert!(self::settings(&[]).proxy_for(&https).is_none());
        let bad =
            ProxySettings::from_lookup(|name| (name == "HTTPS_PROXY").then(|| "ftp://x".into()));
        assert!(bad.expect_err("refused").starts_with("HTTPS_PROXY: "));
    }

    #[test]
    fn no_proxy_matches_suffixes_ports_and_star() {
        let no_proxy = NoProxy::parse("example.com, .internal ,10.0.0.1,localhost:8443,[::1]");
        assert!(no_proxy.matches("example.com", 443));
        assert!(no_proxy.matches("ci.example.com", 443));
        assert!(no_proxy.matches("CI.Example.COM.", 443));
        assert!(!no_proxy.matches("badexample.com", 443));
        assert!(no_proxy.matches("a.b.internal", 1));
        assert!(no_proxy.matches("internal", 1));
        assert!(no_proxy.matches("10.0.0.1", 80));
        assert!(!no_proxy.matches("10.0.0.10", 80));
        assert!(no_proxy.matches("localhost", 8443));
        assert!(!no_proxy.matches("localhost", 443));
        assert!(no_proxy.matches("[::1]", 443));
        assert!(NoProxy::parse("*").matches("anything", 1));
        assert!(!NoProxy::parse("").matches("anything", 1));

        let settings = settings(&[("HTTPS_PROXY", "p:1"), ("NO_PROXY", "ferry.example")]);
        let uri: http::Uri = "https://api.ferry.example".parse().expect("uri");
        assert!(settings.proxy_for(&uri).is_none());
        let uri: http::Uri = "https://other.example".parse().expect("uri");
        assert!(settings.proxy_for(&uri).is_some());
    }
}
