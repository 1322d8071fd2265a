//! The object operations of the generic registry store (`apiserver/pkg/registry/generic/registry`):
//! create, get, list, update, patch, delete and delete-collection, with the namespace lifecycle,
//! finalizers, graceful deletion and background garbage collection that go with them.

use std::sync::Arc;

use axum::http::StatusCode;
use base64::Engine;
use rand::Rng;
use serde_json::{Map, Value, json};

use super::errors::{ApiError, FieldError, GroupResource};
use super::patch;
use super::resources::{Builtin, ResourceType, crd_resource_type};
use super::selectors::Selection;
use super::services::{self, AllocationError};
use super::store::{ObjectKey, State};
use super::strategy::{self, Part};
use super::{validation, workloads};

/// The characters `generateName` suffixes are drawn from (`utilrand.String`): no vowels, so no
/// words.
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
const GENERATED_SUFFIX_LEN: usize = 5;
const MAX_GENERATED_NAME_BASE: usize = 63 - GENERATED_SUFFIX_LEN;
const NAME_GENERATION_ATTEMPTS: usize = 8;

/// What a request is about, beyond its body.
#[derive(Debug, Clone)]
pub struct Context {
    pub resource: Arc<ResourceType>,
    pub version: String,
    /// The namespace in the path, for namespaced requests.
    pub namespace: Option<String>,
    pub part: Part,
    /// The field manager of non-apply writes: `fieldManager` or the user agent's first word.
    pub manager: String,
    pub now: jiff::Timestamp,
}

impl Context {
    fn now_text(&self) -> String {
        format_time(self.now)
    }

    fn key(&self, name: &str) -> ObjectKey {
        ObjectKey {
            namespace: self.namespace.clone().unwrap_or_default(),
            name: name.to_owned(),
        }
    }

    fn group_resource(&self) -> GroupResource {
        self.resource.group_resource()
    }

    fn invalid(&self, name: &str, errors: &[FieldError]) -> ApiError {
        ApiError::invalid(
            &self.resource.qualified_kind(),
            &self.resource.group,
            &self.resource.kind,
            name,
            errors,
        )
    }

    fn api_version(&self) -> String {
        self.resource.api_version(&self.version)
    }

    fn allocation_failed(&self, name: &str, error: AllocationError) -> ApiError {
        match error {
            AllocationError::Invalid(errors) => self.invalid(name, &errors),
            AllocationError::Internal(message) => ApiError::internal(message),
        }
    }

    /// A successful answer with the object as the request's version sees it.
    fn reply(&self, code: StatusCode, object: &Value, warnings: Vec<String>) -> Reply {
        Reply {
            code,
            body: output(&self.resource, &self.version, object),
            warnings,
        }
    }
}

/// A successful answer: the status code, the body and any `Warning` headers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: StatusCode,
    pub body: Value,
    pub warnings: Vec<String>,
}

impl Reply {
    fn ok(body: Value) -> Self {
        Self {
            code: StatusCode::OK,
            body,
            warnings: Vec::new(),
        }
    }
}

/// How an existing object is being changed, for `managedFields`.
#[derive(Debug, Clone)]
pub enum Write {
    Update,
    Apply { manager: String, applied: Value },
}

/// `DeleteOptions` as far as they are honoured.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub precondition_uid: Option<String>,
    pub precondition_resource_version: Option<String>,
}

pub fn format_time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The metadata map of an object, made an empty map when missing; `None` only for a non-object.
fn meta(object: &mut Value) -> Option<&mut Map<String, Value>> {
    strategy::object_at(object, "metadata")
}

/// Sets a top-level field of an object; a non-object is left alone.
fn set_field(object: &mut Value, field: &str, value: Value) {
    if let Some(map) = object.as_object_mut() {
        map.insert(field.to_owned(), value);
    }
}

fn meta_str<'a>(object: &'a Value, field: &str) -> &'a str {
    object
        .get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn finalizers(object: &Value) -> usize {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
}

/// The object as a request for `version` sees it.
pub fn output(resource: &ResourceType, version: &str, object: &Value) -> Value {
    let mut out = object.clone();
    set_field(&mut out, "apiVersion", json!(resource.api_version(version)));
    set_field(&mut out, "kind", json!(resource.kind));
    out
}

/// A body must be an object whose `apiVersion` and `kind`, when given, are the endpoint's.
pub fn check_type_meta(ctx: &Context, body: &mut Value) -> Result<(), ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON or YAML object",
        ));
    }
    let want = ctx.api_version();
    match body.get("apiVersion").and_then(Value::as_str) {
        Some(got) if got != want => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({got}) does not match the expected API version ({want})"
            )));
        }
        _ => {}
    }
    match body.get("kind").and_then(Value::as_str) {
        Some(got) if got != ctx.resource.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({got}) does not match the expected kind ({})",
                ctx.resource.kind
            )));
        }
        _ => {}
    }
    set_field(body, "apiVersion", json!(want));
    set_field(body, "kind", json!(ctx.resource.kind));
    Ok(())
}

/// Fills the namespace from the path, or rejects a body that names another one.
pub fn resolve_namespace(ctx: &Context, body: &mut Value) -> Result<(), ApiError> {
    let Some(meta) = meta(body) else {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON or YAML object",
        ));
    };
    if ctx.resource.namespaced {
        let path_ns = ctx.namespace.clone().unwrap_or_default();
        match meta.get("namespace").and_then(Value::as_str) {
            Some(ns) if !ns.is_empty() && ns != path_ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {
                meta.insert("namespace".to_owned(), json!(path_ns));
            }
        }
    } else {
        meta.remove("namespace");
    }
    Ok(())
}

