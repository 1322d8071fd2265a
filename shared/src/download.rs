//! The contract of a download from a filesystem location: the coordinator serves the file at
//! `http://<service>.<namespace>.svc:<port>/downloads/<token>`, an address that works inside
//! the cluster, and a client outside reaches the same path through the API server's service
//! proxy, `/api/v1/namespaces/<namespace>/services/<service>:<port>/proxy/downloads/<token>`.

use std::time::Duration;

/// How long a download URL works.
pub const VALIDITY: Duration = Duration::from_secs(600);

/// The path under which the coordinator serves downloads, followed by the token.
pub const PATH_PREFIX: &str = "/downloads/";

/// A URL of a Service's port inside the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceUrl {
    pub service: String,
    pub namespace: String,
    pub port: u16,
    /// The path, starting with `/`.
    pub path: String,
}

impl ServiceUrl {
    /// The URL of the download with this token from the coordinator's Service.
    pub fn download(service: &str, namespace: &str, port: u16, token: &str) -> Self {
        Self {
            service: service.to_owned(),
            namespace: namespace.to_owned(),
            port,
            path: format!("{PATH_PREFIX}{token}"),
        }
    }

    /// `http://<service>.<namespace>.svc:<port><path>`.
    pub fn to_url(&self) -> String {
        format!(
            "http://{}.{}.svc:{}{}",
            self.service, self.namespace, self.port, self.path
        )
    }

    /// The API server path that proxies to the same place.
    pub fn proxy_path(&self) -> String {
        format!(
            "/api/v1/namespaces/{}/services/{}:{}/proxy{}",
            self.namespace, self.service, self.port, self.path
        )
    }

    /// The Service URL `url` is, if it is one: plain HTTP to a host
    /// `<service>.<namespace>.svc` or `<service>.<namespace>.svc.cluster.local`, with a port.
    pub fn parse(url: &str) -> Option<Self> {
        let rest = url.strip_prefix("http://")?;
        let (authority, path) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, "/"),
        };
        let (host, port) = authority.rsplit_once(':')?;
        let port = port.parse().ok()?;
        let host = host.strip_suffix(".cluster.local").unwrap_or(host);
        let (service, namespace) = host.strip_suffix(".svc")?.split_once('.')?;
        let label = |s: &str| !s.is_empty() && !s.contains('.');
        (label(service) && label(namespace)).then(|| Self {
            service: service.to_owned(),
            namespace: namespace.to_owned(),
            port,
            path: path.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_download_url_round_trips_and_maps_to_the_service_proxy() {
        let url = ServiceUrl::download("ferry-coordinator", "ferry", 8085, "abc");
        assert_eq!(
            url.to_url(),
            "http://ferry-coordinator.ferry.svc:8085/downloads/abc"
        );
        assert_eq!(ServiceUrl::parse(&url.to_url()), Some(url.clone()));
        assert_eq!(
            url.proxy_path(),
            "/api/v1/namespaces/ferry/services/ferry-coordinator:8085/proxy/downloads/abc"
        );
    }

    #[test]
    fn only_in_cluster_service_urls_parse() {
        let long = ServiceUrl::parse("http://c.ns.svc.cluster.local:80/x").expect("long form");
        assert_eq!(
            (long.service.as_str(), long.namespace.as_str()),
            ("c", "ns")
        );
        for url in [
            "https://c.ns.svc:80/x",
            "http://c.ns.svc/x",
            "http://bucket.s3.amazonaws.com:443/x",
            "http://c.svc:80/x",
            "http://a.b.c.svc:80/x",
            "http://127.0.0.1:9000/bucket/key?X-Amz-Signature=1",
        ] {
            assert_eq!(ServiceUrl::parse(url), None, "{url}");
        }
    }
}
