//! What the stored Services hold: their cluster IPs and node ports, each Service's and all of
//! them together. The store keeps it in step with every write of a Service, as the registry's
//! allocators are kept in step with the Services, so the allocator reads a set instead of every
//! stored Service.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;

use serde_json::Value;

/// The cluster IPs (IPv4, as numbers) and node ports one Service holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    pub ips: Vec<i64>,
    pub ports: Vec<i64>,
}

impl Held {
    fn of(service: &Value) -> Self {
        let Some(spec) = service.get("spec") else {
            return Self::default();
        };
        let listed = |field: &str| {
            spec.get(field)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        };
        Self {
            ips: listed("clusterIPs")
                .filter_map(|ip| ip.as_str()?.parse::<Ipv4Addr>().ok())
                .map(|ip| i64::from(u32::from(ip)))
                .collect(),
            ports: listed("ports")
                .filter_map(|port| port.get("nodePort")?.as_i64())
                .chain(spec.get("healthCheckNodePort").and_then(Value::as_i64))
                .filter(|port| *port != 0)
                .collect(),
        }
    }
}

/// Every Service's holdings, by (namespace, name), and their union.
#[derive(Debug, Clone, Default)]
pub struct Allocations {
    held: HashMap<(String, String), Held>,
    pub ips: BTreeSet<i64>,
    pub ports: BTreeSet<i64>,
}

impl Allocations {
    /// Records what the Service under (`namespace`, `name`) holds now; `None` once it is gone.
    pub fn update(&mut self, namespace: &str, name: &str, service: Option<&Value>) {
        let key = (namespace.to_owned(), name.to_owned());
        if let Some(old) = self.held.remove(&key) {
            for ip in &old.ips {
                self.ips.remove(ip);
            }
            for port in &old.ports {
                self.ports.remove(port);
            }
        }
        if let Some(service) = service {
            let held = Held::of(service);
            self.ips.extend(&held.ips);
            self.ports.extend(&held.ports);
            self.held.insert(key, held);
        }
    }

    /// What the Service under (`namespace`, `name`) holds.
    pub fn held(&self, namespace: &str, name: &str) -> Option<&Held> {
        self.held.get(&(namespace.to_owned(), name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn holdings_follow_each_write_and_removal() {
        let mut allocations = Allocations::default();
        let web = json!({"spec": {"clusterIPs": ["10.96.0.10"], "ports": [{"nodePort": 30080}, {"port": 1}]}});
        allocations.update("shop", "web", Some(&web));
        let ip = i64::from(u32::from(Ipv4Addr::new(10, 96, 0, 10)));
        assert_eq!(allocations.ips, BTreeSet::from([ip]));
        assert_eq!(allocations.ports, BTreeSet::from([30080]));
        let moved = json!({"spec": {"clusterIPs": ["10.96.0.10"], "ports": [{"nodePort": 30081}], "healthCheckNodePort": 30090}});
        allocations.update("shop", "web", Some(&moved));
        assert_eq!(allocations.ports, BTreeSet::from([30081, 30090]));
        assert_eq!(
            allocations.held("shop", "web").unwrap().ports,
            [30081, 30090]
        );
        allocations.update("shop", "web", None);
        assert!(allocations.ips.is_empty() && allocations.ports.is_empty());
        assert_eq!(allocations.held("shop", "web"), None);
    }
}