/// The fields of an object that managers own: not its type, identity or system metadata.
fn owned_content(object: &Value) -> Value {
    let mut content = object.clone();
    if let Some(map) = content.as_object_mut() {
        map.remove("apiVersion");
        map.remove("kind");
        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
            meta.retain(|k, _| {
                matches!(
                    k.as_str(),
                    "labels" | "annotations" | "finalizers" | "ownerReferences"
                )
            });
            if meta.is_empty() {
                map.remove("metadata");
            }
        }
    }
    content
}

/// Records a `managedFields` entry: Update entries gather the fields their manager changed, an
/// Apply entry holds exactly the applied fields.
fn record_manager(
    ctx: &Context,
    object: &mut Value,
    manager: &str,
    operation: &str,
    fields: Value,
) {
    let subresource = if ctx.part == Part::Status {
        Some("status")
    } else {
        None
    };
    let api_version = ctx.api_version();
    let time = ctx.now_text();
    let Some(meta) = meta(object) else {
        return;
    };
    let entries = meta.entry("managedFields").or_insert_with(|| json!([]));
    if !entries.is_array() {
        *entries = json!([]);
    }
    let Some(entries) = entries.as_array_mut() else {
        return;
    };
    let same = |e: &Value| {
        e.get("manager").and_then(Value::as_str) == Some(manager)
            && e.get("operation").and_then(Value::as_str) == Some(operation)
            && e.get("subresource").and_then(Value::as_str) == subresource
    };
    let fields = match entries.iter().find(|e| same(e)) {
        Some(existing) if operation == "Update" => {
            patch::union_field_sets(existing.get("fieldsV1").unwrap_or(&json!({})), &fields)
        }
        _ => fields,
    };
    entries.retain(|e| !same(e));
    let mut entry = json!({
        "manager": manager,
        "operation": operation,
        "apiVersion": api_version,
        "time": time,
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    });
    if let Some(subresource) = subresource {
        set_field(&mut entry, "subresource", json!(subresource));
    }
    entries.push(entry);
}

fn applied_fields(applied: &Value) -> Value {
    patch::field_set(&owned_content(applied))
}

/// The NamespaceLifecycle admission check for creating content in a namespace.
fn admit_namespace(state: &State, ctx: &Context, name: &str) -> Result<(), ApiError> {
    if !ctx.resource.namespaced {
        return Ok(());
    }
    let namespace = ctx.namespace.clone().unwrap_or_default();
    let namespaces = ("".to_owned(), "namespaces".to_owned());
    let key = ObjectKey {
        namespace: String::new(),
        name: namespace.clone(),
    };
    match state.get(&namespaces, &key) {
        None => Err(ApiError::not_found(
            &GroupResource {
                group: String::new(),
                resource: "namespaces".to_owned(),
            },
            &namespace,
        )),
        Some(ns) if ns.pointer("/metadata/deletionTimestamp").is_some() => {
            Err(ApiError::forbidden(
                &ctx.group_resource(),
                name,
                &format!(
                    "unable to create new content in namespace {namespace} because it is being terminated"
                ),
            ))
        }
        Some(_) => Ok(()),
    }
}

fn generated_name(base: &str) -> String {
    let base: String = base.chars().take(MAX_GENERATED_NAME_BASE).collect();
    let mut rng = rand::rng();
    let suffix: String = (0..GENERATED_SUFFIX_LEN)
        .map(|_| char::from(NAME_ALPHABET[rng.random_range(0..NAME_ALPHABET.len())]))
        .collect();
    format!("{base}{suffix}")
}

/// Custom resources pass through their version's structural schema: pruned and defaulted.
fn apply_schema(ctx: &Context, object: &mut Value) -> Vec<String> {
    match ctx
        .resource
        .version(&ctx.version)
        .and_then(|v| v.schema.as_ref())
    {
        Some(schema) => validation::prune_and_default(object, schema)
            .into_iter()
            .map(|field| format!("unknown field \"{field}\""))
            .collect(),
        None => Vec::new(),
    }
}

fn schema_errors(ctx: &Context, object: &Value) -> Vec<FieldError> {
    match ctx
        .resource
        .version(&ctx.version)
        .and_then(|v| v.schema.as_ref())
    {
        Some(schema) => validation::schema_errors(object, schema),
        None => Vec::new(),
    }
}

/// A CRD's name must be `<plural>.<group>`, and it must define a servable type.
fn crd_errors(crd: &Value) -> Vec<FieldError> {
    match crd_resource_type(crd) {
        Err(why) => vec![FieldError::invalid("spec", "\"\"", why)],
        Ok(defined) => {
            let name = meta_str(crd, "name");
            let want = format!("{}.{}", defined.plural, defined.group);
            if name == want {
                Vec::new()
            } else {
                vec![FieldError::invalid(
                    "metadata.name",
                    validation::render(&json!(name)),
                    "must be spec.names.plural+\".\"+spec.group",
                )]
            }
        }
    }
}

