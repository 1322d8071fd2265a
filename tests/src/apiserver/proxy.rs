//! The service proxy, `/api/v1/namespaces/<ns>/services/<[scheme:]name[:port]>/proxy/<path>`:
//! every method is forwarded to the address a test registered for the Service, as the real
//! server forwards to the Service's endpoints. A Service that does not exist is 404 NotFound;
//! a port it does not have, or a Service without a registered address, is 503
//! ServiceUnavailable; otherwise the upstream's status, headers and body come back as they are.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::authn::User;
use super::authz::{self, Attributes};
use super::errors::{ApiError, GroupResource};
use super::handlers::App;
use super::store::ObjectKey;

/// A request for the proxy, as its path names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyPath {
    pub namespace: String,
    pub service: String,
    /// The port's name or number; the Service's first port when absent.
    pub port: Option<String>,
    /// The path at the upstream, starting with `/`.
    pub path: String,
}

/// The proxy request `path` is, if it is one.
pub fn parse(path: &str) -> Option<ProxyPath> {
    let rest = path.strip_prefix("/api/v1/namespaces/")?;
    let (namespace, rest) = rest.split_once('/')?;
    let rest = rest.strip_prefix("services/")?;
    let (id, rest) = rest.split_once('/')?;
    let upstream = match rest.strip_prefix("proxy")? {
        "" => "/",
        tail if tail.starts_with('/') => tail,
        _ => return None,
    };
    let (service, port) = match id.split(':').collect::<Vec<_>>().as_slice() {
        [name] => (*name, None),
        [name, port] => (*name, Some(*port)),
        ["" | "http" | "https", name, port] => (*name, Some(*port)),
        _ => return None,
    };
    (!namespace.is_empty() && !service.is_empty()).then(|| ProxyPath {
        namespace: namespace.to_owned(),
        service: service.to_owned(),
        port: port.filter(|p| !p.is_empty()).map(str::to_owned),
        path: upstream.to_owned(),
    })
}

/// The addresses that stand for Services' endpoints, by namespace and name.
#[derive(Debug)]
pub struct Upstreams {
    addresses: Mutex<HashMap<(String, String), SocketAddr>>,
    client: reqwest::Client,
}

impl Default for Upstreams {
    fn default() -> Self {
        Self {
            addresses: Mutex::default(),
            client: reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap_or_default(),
        }
    }
}

impl Upstreams {
    pub fn register(&self, namespace: &str, name: &str, address: SocketAddr) {
        self.addresses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((namespace.to_owned(), name.to_owned()), address);
    }

    fn get(&self, namespace: &str, name: &str) -> Option<SocketAddr> {
        self.addresses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(namespace.to_owned(), name.to_owned()))
            .copied()
    }
}

fn services() -> GroupResource {
    GroupResource {
        group: String::new(),
        resource: "services".to_owned(),
    }
}

/// The port of `service` that `port` names, by name or by number; the first without one.
pub fn service_port(service: &Value, name: &str, port: Option<&str>) -> Result<(), ApiError> {
    let ports = service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let found = match port {
        None => !ports.is_empty(),
        Some(wanted) => ports.iter().any(|p| {
            p.get("name").and_then(Value::as_str) == Some(wanted)
                || p.get("port").and_then(Value::as_i64).map(|n| n.to_string())
                    == Some(wanted.to_owned())
        }),
    };
    if found {
        return Ok(());
    }
    Err(ApiError::service_unavailable(format!(
        "no service port {:?} found for service {name:?}",
        port.unwrap_or_default()
    )))
}

