//! The Service registry's own rules (`pkg/registry/core/service`): the defaults that need code,
//! the IP families, and the allocation of cluster IPs from 10.96.0.0/12 and node ports from
//! 30000-32767, on create (`beginCreate`) and on update (`beginUpdate`: `patchAllocatedValues`,
//! `normalizeClusterIPs`, `allocateUpdate`).
//!
//! What is allocated is what the stored Services hold (the store keeps that in step, see
//! `allocations.rs`), so a Service's IP and ports are free again once it is removed (by a
//! delete, a delete-collection or its namespace's deletion), as the registry's `afterDelete`
//! releases them; a dry run allocates in its scratch copy only.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};

use rand::Rng;
use serde_json::{Map, Value, json};

use super::errors::FieldError;
use super::store::{ObjectKey, State};
use super::strategy::object_at;
use super::validation::{render, render_strings, strings};

/// The service CIDR, `--service-cluster-ip-range`.
const CIDR: &str = "10.96.0.0/12";
const CIDR_NETWORK: u32 = u32::from_be_bytes([10, 96, 0, 0]);
const CIDR_SIZE: u32 = 1 << 20;
/// The lower addresses are kept for requested IPs: dynamic allocation takes from above them
/// first (KEP-3070: `min(max(16, size/16), 256)`).
const IP_STATIC_BAND: i64 = 256;

/// `--service-node-port-range`.
const NODE_PORTS: (i64, i64) = (30000, 32767);
const NODE_PORTS_TEXT: &str = "30000-32767";
/// The lower node ports kept for requested ones (KEP-3668: `min(max(16, size/32), 128)`).
const PORT_STATIC_BAND: i64 = 86;
/// How many random picks an allocation tries before it scans the range.
const RANDOM_PICKS: usize = 64;

const ALREADY_ALLOCATED_IP: &str = "provided IP is already allocated";
const ALREADY_ALLOCATED_PORT: &str = "provided port is already allocated";

/// Why an allocation failed: a 422 with the fields at fault, or a 500 for a full range.
#[derive(Debug, Clone)]
pub enum AllocationError {
    Invalid(Vec<FieldError>),
    Internal(String),
}

fn invalid(
    field: impl Into<String>,
    value: impl Into<String>,
    why: impl Into<String>,
) -> AllocationError {
    AllocationError::Invalid(vec![FieldError::invalid(field, value, why)])
}