/// Creates an object: `rest.BeforeCreate`, admission, validation and the store's create.
pub fn create(
    state: &mut State,
    ctx: &Context,
    mut object: Value,
    write: Write,
) -> Result<Reply, ApiError> {
    if !meta_str(&object, "resourceVersion").is_empty() {
        return Err(ApiError::internal(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    let requested_name = meta_str(&object, "name").to_owned();
    admit_namespace(state, ctx, &requested_name)?;
    strategy::apply_defaults(&ctx.resource, &mut object);
    strategy::prepare_for_create(&ctx.resource, &ctx.version, &mut object, &ctx.now_text());
    let warnings = apply_schema(ctx, &mut object);
    stamp_identity(ctx, &mut object);
    let generate = meta_str(&object, "generateName").to_owned();
    let generated = requested_name.is_empty() && !generate.is_empty();
    let first_name = if generated {
        generated_name(&generate)
    } else {
        requested_name.clone()
    };
    set_name(&mut object, &first_name);
    let shown_name = if generated { "" } else { &requested_name };
    if ctx.resource.builtin() == Some(Builtin::Service) {
        services::begin_create(state, &mut object)
            .map_err(|e| ctx.allocation_failed(shown_name, e))?;
    }
    strategy::complete_for_validation(&ctx.resource, &mut object);
    let errors = create_errors(ctx, &first_name, &object);
    if !errors.is_empty() {
        return Err(ctx.invalid(shown_name, &errors));
    }
    let generate = generated.then_some(generate.as_str());
    let name = free_name(state, ctx, &mut object, first_name, generate)?;
    record_write(ctx, &mut object, write, |object| {
        patch::field_set(&owned_content(object))
    });
    let stored = state.put(&ctx.resource.key(), ctx.key(&name), object);
    after_create(state, ctx, &stored);
    Ok(ctx.reply(StatusCode::CREATED, &stored, warnings))
}

fn set_name(object: &mut Value, name: &str) {
    if let Some(m) = meta(object) {
        m.insert("name".to_owned(), json!(name));
    }
}

/// The metadata a new object gets from the server alone: no deletion or managed fields the
/// client sent, a new uid and the creation time.
fn stamp_identity(ctx: &Context, object: &mut Value) {
    let uid = uuid::Uuid::new_v4().to_string();
    if let Some(meta) = meta(object) {
        for field in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
        ] {
            meta.remove(field);
        }
        meta.insert("uid".to_owned(), json!(uid));
        meta.insert("creationTimestamp".to_owned(), json!(ctx.now_text()));
    }
}

/// What validation finds wrong with an object to be created under `name`: the name, the
/// schema of a custom resource, and the create rules of the kind.
fn create_errors(ctx: &Context, name: &str, object: &Value) -> Vec<FieldError> {
    let mut errors = validation::name_errors(name, ctx.resource.name_rule());
    errors.extend(schema_errors(ctx, object));
    match ctx.resource.builtin() {
        Some(Builtin::Pod) => {
            errors.extend(validation::pod_spec_errors(object.get("spec"), "spec"))
        }
        Some(Builtin::CustomResourceDefinition) => errors.extend(crd_errors(object)),
        Some(Builtin::Service) => errors.extend(services::spec_errors(object)),
        Some(Builtin::Job) => errors.extend(workloads::generated_selector_errors(object)),
        _ => {}
    }
    errors.extend(controller_errors(ctx, object));
    errors
}

/// The spec checks of a pod controller, on create and update alike: its selector, then its
/// pod template.
fn controller_errors(ctx: &Context, object: &Value) -> Vec<FieldError> {
    let Some(strategy) = ctx.resource.strategy().filter(|s| s.pod_template.is_some()) else {
        return Vec::new();
    };
    let mut errors = match strategy.rules {
        Some(Builtin::Workload) => {
            workloads::selector_errors(object, workloads::empty_selector_word(&ctx.resource.kind))
        }
        Some(Builtin::Job) => workloads::selector_errors(object, None),
        _ => Vec::new(),
    };
    errors.extend(workloads::template_errors(strategy, object));
    errors
}

/// The name a new object is stored under: `first` when it is free; when it is taken, a conflict
/// for a name of the client's own, and a name drawn again from `generate` otherwise, up to
/// [`NAME_GENERATION_ATTEMPTS`] names in all.
fn free_name(
    state: &State,
    ctx: &Context,
    object: &mut Value,
    first: String,
    generate: Option<&str>,
) -> Result<String, ApiError> {
    let resource_key = ctx.resource.key();
    let mut name = first;
    let mut attempts = 1;
    while state.get(&resource_key, &ctx.key(&name)).is_some() {
        let Some(base) = generate.filter(|_| attempts < NAME_GENERATION_ATTEMPTS) else {
            return Err(ApiError::already_exists(&ctx.group_resource(), &name));
        };
        attempts += 1;
        name = generated_name(base);
        set_name(object, &name);
    }
    Ok(name)
}

/// Records the write's `managedFields` entry: an Update by the request's manager of the fields
/// `changed` finds in the object, or the Apply of exactly the applied configuration.
fn record_write(
    ctx: &Context,
    object: &mut Value,
    write: Write,
    changed: impl FnOnce(&Value) -> Value,
) {
    match write {
        Write::Update => {
            let fields = changed(object);
            record_manager(ctx, object, &ctx.manager, "Update", fields);
        }
        Write::Apply { manager, applied } => {
            record_manager(ctx, object, &manager, "Apply", applied_fields(&applied));
        }
    }
}

/// What other parts of a cluster do at once when an object appears: the apiextensions server
/// serves a new CRD, and the service account controller gives a namespace its `default`
/// ServiceAccount.
fn after_create(state: &mut State, ctx: &Context, stored: &Value) {
    match ctx.resource.builtin() {
        Some(Builtin::CustomResourceDefinition) => {
            if let Ok(defined) = crd_resource_type(stored) {
                state.registry.register(defined);
            }
        }
        Some(Builtin::Namespace) => {
            let namespace = meta_str(stored, "name").to_owned();
            if let Some(accounts) = state.registry.by_key("", "serviceaccounts") {
                let sa = json!({
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": {
                        "name": "default",
                        "namespace": namespace,
                        "uid": uuid::Uuid::new_v4().to_string(),
                        "creationTimestamp": ctx.now_text(),
                    }
                });
                let key = ObjectKey {
                    namespace,
                    name: "default".to_owned(),
                };
                if state.get(&accounts.key(), &key).is_none() {
                    state.put(&accounts.key(), key, sa);
                }
            }
        }
        _ => {}
    }
}

pub fn get(state: &State, ctx: &Context, name: &str) -> Result<Value, ApiError> {
    state
        .get(&ctx.resource.key(), &ctx.key(name))
        .map(|o| output(&ctx.resource, &ctx.version, o))
        .ok_or_else(|| ApiError::not_found(&ctx.group_resource(), name))
}

/// Where a paginated list continues.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    namespace: String,
    name: String,
}