/// Forwards one request of `user` through the proxy.
pub async fn forward(
    app: &App,
    user: &User,
    method: Method,
    proxy: ProxyPath,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let verb = match method {
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "get",
    };
    let attributes = Attributes {
        verb,
        group: String::new(),
        resource: "services".to_owned(),
        subresource: Some("proxy".to_owned()),
        namespace: Some(proxy.namespace.clone()),
        name: Some(proxy.service.clone()),
    };
    let service = {
        let state = app.store.lock();
        authz::authorize(&state, user, &attributes)?;
        let key = ObjectKey {
            namespace: proxy.namespace.clone(),
            name: proxy.service.clone(),
        };
        state
            .get(&(String::new(), "services".to_owned()), &key)
            .cloned()
    };
    let service = service.ok_or_else(|| ApiError::not_found(&services(), &proxy.service))?;
    service_port(&service, &proxy.service, proxy.port.as_deref())?;
    let address = app
        .upstreams
        .get(&proxy.namespace, &proxy.service)
        .ok_or_else(|| {
            ApiError::service_unavailable(format!(
                "no endpoints available for service {:?}",
                proxy.service
            ))
        })?;
    let url = match query {
        Some(query) => format!("http://{address}{}?{query}", proxy.path),
        None => format!("http://{address}{}", proxy.path),
    };
    let mut request = app.upstreams.client.request(method, url).body(body);
    for (name, value) in headers {
        if !HOP_BY_HOP.contains(name) && name != header::HOST {
            request = request.header(name, value);
        }
    }
    let answer = request.send().await.map_err(|err| {
        ApiError::service_unavailable(format!("error trying to reach service: {err}"))
    })?;
    let (code, answer_headers) = (answer.status(), answer.headers().clone());
    let bytes = answer.bytes().await.map_err(|err| {
        ApiError::service_unavailable(format!("error trying to reach service: {err}"))
    })?;
    let mut response = (code, bytes).into_response();
    for (name, value) in &answer_headers {
        if !HOP_BY_HOP.contains(name) && name != header::CONTENT_LENGTH {
            response.headers_mut().insert(name, value.clone());
        }
    }
    Ok(response)
}

/// Headers that belong to one connection and are never forwarded.
const HOP_BY_HOP: [header::HeaderName; 5] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::TE,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn proxy_paths_name_the_service_its_port_and_the_upstream_path() {
        let proxy = |ns: &str, service: &str, port: Option<&str>, path: &str| ProxyPath {
            namespace: ns.to_owned(),
            service: service.to_owned(),
            port: port.map(str::to_owned),
            path: path.to_owned(),
        };
        let cases = [
            (
                "/api/v1/namespaces/ferry/services/c:8085/proxy/downloads/t",
                Some(proxy("ferry", "c", Some("8085"), "/downloads/t")),
            ),
            (
                "/api/v1/namespaces/ferry/services/c/proxy/",
                Some(proxy("ferry", "c", None, "/")),
            ),
            (
                "/api/v1/namespaces/ferry/services/c/proxy",
                Some(proxy("ferry", "c", None, "/")),
            ),
            (
                "/api/v1/namespaces/ferry/services/http:c:web/proxy/a/b",
                Some(proxy("ferry", "c", Some("web"), "/a/b")),
            ),
            ("/api/v1/namespaces/ferry/services/c", None),
            ("/api/v1/namespaces/ferry/services/c/status", None),
            ("/api/v1/namespaces/ferry/services/c/proxyx/a", None),
            ("/api/v1/namespaces/ferry/pods/c/proxy/a", None),
            ("/api/v1/namespaces/ferry/services/ftp:c:1:2/proxy/a", None),
        ];
        for (path, want) in cases {
            assert_eq!(parse(path), want, "{path}");
        }
    }

    #[test]
    fn the_port_is_matched_by_name_or_number() {
        let service = json!({"spec": {"ports": [{"name": "http", "port": 8085}]}});
        for port in [None, Some("http"), Some("8085")] {
            assert!(service_port(&service, "c", port).is_ok(), "{port:?}");
        }
        let refused = service_port(&service, "c", Some("9000")).unwrap_err();
        assert_eq!(
            refused.status()["message"],
            "no service port \"9000\" found for service \"c\""
        );
        assert_eq!(refused.status()["code"], 503);
        assert!(service_port(&json!({"spec": {}}), "c", None).is_err());
    }
}
