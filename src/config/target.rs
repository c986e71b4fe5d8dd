//! Where a provider's key goes: its target is the scheme, host and port of the URL the
//! adapter posts to, and the proxy the requests pass through.
//!
//! A stored secret only ever goes where it went before, so that whoever may edit a source
//! cannot re-point it at their own listener and receive its key: [`target_change`] says
//! what moved, `masking` refuses to restore a masked key toward a changed target, and
//! `providers` refuses to re-point a source while a provider with its own key would follow
//! it. The comparison parses URLs as the HTTP client does, so the two cannot disagree.

use crate::chat::provider::endpoint_url;
use serde_json::Value;

type Endpoint = (String, String, u16);

/// Scheme, host and port of a URL, parsed as the HTTP client parses it (so the two can
/// never disagree about the host); host case and a trailing dot do not matter, and a
/// missing port is the scheme's default.
fn url_endpoint(url: &str) -> Option<Endpoint> {
    let uri: ureq::http::Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let port = match (uri.port_u16(), scheme.as_str()) {
        (Some(p), _) => p,
        (None, "http") => 80,
        (None, "https") => 443,
        _ => return None,
    };
    Some((scheme, normal_host(uri.host()?), port))
}

fn proxy_endpoint(proxy: &str) -> Option<Endpoint> {
    let p = ureq::Proxy::new(proxy).ok()?;
    Some((format!("{:?}", p.protocol()), normal_host(p.host()), p.port()))
}

fn normal_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Equal strings are the same target even when unparseable; otherwise both must parse
/// to the same endpoint (unknown is never "unchanged").
fn same_endpoint(a: &str, b: &str, parse: fn(&str) -> Option<Endpoint>) -> bool {
    a == b || parse(a).is_some_and(|x| parse(b) == Some(x))
}

/// Whether two URLs name the same scheme, host and port (as the HTTP client reads them):
/// where a secret carried in or with the URL would go.
pub fn same_url_endpoint(a: &str, b: &str) -> bool {
    same_endpoint(a, b, url_endpoint)
}

/// What moved between two provider configs (each merged with its source): `api_base`
/// when the URL the adapter posts to has another scheme, host or port (a missing
/// `api_base` is the adapter's default, so a changed `type` can move it too), `proxy`
/// when the requests pass through another proxy (it sees them too).
pub fn target_change(old: &Value, new: &Value) -> Option<&'static str> {
    if !same_endpoint(&endpoint_url(old), &endpoint_url(new), url_endpoint) {
        return Some("api_base");
    }
    let proxy = |v: &Value| v["proxy"].as_str().unwrap_or("").to_owned();
    if !same_endpoint(&proxy(old), &proxy(new), proxy_endpoint) {
        return Some("proxy");
    }
    None
}