impl ContinueToken {
    /// Reads a `continue` parameter, and checks that the list it continues can still be served.
    fn resume(
        state: &State,
        resource_key: &(String, String),
        text: &str,
    ) -> Result<Self, ApiError> {
        let token: Self = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)"))?;
        if state.check_resumable(resource_key, token.rv).is_err() {
            return Err(ApiError::expired(
                "The provided continue parameter is too old to display a consistent list result. You can start \
                 a new list without the continue parameter, or use the continue token in this response to \
                 retrieve the remainder of the results. Continuing with the provided token results in an \
                 inconsistent list - objects that were created, modified, or deleted between the time the \
                 first chunk was returned and now may show up in the list.",
            ));
        }
        Ok(token)
    }

    /// Whether the token's object comes before the object under `key`, in the order lists go in.
    fn comes_before(&self, key: &ObjectKey) -> bool {
        (key.namespace.as_str(), key.name.as_str()) > (self.namespace.as_str(), self.name.as_str())
    }

    fn encode(&self) -> Result<String, ApiError> {
        let encoded = serde_json::to_vec(self).map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(encoded))
    }
}

/// A list, optionally paginated with `limit` and `continue`.
pub fn list(
    state: &State,
    ctx: &Context,
    selection: &Selection,
    limit: Option<usize>,
    continue_from: Option<&str>,
) -> Result<Value, ApiError> {
    let resource_key = ctx.resource.key();
    let start = continue_from
        .map(|text| ContinueToken::resume(state, &resource_key, text))
        .transpose()?;
    let list_rv = start.as_ref().map_or(state.revision(), |t| t.rv);
    let matching: Vec<(&ObjectKey, &Value)> = state
        .objects(&resource_key)
        .filter(|(k, _)| ctx.namespace.as_ref().is_none_or(|ns| *ns == k.namespace))
        .filter(|(k, _)| start.as_ref().is_none_or(|t| t.comes_before(k)))
        .filter(|(_, o)| selection.matches(o))
        .collect();
    let take = limit
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX)
        .min(matching.len());
    let items: Vec<Value> = matching[..take]
        .iter()
        .map(|(_, o)| list_item(ctx, o))
        .collect();
    Ok(json!({
        "kind": ctx.resource.list_kind,
        "apiVersion": ctx.api_version(),
        "metadata": list_metadata(list_rv, &matching, take)?,
        "items": items,
    }))
}

/// An item of a list: built-in kinds leave out each item's `apiVersion` and `kind`, custom
/// resources keep them.
fn list_item(ctx: &Context, object: &Value) -> Value {
    let mut item = output(&ctx.resource, &ctx.version, object);
    if !ctx.resource.is_custom()
        && let Some(map) = item.as_object_mut()
    {
        map.remove("apiVersion");
        map.remove("kind");
    }
    item
}

/// A list's metadata: its resourceVersion and, when it shows only the first `take` of the
/// `matching` objects, where it continues and how many are left.
fn list_metadata(
    list_rv: u64,
    matching: &[(&ObjectKey, &Value)],
    take: usize,
) -> Result<Map<String, Value>, ApiError> {
    let mut metadata = Map::new();
    metadata.insert("resourceVersion".to_owned(), json!(list_rv.to_string()));
    if take < matching.len()
        && let Some((last, _)) = matching.get(take - 1)
    {
        let token = ContinueToken {
            rv: list_rv,
            namespace: last.namespace.clone(),
            name: last.name.clone(),
        };
        metadata.insert("continue".to_owned(), json!(token.encode()?));
        metadata.insert(
            "remainingItemCount".to_owned(),
            json!(matching.len() - take),
        );
    }
    Ok(metadata)
}

/// PUT: replaces an object, or creates it where the strategy allows.
pub fn replace(
    state: &mut State,
    ctx: &Context,
    name: &str,
    mut body: Value,
) -> Result<Reply, ApiError> {
    check_type_meta(ctx, &mut body)?;
    let body_name = meta_str(&body, "name").to_owned();
    if body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    resolve_namespace(ctx, &mut body)?;
    match state.get(&ctx.resource.key(), &ctx.key(name)).cloned() {
        Some(old) => update(state, ctx, name, old, body, Write::Update),
        None if ctx.resource.allow_create_on_update() && ctx.part == Part::Main => {
            if let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("resourceVersion");
            }
            create(state, ctx, body, Write::Update)
        }
        None => Err(ApiError::not_found(&ctx.group_resource(), name)),
    }
}