fn spec_str<'a>(service: &'a Value, field: &str) -> &'a str {
    service
        .pointer(&format!("/spec/{field}"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn service_type(service: &Value) -> &str {
    match spec_str(service, "type") {
        "" => "ClusterIP",
        other => other,
    }
}

/// `needsClusterIP`: every type but ExternalName has cluster IPs (or is headless).
fn needs_cluster_ip(service: &Value) -> bool {
    service_type(service) != "ExternalName"
}

/// `needsNodePort`: NodePort and LoadBalancer services.
fn needs_node_ports(service: &Value) -> bool {
    matches!(service_type(service), "NodePort" | "LoadBalancer")
}

/// `needsHCNodePort`: a LoadBalancer that keeps traffic on the local node.
fn needs_health_check_port(service: &Value) -> bool {
    service_type(service) == "LoadBalancer" && spec_str(service, "externalTrafficPolicy") == "Local"
}

/// `shouldAllocateNodePorts`: false only for a LoadBalancer that opts out.
fn allocates_node_ports(service: &Value) -> bool {
    service_type(service) != "LoadBalancer"
        || service
            .pointer("/spec/allocateLoadBalancerNodePorts")
            .and_then(Value::as_bool)
            != Some(false)
}

fn cluster_ips(service: &Value) -> Vec<String> {
    strings(service.pointer("/spec/clusterIPs"))
}

fn ports(service: &Value) -> Vec<Value> {
    service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn number(item: &Value, field: &str) -> i64 {
    item.get(field).and_then(Value::as_i64).unwrap_or(0)
}

fn node_ports(service: &Value) -> BTreeSet<i64> {
    ports(service)
        .iter()
        .map(|p| number(p, "nodePort"))
        .filter(|p| *p != 0)
        .collect()
}

fn set_spec(service: &mut Value, field: &str, value: Value) {
    if let Some(spec) = object_at(service, "spec") {
        spec.insert(field.to_owned(), value);
    }
}

/// `SetDefaults_Service`, the part that is not data: each port's `targetPort` is its `port`
/// unless given, and every type but ExternalName routes internal traffic cluster-wide.
pub fn apply_defaults(service: &mut Value) {
    let external_name = service_type(service) == "ExternalName";
    let Some(spec) = object_at(service, "spec") else {
        return;
    };
    if !external_name {
        spec.entry("internalTrafficPolicy")
            .or_insert_with(|| json!("Cluster"));
    }
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for port in ports.iter_mut().filter_map(Value::as_object_mut) {
            let unset = match port.get("targetPort") {
                None | Some(Value::Null) => true,
                Some(target) => target == &json!(0) || target == &json!(""),
            };
            if unset && let Some(number) = port.get("port").cloned() {
                port.insert("targetPort".to_owned(), number);
            }
        }
    }
}

/// The IPs and node ports other Services hold.
#[derive(Debug, Default)]
struct Taken {
    /// IPv4 addresses, as numbers.
    ips: BTreeSet<i64>,
    ports: BTreeSet<i64>,
}

impl Taken {
    /// Everything the stored Services hold, but the one under `except`.
    fn read(state: &State, except: Option<&ObjectKey>) -> Self {
        let allocations = state.allocations();
        let mut taken = Self {
            ips: allocations.ips.clone(),
            ports: allocations.ports.clone(),
        };
        if let Some(held) = except.and_then(|key| allocations.held(&key.namespace, &key.name)) {
            for ip in &held.ips {
                taken.ips.remove(ip);
            }
            for port in &held.ports {
                taken.ports.remove(port);
            }
        }
        taken
    }

    /// `Allocate` of a requested IP.
    fn reserve_ip(&mut self, ip: Ipv4Addr) -> Result<(), String> {
        let address = u32::from(ip);
        let offset = address.wrapping_sub(CIDR_NETWORK);
        if address & !(CIDR_SIZE - 1) != CIDR_NETWORK || offset == 0 || offset == CIDR_SIZE - 1 {
            return Err(format!(
                "provided IP is not in the valid range. The range of valid IPs is {CIDR}"
            ));
        }
        if !self.ips.insert(i64::from(address)) {
            return Err(ALREADY_ALLOCATED_IP.to_owned());
        }
        Ok(())
    }

    /// `AllocateNext`: a random free IP above the static band, else the first free one.
    fn next_ip(&mut self) -> Result<Ipv4Addr, AllocationError> {
        let first = i64::from(CIDR_NETWORK) + 1;
        let last = i64::from(CIDR_NETWORK + CIDR_SIZE) - 2;
        let picked = pick(&self.ips, (first + IP_STATIC_BAND, last), (first, last))
            .and_then(|address| u32::try_from(address).ok());
        let address = picked.ok_or_else(|| {
            AllocationError::Internal(
                "Internal error occurred: failed to allocate a serviceIP: range is full".to_owned(),
            )
        })?;
        self.ips.insert(i64::from(address));
        Ok(Ipv4Addr::from(address))
    }

    /// `Allocate` of a requested node port.
    fn reserve_port(&mut self, port: i64) -> Result<(), String> {
        if !(NODE_PORTS.0..=NODE_PORTS.1).contains(&port) {
            return Err(format!(
                "provided port is not in the valid range. The range of valid ports is {NODE_PORTS_TEXT}"
            ));
        }
        if !self.ports.insert(port) {
            return Err(ALREADY_ALLOCATED_PORT.to_owned());
        }
        Ok(())
    }

    /// `AllocateNext` of a node port.
    fn next_port(&mut self) -> Result<i64, AllocationError> {
        let range = NODE_PORTS;
        let picked = pick(&self.ports, (range.0 + PORT_STATIC_BAND, range.1), range);
        let port = picked.ok_or_else(|| {
            AllocationError::Internal(
                "Internal error occurred: failed to allocate a nodePort: range is full".to_owned(),
            )
        })?;
        self.ports.insert(port);
        Ok(port)
    }
}

/// A value of `whole` not in `taken`: a random one of `preferred` when a few picks find one,
/// else the first free one of `preferred`, then of `whole`.
fn pick(taken: &BTreeSet<i64>, preferred: (i64, i64), whole: (i64, i64)) -> Option<i64> {
    let mut rng = rand::rng();
    (0..RANDOM_PICKS)
        .map(|_| rng.random_range(preferred.0..=preferred.1))
        .find(|v| !taken.contains(v))
        .or_else(|| (preferred.0..=preferred.1).find(|v| !taken.contains(v)))
        .or_else(|| (whole.0..=whole.1).find(|v| !taken.contains(v)))
}

fn is_headless(service: &Value) -> bool {
    spec_str(service, "clusterIP") == "None"
}

/// `initIPFamilyFields` on a single-stack IPv4 cluster: a policy (the old one on an update,
/// RequireDualStack for a headless Service without a selector, SingleStack otherwise) and the
/// families that go with it. A headless selectorless Service may list both families.
fn init_ip_families(service: &mut Value, old: Option<&Value>) -> Result<(), AllocationError> {
    check_cluster_ip_forms(service)?;
    let headless_selectorless = is_headless(service)
        && service
            .pointer("/spec/selector")
            .and_then(Value::as_object)
            .is_none_or(Map::is_empty);
    if service
        .pointer("/spec/ipFamilyPolicy")
        .is_none_or(Value::is_null)
    {
        let policy = match old.and_then(|o| o.pointer("/spec/ipFamilyPolicy")) {
            Some(policy) if !policy.is_null() => policy.clone(),
            _ if headless_selectorless => json!("RequireDualStack"),
            _ => json!("SingleStack"),
        };
        set_spec(service, "ipFamilyPolicy", policy);
    }
    let policy = spec_str(service, "ipFamilyPolicy").to_owned();
    let mut families = strings(service.pointer("/spec/ipFamilies"));
    if !headless_selectorless {
        if policy == "RequireDualStack" {
            return Err(invalid(
                "spec.ipFamilyPolicy",
                render(&json!(policy)),
                "this cluster is not configured for dual-stack services",
            ));
        }
        if let Some((i, family)) = families.iter().enumerate().find(|(_, f)| *f != "IPv4") {
            return Err(invalid(
                format!("spec.ipFamilies[{i}]"),
                render(&json!(family)),
                "not configured on this cluster",
            ));
        }
    }
    if families.is_empty() {
        families.push("IPv4".to_owned());
    }
    if headless_selectorless && families.len() < 2 && policy != "SingleStack" {
        let other = if families[0] == "IPv4" {
            "IPv6"
        } else {
            "IPv4"
        };
        families.push(other.to_owned());
    }
    set_spec(service, "ipFamilies", json!(families));
    Ok(())
}

/// `ValidateServiceClusterIPsRelatedFields`, as far as allocation needs it: each cluster IP is an
/// IP address, and an IPv4 one on this cluster.
fn check_cluster_ip_forms(service: &Value) -> Result<(), AllocationError> {
    let ips = cluster_ips(service);
    for (i, ip) in ips.iter().enumerate().take_while(|(_, ip)| *ip != "None") {
        if ip.is_empty() || ip.parse::<Ipv4Addr>().is_ok() {
            continue;
        }
        let field = format!("spec.clusterIPs[{i}]");
        if ip.parse::<Ipv6Addr>().is_ok() {
            return Err(invalid(
                field,
                render_strings(&ips),
                "IPv6 is not configured on this cluster",
            ));
        }
        return Err(invalid(
            field,
            render(&json!(ip)),
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        ));
    }
    Ok(())
}

/// `allocClusterIPs`: the requested IP, or the next free one; none for a headless Service.
fn allocate_cluster_ip(taken: &mut Taken, service: &mut Value) -> Result<(), AllocationError> {
    let ips = cluster_ips(service);
    let ip = match ips.first().map(String::as_str) {
        Some("None") => return Ok(()),
        None | Some("") => taken.next_ip()?,
        Some(text) => {
            let failed = |why: String| {
                invalid(
                    "spec.clusterIPs",
                    render_strings(&ips),
                    format!("failed to allocate IP {text}: {why}"),
                )
            };
            let ip: Ipv4Addr = text
                .parse()
                .map_err(|e: std::net::AddrParseError| failed(e.to_string()))?;
            taken.reserve_ip(ip).map_err(failed)?;
            ip
        }
    };
    set_spec(service, "clusterIP", json!(ip.to_string()));
    set_spec(service, "clusterIPs", json!([ip.to_string()]));
    Ok(())
}

fn port_error(i: usize, port: i64, why: String) -> AllocationError {
    invalid(format!("spec.ports[{i}].nodePort"), port.to_string(), why)
}

/// Writes back the ports an allocation changed, where the Service has a port list.
fn set_ports(service: &mut Value, ports: Vec<Value>) {
    if service.pointer("/spec/ports").is_some() {
        set_spec(service, "ports", Value::Array(ports));
    }
}

/// `initNodePorts`: each port gets its requested node port, or the one of an earlier port with
/// the same number (TCP and UDP of one port share it), or the next free one.
fn init_node_ports(taken: &mut Taken, service: &mut Value) -> Result<(), AllocationError> {
    let allocate = allocates_node_ports(service);
    let mut ports = ports(service);
    let mut by_port: BTreeMap<i64, i64> = BTreeMap::new();
    for i in 0..ports.len() {
        let requested = number(&ports[i], "nodePort");
        if requested == 0 && !allocate {
            continue;
        }
        let port = number(&ports[i], "port");
        let node_port = match by_port.get(&port) {
            None => {
                let wanted = ports
                    .iter()
                    .filter(|p| number(p, "port") == port)
                    .map(|p| number(p, "nodePort"))
                    .find(|n| *n != 0);
                let node_port = match wanted {
                    Some(n) => taken
                        .reserve_port(n)
                        .map(|()| n)
                        .map_err(|why| port_error(i, n, why))?,
                    None => taken.next_port()?,
                };
                by_port.insert(port, node_port);
                node_port
            }
            Some(&shared) if requested != 0 && requested != shared => {
                taken
                    .reserve_port(requested)
                    .map_err(|why| port_error(i, requested, why))?;
                requested
            }
            Some(&shared) => shared,
        };
        ports[i]["nodePort"] = json!(node_port);
    }
    set_ports(service, ports);
    Ok(())
}

/// `updateNodePorts`: node ports the Service did not hold before are reserved, missing ones
/// allocated; the Service's old ones stay its own.
fn update_node_ports(
    taken: &mut Taken,
    old: &Value,
    new: &mut Value,
) -> Result<(), AllocationError> {
    let held = node_ports(old);
    taken.ports.extend(held.iter().copied());
    let allocate = allocates_node_ports(new);
    let mut ports = ports(new);
    let mut reserved = BTreeSet::new();
    for (i, port) in ports.iter_mut().enumerate() {
        let node_port = number(port, "nodePort");
        if node_port == 0 && !allocate {
            continue;
        }
        if node_port == 0 {
            port["nodePort"] = json!(taken.next_port()?);
        } else if !held.contains(&node_port) && reserved.insert(node_port) {
            taken
                .reserve_port(node_port)
                .map_err(|why| port_error(i, node_port, why))?;
        }
    }
    set_ports(new, ports);
    Ok(())
}

/// `allocHealthCheckNodePort` of a LoadBalancer with the Local traffic policy.
fn allocate_health_check_port(
    taken: &mut Taken,
    service: &mut Value,
) -> Result<(), AllocationError> {
    let requested = number(
        service.get("spec").unwrap_or(&Value::Null),
        "healthCheckNodePort",
    );
    if requested != 0 {
        return taken.reserve_port(requested).map_err(|why| {
            AllocationError::Internal(format!(
                "Internal error occurred: failed to allocate requested HealthCheck NodePort {requested}: {why}"
            ))
        });
    }
    let port = taken.next_port()?;
    set_spec(service, "healthCheckNodePort", json!(port));
    Ok(())
}

/// `normalizeClusterIPs`: keeps `clusterIP` and `clusterIPs` in step, for clients that set only
/// the first (`old` is the stored Service on an update).
fn normalize_cluster_ips(service: &mut Value, old: Option<&Value>) {
    let ip = spec_str(service, "clusterIP").to_owned();
    let Some(old) = old else {
        if !ip.is_empty() && cluster_ips(service).is_empty() {
            set_spec(service, "clusterIPs", json!([ip]));
        }
        return;
    };
    let old_ip = spec_str(old, "clusterIP");
    let old_ips = cluster_ips(old);
    if !old_ips.is_empty() && cluster_ips(service).is_empty() && old_ip == ip {
        set_spec(service, "clusterIPs", json!(old_ips));
    }
    if old_ip != ip && cluster_ips(service) == old_ips {
        if ip.is_empty() {
            if let Some(spec) = object_at(service, "spec") {
                spec.remove("clusterIPs");
            }
        } else {
            set_spec(service, "clusterIPs", json!([ip]));
        }
    }
}

/// `patchAllocatedValues`: what the client left out of an update but the server allocated
/// before (the cluster IP, node ports by port name, the health check port) is kept, so that
/// the same manifest can be applied again.
fn patch_allocated_values(old: &Value, new: &mut Value) {
    if needs_cluster_ip(old) && needs_cluster_ip(new) {
        if spec_str(new, "clusterIP").is_empty() && !spec_str(old, "clusterIP").is_empty() {
            set_spec(new, "clusterIP", json!(spec_str(old, "clusterIP")));
        }
        if cluster_ips(new).is_empty() && !cluster_ips(old).is_empty() {
            set_spec(new, "clusterIPs", json!(cluster_ips(old)));
        }
    }
    if needs_node_ports(old) && needs_node_ports(new) {
        let used: BTreeSet<i64> = node_ports(old)
            .intersection(&node_ports(new))
            .copied()
            .collect();
        let by_name: BTreeMap<String, i64> = ports(old)
            .iter()
            .map(|p| {
                (
                    p.get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                    number(p, "nodePort"),
                )
            })
            .collect();
        let mut ports = ports(new);
        for port in &mut ports {
            let name = port.get("name").and_then(Value::as_str).unwrap_or("");
            let before = by_name.get(name).copied().unwrap_or(0);
            if number(port, "nodePort") == 0 && before != 0 && !used.contains(&before) {
                port["nodePort"] = json!(before);
            }
        }
        set_ports(new, ports);
    }
    let health = |s: &Value| number(s.get("spec").unwrap_or(&Value::Null), "healthCheckNodePort");
    if needs_health_check_port(old)
        && needs_health_check_port(new)
        && health(new) == 0
        && health(old) != 0
    {
        set_spec(new, "healthCheckNodePort", json!(health(old)));
    }
}

/// `beginCreate`: the IP families, the cluster IP and the node ports of a new Service.
pub fn begin_create(state: &State, service: &mut Value) -> Result<(), AllocationError> {
    normalize_cluster_ips(service, None);
    if !needs_cluster_ip(service) {
        return Ok(());
    }
    init_ip_families(service, None)?;
    let mut taken = Taken::read(state, None);
    allocate_cluster_ip(&mut taken, service)?;
    if needs_node_ports(service) {
        init_node_ports(&mut taken, service)?;
    }
    if needs_health_check_port(service) {
        allocate_health_check_port(&mut taken, service)?;
    }
    Ok(())
}

/// `beginUpdate` of the Service stored under `key`: what the update left out is patched from
/// the stored Service, then whatever it newly needs is allocated (a cluster IP for a former
/// ExternalName, node ports for a NodePort or LoadBalancer).
pub fn begin_update(
    state: &State,
    key: &ObjectKey,
    old: &Value,
    new: &mut Value,
) -> Result<(), AllocationError> {
    patch_allocated_values(old, new);
    normalize_cluster_ips(new, Some(old));
    if !needs_cluster_ip(new) {
        return Ok(());
    }
    init_ip_families(new, Some(old))?;
    let mut taken = Taken::read(state, Some(key));
    if !needs_cluster_ip(old) {
        allocate_cluster_ip(&mut taken, new)?;
    }
    if needs_node_ports(new) {
        update_node_ports(&mut taken, old, new)?;
    }
    Ok(())
}

/// Removes a spec field of `new` that the type no longer needs, if the update left it as it was.
fn drop_unchanged(old: &Value, new: &mut Value, field: &str) {
    let pointer = format!("/spec/{field}");
    if old.pointer(&pointer) == new.pointer(&pointer)
        && let Some(spec) = object_at(new, "spec")
    {
        spec.remove(field);
    }
}

/// `dropTypeDependentFields`: a change of type drops the fields the old type had allocated or
/// defaulted, where the update left them unchanged.
pub fn drop_type_dependent_fields(old: &Value, new: &mut Value) {
    if needs_cluster_ip(old) && !needs_cluster_ip(new) {
        for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            drop_unchanged(old, new, field);
        }
    }
    if needs_node_ports(old) && !needs_node_ports(new) && node_ports(old) == node_ports(new) {
        let mut ports = ports(new);
        for port in ports.iter_mut().filter_map(Value::as_object_mut) {
            port.remove("nodePort");
        }
        set_ports(new, ports);
    }
    if service_type(old) == "LoadBalancer" && service_type(new) != "LoadBalancer" {
        drop_unchanged(old, new, "allocateLoadBalancerNodePorts");
    }
    if needs_health_check_port(old) && !needs_health_check_port(new) {
        drop_unchanged(old, new, "healthCheckNodePort");
    }
    if needs_node_ports(old) && !needs_node_ports(new) {
        drop_unchanged(old, new, "externalTrafficPolicy");
    }
}

/// `ValidateService`, as far as allocation depends on it: ports are required (but for headless
/// and ExternalName Services), and a ClusterIP Service has no node ports.
pub fn spec_errors(service: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let ports = ports(service);
    if ports.is_empty() && !is_headless(service) && needs_cluster_ip(service) {
        errors.push(FieldError::required("spec.ports", ""));
    }
    if service_type(service) == "ClusterIP" {
        for (i, _) in ports
            .iter()
            .enumerate()
            .filter(|(_, p)| number(p, "nodePort") != 0)
        {
            errors.push(FieldError::forbidden(
                format!("spec.ports[{i}].nodePort"),
                "may not be used when `type` is 'ClusterIP'",
            ));
        }
    }
    errors
}

/// `ValidateServiceUpdate`: the cluster IPs may not change or go (but between types and for
/// headless Services), then the checks of [`spec_errors`].
pub fn update_errors(old: &Value, new: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let exempt =
        !needs_cluster_ip(old) || !needs_cluster_ip(new) || (is_headless(old) && is_headless(new));
    let (before, after) = (cluster_ips(old), cluster_ips(new));
    let value = if new.pointer("/spec/clusterIPs").is_none_or(Value::is_null) {
        "[]string(nil)".to_owned()
    } else {
        render_strings(&after)
    };
    let changed = |i: usize| {
        FieldError::invalid(
            format!("spec.clusterIPs[{i}]"),
            value.clone(),
            "may not change once set",
        )
    };
    if !exempt && before.len() == after.len() {
        errors.extend(
            (0..before.len())
                .filter(|i| before[*i] != after[*i])
                .map(changed),
        );
    } else if !exempt && before.len() > after.len() {
        match after.first() {
            None => errors.push(FieldError::invalid(
                "spec.clusterIPs[0]",
                value.clone(),
                "primary clusterIP can not be unset",
            )),
            Some(first) if *first != before[0] => errors.push(changed(0)),
            Some(_) => {}
        }
    }
    errors.extend(spec_errors(new));
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources::Registry;

    fn state_with(services: &[Value]) -> State {
        let mut state = State::new(Registry::with_builtins(), 100);
        let key = (String::new(), "services".to_owned());
        for (i, service) in services.iter().enumerate() {
            let name = format!("s{i}");
            state.put(
                &key,
                ObjectKey {
                    namespace: "app".into(),
                    name,
                },
                service.clone(),
            );
        }
        state
    }

    fn service(spec: Value) -> Value {
        let mut service = json!({"metadata": {"name": "web", "namespace": "app"}, "spec": spec});
        apply_defaults(&mut service);
        service
    }

    fn messages(result: Result<(), AllocationError>) -> Vec<String> {
        match result {
            Err(AllocationError::Invalid(errors)) => {
                errors.iter().map(ToString::to_string).collect()
            }
            other => panic!("expected a 422, got {other:?}"),
        }
    }

    #[test]
    fn target_ports_and_traffic_policy_are_defaulted() {
        let defaulted =
            service(json!({"ports": [{"port": 80}, {"port": 81, "targetPort": "http"}]}));
        assert_eq!(defaulted["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(defaulted["spec"]["ports"][1]["targetPort"], "http");
        assert_eq!(defaulted["spec"]["internalTrafficPolicy"], "Cluster");
        let external = service(json!({"type": "ExternalName", "externalName": "x.example"}));
        assert!(external["spec"].get("internalTrafficPolicy").is_none());
    }

    #[test]
    fn a_cluster_ip_is_allocated_above_the_static_band() {
        let state = state_with(&[]);
        let mut web = service(json!({"ports": [{"port": 80}]}));
        begin_create(&state, &mut web).unwrap();
        let ip: Ipv4Addr = web["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
        let offset = u32::from(ip) - CIDR_NETWORK;
        assert!(offset > 256 && offset < CIDR_SIZE - 1, "{ip}");
        assert_eq!(web["spec"]["clusterIPs"], json!([ip.to_string()]));
        assert_eq!(web["spec"]["ipFamilies"], json!(["IPv4"]));
        assert_eq!(web["spec"]["ipFamilyPolicy"], "SingleStack");
    }

    #[test]
    fn headless_and_external_name_services_get_no_ip() {
        let state = state_with(&[]);
        let mut headless = service(json!({"clusterIP": "None", "ports": [{"port": 80}]}));
        begin_create(&state, &mut headless).unwrap();
        assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
        assert_eq!(headless["spec"]["ipFamilyPolicy"], "RequireDualStack");
        assert_eq!(headless["spec"]["ipFamilies"], json!(["IPv4", "IPv6"]));
        let mut selected = service(json!({"clusterIP": "None", "selector": {"app": "db"}}));
        begin_create(&state, &mut selected).unwrap();
        assert_eq!(selected["spec"]["ipFamilies"], json!(["IPv4"]));
        let mut external = service(json!({"type": "ExternalName", "externalName": "x.example"}));
        begin_create(&state, &mut external).unwrap();
        assert!(external["spec"].get("clusterIP").is_none());
    }

    #[test]
    fn a_requested_ip_must_be_free_and_in_range() {
        let state = state_with(&[
            json!({"spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"]}}),
        ]);
        let mut taken = service(json!({"clusterIP": "10.96.0.10", "ports": [{"port": 53}]}));
        assert_eq!(
            messages(begin_create(&state, &mut taken)),
            [
                "spec.clusterIPs: Invalid value: []string{\"10.96.0.10\"}: failed to allocate IP 10.96.0.10: \
              provided IP is already allocated"
            ]
        );
        let mut outside = service(json!({"clusterIP": "10.0.0.1", "ports": [{"port": 53}]}));
        assert_eq!(
            messages(begin_create(&state, &mut outside)),
            [
                "spec.clusterIPs: Invalid value: []string{\"10.0.0.1\"}: failed to allocate IP 10.0.0.1: \
              provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/12"
            ]
        );
        let mut free = service(json!({"clusterIP": "10.96.0.11", "ports": [{"port": 53}]}));
        begin_create(&state, &mut free).unwrap();
        assert_eq!(free["spec"]["clusterIPs"], json!(["10.96.0.11"]));
    }

    #[test]
    fn node_ports_are_allocated_shared_by_port_number_and_never_twice() {
        let state = state_with(&[
            json!({"spec": {"type": "NodePort", "ports": [{"port": 1, "nodePort": 30080}]}}),
        ]);
        let mut dns = service(json!({"type": "NodePort", "ports": [
            {"name": "udp", "port": 53, "protocol": "UDP"}, {"name": "tcp", "port": 53}, {"name": "x", "port": 54}]}));
        begin_create(&state, &mut dns).unwrap();
        let ports: Vec<i64> = (0..3)
            .map(|i| number(&dns["spec"]["ports"][i], "nodePort"))
            .collect();
        assert_eq!(ports[0], ports[1]);
        assert_ne!(ports[0], ports[2]);
        assert!(
            ports.iter().all(|p| (30086..=32767).contains(p)),
            "{ports:?}"
        );
        let mut clash =
            service(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}));
        assert_eq!(
            messages(begin_create(&state, &mut clash)),
            ["spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"]
        );
        let mut low =
            service(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 8080}]}));
        assert_eq!(
            messages(begin_create(&state, &mut low)),
            [
                "spec.ports[0].nodePort: Invalid value: 8080: provided port is not in the valid range. \
              The range of valid ports is 30000-32767"
            ]
        );
    }

    #[test]
    fn an_update_keeps_what_was_allocated_and_may_not_change_the_ip() {
        let mut old = service(json!({"type": "NodePort", "ports": [{"name": "http", "port": 80}]}));
        begin_create(&state_with(&[]), &mut old).unwrap();
        let state = state_with(&[old.clone()]);
        let key = ObjectKey {
            namespace: "app".into(),
            name: "s0".into(),
        };
        let mut bare =
            service(json!({"type": "NodePort", "ports": [{"name": "http", "port": 80}]}));
        begin_update(&state, &key, &old, &mut bare).unwrap();
        assert_eq!(bare["spec"]["clusterIP"], old["spec"]["clusterIP"]);
        assert_eq!(
            bare["spec"]["ports"][0]["nodePort"],
            old["spec"]["ports"][0]["nodePort"]
        );
        assert!(update_errors(&old, &bare).is_empty());

        let mut moved = bare.clone();
        moved["spec"]["clusterIP"] = json!("10.96.0.20");
        begin_update(&state, &key, &old, &mut moved).unwrap();
        let errors: Vec<String> = update_errors(&old, &moved)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errors,
            [
                "spec.clusterIPs[0]: Invalid value: []string{\"10.96.0.20\"}: may not change once set"
            ]
        );
    }

    #[test]
    fn leaving_node_port_drops_the_node_ports() {
        let mut old = service(json!({"type": "NodePort", "ports": [{"port": 80}]}));
        begin_create(&state_with(&[]), &mut old).unwrap();
        let mut cluster_ip = old.clone();
        cluster_ip["spec"]["type"] = json!("ClusterIP");
        drop_type_dependent_fields(&old, &mut cluster_ip);
        assert!(cluster_ip["spec"]["ports"][0].get("nodePort").is_none());
        assert!(spec_errors(&cluster_ip).is_empty());
        let mut kept = cluster_ip.clone();
        kept["spec"]["ports"][0]["nodePort"] = json!(30001);
        assert_eq!(
            spec_errors(&kept)[0].to_string(),
            "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"
        );
    }
}