/// The patch formats, by content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        match content_type.split(';').next().unwrap_or("").trim() {
            "application/json-patch+json" => Some(Self::Json),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// PATCH: applies a patch to the stored object and updates it; server-side apply of a missing
/// object creates it.
pub fn patch(
    state: &mut State,
    ctx: &Context,
    name: &str,
    kind: PatchType,
    body: Value,
    apply_manager: Option<String>,
) -> Result<Reply, ApiError> {
    if kind == PatchType::Strategic && !ctx.resource.supports_strategic_merge() {
        return Err(ApiError::unsupported_media_type(
            "application/strategic-merge-patch+json",
            &[
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/apply-patch+yaml",
            ],
        ));
    }
    let apply_document: fn(&mut Value, &Value) -> Result<(), ApiError> = match kind {
        PatchType::Apply => {
            return apply(state, ctx, name, body, apply_manager.unwrap_or_default());
        }
        PatchType::Merge => |target, document| {
            patch::merge_patch(target, document);
            Ok(())
        },
        PatchType::Strategic => |target, document| {
            patch::strategic_merge(target, document).map_err(ApiError::bad_request)
        },
        PatchType::Json => {
            |target, document| patch::json_patch(target, document).map_err(ApiError::unprocessable)
        }
    };
    let Some(old) = state.get(&ctx.resource.key(), &ctx.key(name)).cloned() else {
        return Err(ApiError::not_found(&ctx.group_resource(), name));
    };
    let mut patched = output(&ctx.resource, &ctx.version, &old);
    apply_document(&mut patched, &body)?;
    update(state, ctx, name, old, patched, Write::Update)
}

/// Server-side apply, as a merge of the applied configuration (strategic for built-in kinds)
/// that records the manager's Apply entry. A missing object is created.
fn apply(
    state: &mut State,
    ctx: &Context,
    name: &str,
    body: Value,
    manager: String,
) -> Result<Reply, ApiError> {
    let existing = state.get(&ctx.resource.key(), &ctx.key(name)).cloned();
    let mut applied = body;
    check_type_meta(ctx, &mut applied)?;
    let applied_name = meta_str(&applied, "name").to_owned();
    if !applied_name.is_empty() && applied_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({applied_name}) does not match the name on the URL ({name})"
        )));
    }
    resolve_namespace(ctx, &mut applied)?;
    set_name(&mut applied, name);
    let Some(old) = existing else {
        if ctx.part == Part::Status {
            return Err(ApiError::not_found(&ctx.group_resource(), name));
        }
        let write = Write::Apply {
            manager,
            applied: applied.clone(),
        };
        return create(state, ctx, applied, write);
    };
    let mut merged = output(&ctx.resource, &ctx.version, &old);
    merge_applied(ctx, &mut merged, &applied)?;
    remove_disowned(ctx, &old, &mut merged, &manager, &applied);
    update(
        state,
        ctx,
        name,
        old,
        merged,
        Write::Apply { manager, applied },
    )
}

/// The fields `manager` applied to `old` before and no longer applies, and that no other
/// manager owns, removed from `merged`, as server-side apply removes them.
fn remove_disowned(ctx: &Context, old: &Value, merged: &mut Value, manager: &str, applied: &Value) {
    let subresource = (ctx.part == Part::Status).then_some("status");
    let empty = Vec::new();
    let entries = (old.pointer("/metadata/managedFields"))
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let mine = |entry: &Value| {
        entry.get("manager").and_then(Value::as_str) == Some(manager)
            && entry.get("operation").and_then(Value::as_str) == Some("Apply")
            && entry.get("subresource").and_then(Value::as_str) == subresource
    };
    let Some(previous) = entries
        .iter()
        .find(|e| mine(e))
        .and_then(|e| e.get("fieldsV1"))
    else {
        return;
    };
    let others = (entries.iter())
        .filter(|entry| !mine(entry))
        .filter_map(|entry| entry.get("fieldsV1"))
        .fold(json!({}), |all, set| patch::union_field_sets(&all, set));
    patch::remove_disowned(merged, previous, &applied_fields(applied), &others);
}

fn merge_applied(ctx: &Context, target: &mut Value, applied: &Value) -> Result<(), ApiError> {
    let mut applied = applied.clone();
    if let Some(meta) = applied.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
        meta.remove("managedFields");
    }
    if ctx.resource.supports_strategic_merge() {
        patch::strategic_merge(target, &applied).map_err(ApiError::bad_request)
    } else {
        patch::merge_patch(target, &applied);
        Ok(())
    }
}

/// `Store.Update`: the resourceVersion precondition, `BeforeUpdate`, validation, the no-op
/// short-circuit, and deletion once the last finalizer of a deleting object is gone.
pub fn update(
    state: &mut State,
    ctx: &Context,
    name: &str,
    old: Value,
    mut new: Value,
    write: Write,
) -> Result<Reply, ApiError> {
    take_resource_version(ctx, name, &old, &mut new)?;
    if ctx.part == Part::Main {
        strategy::apply_defaults(&ctx.resource, &mut new);
        if ctx.resource.builtin() == Some(Builtin::Service) {
            services::begin_update(state, &ctx.key(name), &old, &mut new)
                .map_err(|e| ctx.allocation_failed(name, e))?;
        }
    }
    strategy::prepare_for_update(&ctx.resource, &ctx.version, ctx.part, &old, &mut new);
    let warnings = apply_schema(ctx, &mut new);
    keep_system_metadata(&old, &mut new);
    let errors = update_errors(ctx, &old, &new);
    if !errors.is_empty() {
        return Err(ctx.invalid(name, &errors));
    }
    if unchanged(ctx, &old, &new) {
        return Ok(ctx.reply(StatusCode::OK, &old, warnings));
    }
    record_write(ctx, &mut new, write, |new| {
        patch::changed_field_set(&owned_content(&old), &owned_content(new))
    });
    set_field(
        &mut new,
        "apiVersion",
        old.get("apiVersion")
            .cloned()
            .unwrap_or_else(|| json!(ctx.api_version())),
    );
    if finalized(&old, &new) {
        let last = remove(state, &ctx.resource, &ctx.key(name)).unwrap_or(old);
        return Ok(ctx.reply(StatusCode::OK, &last, warnings));
    }
    let stored = state.put(&ctx.resource.key(), ctx.key(name), new);
    if ctx.resource.builtin() == Some(Builtin::CustomResourceDefinition)
        && let Ok(defined) = crd_resource_type(&stored)
    {
        state.registry.register(defined);
    }
    Ok(ctx.reply(StatusCode::OK, &stored, warnings))
}

/// The resourceVersion precondition of an update: a stale one is a conflict, and none (or `0`)
/// is refused for kinds that need one. The stored resourceVersion then goes on the new object.
fn take_resource_version(
    ctx: &Context,
    name: &str,
    old: &Value,
    new: &mut Value,
) -> Result<(), ApiError> {
    let old_rv = meta_str(old, "resourceVersion").to_owned();
    let new_rv = meta_str(new, "resourceVersion");
    if new_rv.is_empty() || new_rv == "0" {
        if !ctx.resource.allow_unconditional_update() {
            let kind = GroupResource {
                group: ctx.resource.group.clone(),
                resource: ctx.resource.plural.clone(),
            };
            return Err(ApiError::invalid(
                &kind.to_string(),
                &ctx.resource.group,
                &ctx.resource.plural,
                name,
                &[FieldError::invalid(
                    "metadata.resourceVersion",
                    "0x0",
                    "must be specified for an update",
                )],
            ));
        }
    } else if new_rv != old_rv {
        return Err(ApiError::stale(&ctx.group_resource(), name));
    }
    if let Some(m) = meta(new) {
        m.insert("resourceVersion".to_owned(), json!(old_rv));
    }
    Ok(())
}

/// The metadata only the server sets stays as stored: uid (unless the update names one, which
/// validation then checks), creation and deletion; `managedFields` too when the update sends none.
fn keep_system_metadata(old: &Value, new: &mut Value) {
    let Some(meta) = meta(new) else {
        return;
    };
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        let keep = old.pointer(&format!("/metadata/{field}")).cloned();
        let given = meta.get(field).is_some_and(|v| !v.is_null() && v != "");
        match keep {
            Some(v) if field != "uid" || !given => {
                meta.insert(field.to_owned(), v);
            }
            Some(_) => {}
            None => {
                if field != "uid" {
                    meta.remove(field);
                }
            }
        }
    }
    if !meta.contains_key("managedFields")
        && let Some(managed) = old.pointer("/metadata/managedFields")
    {
        meta.insert("managedFields".to_owned(), managed.clone());
    }
}

/// What validation finds wrong with an update: changed identity metadata, the schema of a custom
/// resource, and the update rules of the kind.
fn update_errors(ctx: &Context, old: &Value, new: &Value) -> Vec<FieldError> {
    let mut errors = validation::metadata_update_errors(old, new);
    errors.extend(schema_errors(ctx, new));
    if ctx.part == Part::Status {
        if ctx.resource.builtin() == Some(Builtin::CustomResourceDefinition) {
            errors.extend(crd_errors(new));
        }
        return errors;
    }
    match ctx.resource.builtin() {
        Some(Builtin::Pod) => errors.extend(validation::pod_update_errors(old, new)),
        Some(Builtin::CustomResourceDefinition) => errors.extend(crd_errors(new)),
        Some(Builtin::Service) => errors.extend(services::update_errors(old, new)),
        Some(Builtin::RoleBinding) => errors.extend(validation::role_ref_update_errors(old, new)),
        _ => {}
    }
    errors.extend(controller_errors(ctx, new));
    if matches!(
        ctx.resource.builtin(),
        Some(Builtin::Workload | Builtin::Job)
    ) {
        errors.extend(workloads::selector_update_errors(old, new));
    }
    errors
}

/// Whether the updated object is the stored one but for its apiVersion: then nothing is written.
fn unchanged(ctx: &Context, old: &Value, new: &Value) -> bool {
    let mut compared = new.clone();
    let mut stored_form = output(&ctx.resource, &ctx.version, old);
    for object in [&mut compared, &mut stored_form] {
        if let Some(map) = object.as_object_mut() {
            map.remove("apiVersion");
        }
    }
    compared == stored_form
}

/// Whether the update took the last finalizer off an object whose deletion is due, which then
/// goes.
fn finalized(old: &Value, new: &Value) -> bool {
    new.pointer("/metadata/deletionTimestamp").is_some()
        && finalizers(new) == 0
        && old
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            == Some(0)
}

/// Removes an object from the store, then does what follows from that at once: the garbage
/// collector deletes dependents whose owners are all gone, a terminating namespace that is now
/// empty goes, a deleted CRD takes its type and objects with it, and a deleted Service its
/// Endpoints (its IP and node ports are free once it is gone).
fn remove(state: &mut State, resource: &ResourceType, key: &ObjectKey) -> Option<Value> {
    let last = state.remove(&resource.key(), key)?;
    if resource.builtin() == Some(Builtin::CustomResourceDefinition)
        && let Ok(defined) = crd_resource_type(&last)
    {
        state.remove_all(&defined.key());
        state.registry.unregister(&defined.group, &defined.plural);
    }
    if resource.builtin() == Some(Builtin::Service) {
        state.remove(&(String::new(), "endpoints".to_owned()), key);
    }
    let uid = meta_str(&last, "uid").to_owned();
    collect_garbage(state, &uid);
    if !key.namespace.is_empty() {
        finish_namespace(state, &key.namespace);
    }
    Some(last)
}

/// Background cascading deletion: dependents of a removed owner with no other owner left.
fn collect_garbage(state: &mut State, removed_uid: &str) {
    if removed_uid.is_empty() {
        return;
    }
    let live: std::collections::HashSet<String> = state
        .all_objects()
        .map(|(_, _, o)| meta_str(o, "uid").to_owned())
        .collect();
    let orphans: Vec<(Arc<ResourceType>, ObjectKey)> = state
        .all_objects()
        .filter(|(_, _, o)| {
            let owners: Vec<&str> = o
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .map(|refs| {
                    refs.iter()
                        .filter_map(|r| r.get("uid").and_then(Value::as_str))
                        .collect()
                })
                .unwrap_or_default();
            owners.contains(&removed_uid) && owners.iter().all(|u| !live.contains(*u))
        })
        .filter_map(|(r, k, _)| Some((state.registry.by_key(&r.0, &r.1)?, k.clone())))
        .collect();
    let now = jiff::Timestamp::now();
    for (resource, key) in orphans {
        delete_object(state, &resource, &key, &DeleteOptions::default(), now);
    }
}

/// Completes a terminating namespace once nothing is left in it.
fn finish_namespace(state: &mut State, namespace: &str) {
    let namespaces = ("".to_owned(), "namespaces".to_owned());
    let key = ObjectKey {
        namespace: String::new(),
        name: namespace.to_owned(),
    };
    let Some(ns) = state.get(&namespaces, &key) else {
        return;
    };
    if ns.pointer("/metadata/deletionTimestamp").is_none() {
        return;
    }
    let empty = !state
        .all_objects()
        .any(|(_, k, _)| k.namespace == namespace);
    if !empty {
        return;
    }
    if finalizers(ns) == 0 {
        state.remove(&namespaces, &key);
    } else if ns
        .pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
    {
        let mut finalized = ns.clone();
        if let Some(spec) = strategy::object_at(&mut finalized, "spec") {
            spec.insert("finalizers".to_owned(), json!([]));
        }
        state.put(&namespaces, key, finalized);
    }
}

/// The outcome of a deletion: still there (marked), or gone with its last state.
enum Deletion {
    Pending(Value),
    Removed(Value),
}

/// `Store.Delete`: graceful deletion, finalizers, then removal.
fn delete_object(
    state: &mut State,
    resource: &ResourceType,
    key: &ObjectKey,
    options: &DeleteOptions,
    now: jiff::Timestamp,
) -> Option<Deletion> {
    let object = state.get(&resource.key(), key)?.clone();
    let pending = object.pointer("/metadata/deletionTimestamp").is_some();
    let current_grace = object
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64);
    if resource.builtin() == Some(Builtin::Namespace) {
        return Some(Deletion::Pending(terminate_namespace(
            state, key, object, now,
        )));
    }
    let mark = |state: &mut State, mut object: Value, grace: i64| -> Value {
        let when = now
            .checked_add(jiff::SignedDuration::from_secs(grace))
            .unwrap_or(now);
        if let Some(meta) = meta(&mut object) {
            meta.insert("deletionTimestamp".to_owned(), json!(format_time(when)));
            meta.insert("deletionGracePeriodSeconds".to_owned(), json!(grace));
        }
        state.put(&resource.key(), key.clone(), object)
    };
    if let Some(grace) = strategy::grace_period(resource, &object, options.grace_period_seconds)
        && grace > 0
    {
        if pending && current_grace.is_some_and(|g| g <= grace) {
            return Some(Deletion::Pending(object));
        }
        return Some(Deletion::Pending(mark(state, object, grace)));
    }
    if finalizers(&object) > 0 {
        if pending && current_grace == Some(0) {
            return Some(Deletion::Pending(object));
        }
        return Some(Deletion::Pending(mark(state, object, 0)));
    }
    remove(state, resource, key).map(Deletion::Removed)
}

/// The namespace lifecycle: a deleted namespace turns Terminating, its content is deleted (as
/// the namespace controller does, at once here), and it goes when empty.
fn terminate_namespace(
    state: &mut State,
    key: &ObjectKey,
    mut namespace: Value,
    now: jiff::Timestamp,
) -> Value {
    let namespaces = ("".to_owned(), "namespaces".to_owned());
    if namespace.pointer("/metadata/deletionTimestamp").is_none() {
        if let Some(meta) = meta(&mut namespace) {
            meta.insert("deletionTimestamp".to_owned(), json!(format_time(now)));
            meta.insert("deletionGracePeriodSeconds".to_owned(), json!(0));
        }
        set_field(&mut namespace, "status", json!({"phase": "Terminating"}));
        namespace = state.put(&namespaces, key.clone(), namespace);
        let content: Vec<(Arc<ResourceType>, ObjectKey)> = state
            .all_objects()
            .filter(|(_, k, _)| k.namespace == key.name)
            .filter_map(|(r, k, _)| Some((state.registry.by_key(&r.0, &r.1)?, k.clone())))
            .collect();
        for (resource, object_key) in content {
            delete_object(
                state,
                &resource,
                &object_key,
                &DeleteOptions::default(),
                now,
            );
        }
        finish_namespace(state, &key.name);
    }
    state.get(&namespaces, key).cloned().unwrap_or(namespace)
}

/// DELETE of one object.
pub fn delete(
    state: &mut State,
    ctx: &Context,
    name: &str,
    options: &DeleteOptions,
) -> Result<Reply, ApiError> {
    let key = ctx.key(name);
    let Some(object) = state.get(&ctx.resource.key(), &key) else {
        return Err(ApiError::not_found(&ctx.group_resource(), name));
    };
    let uid = options.precondition_uid.as_deref();
    check_precondition(ctx, name, object, "uid", "UID", uid)?;
    let rv = options.precondition_resource_version.as_deref();
    check_precondition(ctx, name, object, "resourceVersion", "ResourceVersion", rv)?;
    match delete_object(state, &ctx.resource, &key, options, ctx.now) {
        None => Err(ApiError::not_found(&ctx.group_resource(), name)),
        Some(Deletion::Pending(object)) => {
            Ok(Reply::ok(output(&ctx.resource, &ctx.version, &object)))
        }
        Some(Deletion::Removed(last)) if ctx.resource.returns_deleted_object() => {
            Ok(Reply::ok(output(&ctx.resource, &ctx.version, &last)))
        }
        Some(Deletion::Removed(last)) => Ok(Reply::ok(json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {
                "name": name,
                "group": ctx.resource.group,
                "kind": ctx.resource.plural,
                "uid": meta_str(&last, "uid"),
            },
        }))),
    }
}

/// A delete's precondition on a metadata field, `label` in the conflict's message: the object's
/// must be the one the precondition names, if it names one.
fn check_precondition(
    ctx: &Context,
    name: &str,
    object: &Value,
    field: &str,
    label: &str,
    wanted: Option<&str>,
) -> Result<(), ApiError> {
    let actual = meta_str(object, field);
    match wanted {
        Some(wanted) if wanted != actual => {
            let why = format!(
                "Precondition failed: {label} in precondition: {wanted}, {label} in object meta: {actual}"
            );
            Err(ApiError::conflict(&ctx.group_resource(), name, &why))
        }
        _ => Ok(()),
    }
}

/// DELETE of a collection: every selected object, answered with the list of them.
pub fn delete_collection(
    state: &mut State,
    ctx: &Context,
    selection: &Selection,
    options: &DeleteOptions,
) -> Result<Reply, ApiError> {
    let keys: Vec<ObjectKey> = state
        .objects(&ctx.resource.key())
        .filter(|(k, _)| ctx.namespace.as_ref().is_none_or(|ns| *ns == k.namespace))
        .filter(|(_, o)| selection.matches(o))
        .map(|(k, _)| k.clone())
        .collect();
    let mut items = Vec::new();
    for key in keys {
        match delete_object(state, &ctx.resource, &key, options, ctx.now) {
            Some(Deletion::Pending(o) | Deletion::Removed(o)) => {
                items.push(output(&ctx.resource, &ctx.version, &o))
            }
            None => {}
        }
    }
    Ok(Reply::ok(json!({
        "kind": ctx.resource.list_kind,
        "apiVersion": ctx.api_version(),
        "metadata": {"resourceVersion": state.revision().to_string()},
        "items": items,
    })))
}

/// POST `pods/{name}/binding`: the scheduler's write of `spec.nodeName`.
pub fn bind(state: &mut State, ctx: &Context, name: &str, body: &Value) -> Result<Reply, ApiError> {
    let key = ctx.key(name);
    let Some(pod) = state.get(&ctx.resource.key(), &key).cloned() else {
        return Err(ApiError::not_found(&ctx.group_resource(), name));
    };
    let node = body
        .pointer("/target/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if node.is_empty() {
        let errors = [FieldError::required("target.name", "")];
        return Err(ApiError::invalid("Binding", "", "Binding", name, &errors));
    }
    let binding = GroupResource {
        group: String::new(),
        resource: "pods/binding".to_owned(),
    };
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        return Err(ApiError::conflict(
            &binding,
            name,
            &format!("pod {name} is being deleted, cannot be assigned to a host"),
        ));
    }
    let assigned = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !assigned.is_empty() {
        return Err(ApiError::conflict(
            &binding,
            name,
            &format!("pod {name} is already assigned to node \"{assigned}\""),
        ));
    }
    let mut bound = pod;
    if let Some(spec) = strategy::object_at(&mut bound, "spec") {
        spec.insert("nodeName".to_owned(), json!(node));
    }
    let condition = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null,
                           "lastTransitionTime": ctx.now_text()});
    let mut conditions: Vec<Value> = bound
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    conditions.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
    conditions.push(condition);
    if let Some(status) = strategy::object_at(&mut bound, "status") {
        status.insert("conditions".to_owned(), json!(conditions));
    }
    state.put(&ctx.resource.key(), key, bound);
    Ok(Reply {
        code: StatusCode::CREATED,
        body: json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        warnings: Vec::new(),
    })
}
