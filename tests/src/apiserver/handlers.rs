//! HTTP: the path is read as the real server's `RequestInfoFactory` reads it, then each verb goes
//! to its operation under the store's lock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::authn::{self, User};
use super::authz::{self, Attributes};
use super::discovery;
use super::errors::{ApiError, FieldError};
use super::exec::Runtime;
use super::operations::{self, Context, DeleteOptions, PatchType, Reply, Write};
use super::proxy::{self, Upstreams};
use super::resources::{Builtin, ResourceType};
use super::selectors::{FieldSelector, LabelSelector, Selection};
use super::store::{State as StoreState, Store};
use super::strategy::Part;
use super::watch::{self, WatchRequest, WatchSettings};

/// What every request handler shares.
#[derive(Debug, Clone)]
pub struct App {
    pub store: Arc<Store>,
    /// Where the service proxy forwards to.
    pub upstreams: Arc<Upstreams>,
    /// What `pods/exec` runs commands with.
    pub runtime: Arc<Runtime>,
    pub watch: WatchSettings,
    pub address: String,
}

/// Subresources of a namespace that `/api/v1/namespaces/<name>/<sub>` names.
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

/// The default watch timeout when the client sets none (the real one is 30 to 60 minutes).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// The media types a PATCH may send.
const PATCH_TYPES: [&str; 4] = [
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/apply-patch+yaml",
    "application/strategic-merge-patch+json",
];

/// A request for objects, as its path names them.
#[derive(Debug)]
struct Target {
    group: String,
    version: String,
    plural: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
    watch_prefix: bool,
}

enum Route {
    Version,
    CoreVersions,
    Groups,
    Group(String),
    ResourceList(String, String),
    Objects(Target),
}

fn route(path: &str) -> Option<Route> {
    let parts: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    let (group, version, rest) = match parts.as_slice() {
        ["version"] => return Some(Route::Version),
        ["api"] => return Some(Route::CoreVersions),
        ["api", version] => return Some(Route::ResourceList(String::new(), (*version).to_owned())),
        ["api", version, rest @ ..] => (String::new(), *version, rest),
        ["apis"] => return Some(Route::Groups),
        ["apis", group] => return Some(Route::Group((*group).to_owned())),
        ["apis", group, version] => {
            return Some(Route::ResourceList(
                (*group).to_owned(),
                (*version).to_owned(),
            ));
        }
        ["apis", group, version, rest @ ..] => ((*group).to_owned(), *version, rest),
        _ => return None,
    };
    let (watch_prefix, rest) = match rest {
        ["watch", tail @ ..] => (true, tail),
        _ => (false, rest),
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, resource, tail @ ..] if !NAMESPACE_SUBRESOURCES.contains(resource) => {
            (Some((*ns).to_owned()), [&[*resource][..], tail].concat())
        }
        _ => (None, rest.to_vec()),
    };
    let (plural, name, subresource) = match rest.as_slice() {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(*name), None),
        [plural, name, sub] => (*plural, Some(*name), Some(*sub)),
        _ => return None,
    };
    Some(Route::Objects(Target {
        group,
        version: version.to_owned(),
        plural: plural.to_owned(),
        namespace,
        name: name.map(str::to_owned),
        subresource: subresource.map(str::to_owned),
        watch_prefix,
    }))
}

fn json_response(code: StatusCode, body: &Value, warnings: &[String]) -> Response {
    let mut response = (code, axum::Json(body)).into_response();
    for warning in warnings {
        let text = format!("299 - {}", Value::String(warning.clone()));
        if let Ok(value) = HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

fn reply(result: Result<Reply, ApiError>) -> Response {
    match result {
        Ok(reply) => json_response(reply.code, &reply.body, &reply.warnings),
        Err(error) => error.into_response(),
    }
}

fn flag(params: &HashMap<String, String>, name: &str) -> bool {
    matches!(params.get(name).map(String::as_str), Some("true" | "1"))
}

/// The one handler: everything the server serves goes through here, from the user that
/// [`authn::layer`] authenticated.
pub async fn handle(
    State(app): State<Arc<App>>,
    Extension(user): Extension<User>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let answer = if let Some(path) = proxy::parse(uri.path()) {
        proxy::forward(&app, &user, method, path, uri.query(), &headers, body).await
    } else {
        match route(uri.path()) {
            Some(Route::Objects(target)) => {
                objects(&app, &user, &method, target, &headers, &params, &body).await
            }
            other => non_resource(&app, &user, &method, uri.path(), other),
        }
    };
    answer.unwrap_or_else(IntoResponse::into_response)
}

/// A request for no resource: discovery, or a path the server does not serve. RBAC asks about
/// the path, with the method in lower case as the verb.
fn non_resource(
    app: &App,
    user: &User,
    method: &Method,
    path: &str,
    route: Option<Route>,
) -> Result<Response, ApiError> {
    let state = app.store.lock();
    let verb = method.as_str().to_ascii_lowercase();
    authz::authorize_path(&state, user, &verb, path)?;
    let document = match route {
        Some(Route::Version) => Some(discovery::version()),
        Some(Route::CoreVersions) => Some(discovery::core_versions(&app.address)),
        Some(Route::Groups) => Some(discovery::group_list(&state.registry)),
        Some(Route::Group(group)) => discovery::group(&state.registry, &group),
        Some(Route::ResourceList(group, version)) => {
            discovery::resource_list(&state.registry, &group, &version)
        }
        Some(Route::Objects(_)) | None => None,
    };
    match document {
        Some(document) if *method == Method::GET => {
            Ok(json_response(StatusCode::OK, &document, &[]))
        }
        _ => Err(ApiError::path_not_found()),
    }
}

fn parse_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let yaml = content_type.contains("yaml");
    let parsed = if yaml {
        serde_yaml::from_slice::<Value>(body).map_err(|e| e.to_string())
    } else {
        serde_json::from_slice::<Value>(body).map_err(|e| e.to_string())
    };
    parsed.map_err(|why| {
        ApiError::bad_request(format!(
            "the body of the request could not be decoded: {why}"
        ))
    })
}

fn selection(
    params: &HashMap<String, String>,
    resource: &ResourceType,
    version: &str,
) -> Result<Selection, ApiError> {
    let labels = LabelSelector::parse(params.get("labelSelector").map_or("", String::as_str))?;
    let served = resource
        .version(version)
        .ok_or_else(ApiError::path_not_found)?;
    let fields = FieldSelector::parse(
        params.get("fieldSelector").map_or("", String::as_str),
        served,
    )?;
    Ok(Selection { labels, fields })
}

fn delete_options(
    params: &HashMap<String, String>,
    body: &Bytes,
) -> Result<DeleteOptions, ApiError> {
    let from_body: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?
    };
    let grace_from_query = match params.get("gracePeriodSeconds") {
        Some(text) => Some(
            text.parse::<i64>()
                .map_err(|e| ApiError::bad_request(e.to_string()))?,
        ),
        None => None,
    };
    let text = |pointer: &str| {
        from_body
            .pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    Ok(DeleteOptions {
        grace_period_seconds: grace_from_query
            .or_else(|| from_body.get("gracePeriodSeconds").and_then(Value::as_i64)),
        precondition_uid: text("/preconditions/uid"),
        precondition_resource_version: text("/preconditions/resourceVersion"),
    })
}

/// The field manager of a non-apply write: `fieldManager`, or the user agent up to its first `/`.
fn manager(params: &HashMap<String, String>, headers: &HeaderMap) -> String {
    if let Some(manager) = params.get("fieldManager").filter(|m| !m.is_empty()) {
        return manager.clone();
    }
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .filter(|m| !m.is_empty())
        .unwrap_or("unknown")
        .to_owned()
}

fn patch_options_invalid(error: FieldError) -> ApiError {
    ApiError::invalid(
        "PatchOptions.meta.k8s.io",
        "meta.k8s.io",
        "PatchOptions",
        "",
        &[error],
    )
}

/// Runs a write under the lock: on a scratch copy of the state for `dryRun=All`, for real
/// otherwise, then wakes the watches.
fn write<T>(app: &App, dry_run: bool, op: impl FnOnce(&mut StoreState) -> T) -> T {
    let result = {
        let mut state = app.store.lock();
        if dry_run {
            let mut scratch = state.clone();
            op(&mut scratch)
        } else {
            op(&mut state)
        }
    };
    if !dry_run {
        app.store.notify();
    }
    result
}

/// A request for objects, resolved to the type it names: what each verb's step reads.
struct ObjectRequest<'a> {
    app: &'a App,
    method: &'a Method,
    target: Target,
    headers: &'a HeaderMap,
    params: &'a HashMap<String, String>,
    body: &'a Bytes,
    resource: Arc<ResourceType>,
    ctx: Context,
    /// `dryRun=All`: the write runs on a scratch copy of the state.
    dry_run: bool,
}

async fn objects(
    app: &App,
    user: &User,
    method: &Method,
    target: Target,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let attributes = request_attributes(method, &target, params);
    authz::authorize(&app.store.lock(), user, &attributes)?;
    let resource = served_type(app, &target)?;
    let ctx = Context {
        resource: Arc::clone(&resource),
        version: target.version.clone(),
        namespace: target.namespace.clone(),
        part: part(&target, &resource)?,
        manager: manager(params, headers),
        now: jiff::Timestamp::now(),
    };
    let request = ObjectRequest {
        app,
        method,
        target,
        headers,
        params,
        body,
        resource,
        ctx,
        dry_run: params.get("dryRun").is_some_and(|v| v == "All"),
    };
    if request.is_watch() {
        request.watch().await
    } else {
        request.verb()
    }
}

/// A watch: under `/watch/`, or a GET of a collection with `watch=true`.
fn is_watch(method: &Method, target: &Target, params: &HashMap<String, String>) -> bool {
    target.watch_prefix
        || (*method == Method::GET && target.name.is_none() && flag(params, "watch"))
}

/// The name a list or watch asks for with a `metadata.name` field selector of one value.
fn selected_name(params: &HashMap<String, String>) -> Option<String> {
    params
        .get("fieldSelector")?
        .split(',')
        .find_map(|term| {
            let value = term.trim().strip_prefix("metadata.name")?;
            value.strip_prefix("==").or_else(|| value.strip_prefix('='))
        })
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
}

/// What the authorizer is asked: the verb from the method (`list`, `watch` and
/// `deletecollection` for collections), and the namespace, which for a namespace is the
/// namespace itself.
fn request_attributes(
    method: &Method,
    target: &Target,
    params: &HashMap<String, String>,
) -> Attributes {
    let one = target.name.is_some();
    let verb = match *method {
        _ if is_watch(method, target, params) => "watch",
        Method::GET | Method::HEAD if one => "get",
        Method::GET | Method::HEAD => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if one => "delete",
        Method::DELETE => "deletecollection",
        _ => "",
    };
    let is_namespace = target.group.is_empty() && target.plural == "namespaces";
    let namespace = match &target.namespace {
        None if is_namespace => target.name.clone(),
        other => other.clone(),
    };
    let name = match (&target.name, verb) {
        (None, "list" | "watch") => selected_name(params),
        (name, _) => name.clone(),
    };
    Attributes {
        verb,
        group: target.group.clone(),
        resource: target.plural.clone(),
        subresource: target.subresource.clone(),
        namespace,
        name,
    }
}

/// The type the path names, where the path fits its scope: a namespace only for a namespaced
/// type, and a namespaced object only with its namespace.
fn served_type(app: &App, target: &Target) -> Result<Arc<ResourceType>, ApiError> {
    let resource = app
        .store
        .lock()
        .registry
        .find(&target.group, &target.version, &target.plural)
        .ok_or_else(ApiError::path_not_found)?;
    if target.namespace.is_some() && !resource.namespaced {
        return Err(ApiError::path_not_found());
    }
    if resource.namespaced && target.namespace.is_none() && target.name.is_some() {
        return Err(ApiError::path_not_found());
    }
    Ok(resource)
}

/// The part of the object the path's subresource names: `status` where the type has one, the
/// main resource for a pod's `binding` and for no subresource.
fn part(target: &Target, resource: &ResourceType) -> Result<Part, ApiError> {
    match target.subresource.as_deref() {
        None => Ok(Part::Main),
        Some("status") if resource.has_status(&target.version) => Ok(Part::Status),
        Some("binding") if resource.builtin() == Some(Builtin::Pod) => Ok(Part::Main),
        Some("token") if resource.builtin() == Some(Builtin::ServiceAccount) => Ok(Part::Main),
        Some(_) => Err(ApiError::path_not_found()),
    }
}

/// `timeoutSeconds`, or the default watch timeout.
fn watch_timeout(params: &HashMap<String, String>) -> Result<Duration, ApiError> {
    match params.get("timeoutSeconds") {
        Some(t) => Ok(Duration::from_secs(t.parse().map_err(|_| {
            ApiError::bad_request(format!("invalid timeoutSeconds: {t}"))
        })?)),
        None => Ok(DEFAULT_WATCH_TIMEOUT),
    }
}

/// The patch format of a PATCH's content type; 415 for any other.
fn patch_type(headers: &HeaderMap) -> Result<PatchType, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    PatchType::from_content_type(content_type)
        .ok_or_else(|| ApiError::unsupported_media_type(content_type, &PATCH_TYPES))
}

/// The `fieldManager` of a patch, which an apply patch must name; `force` goes only with apply.
fn apply_manager(
    params: &HashMap<String, String>,
    kind: PatchType,
) -> Result<Option<String>, ApiError> {
    let field_manager = params
        .get("fieldManager")
        .filter(|m| !m.is_empty())
        .cloned();
    if kind == PatchType::Apply && field_manager.is_none() {
        return Err(patch_options_invalid(FieldError::required(
            "fieldManager",
            "is required for apply patch",
        )));
    }
    if kind != PatchType::Apply && params.contains_key("force") {
        return Err(patch_options_invalid(FieldError::forbidden(
            "force",
            "may not be specified for non-apply patch",
        )));
    }
    Ok(field_manager)
}

impl ObjectRequest<'_> {
    fn not_allowed(&self) -> ApiError {
        ApiError::method_not_allowed(self.method.as_str(), &self.resource.group_resource())
    }

    fn selection(&self) -> Result<Selection, ApiError> {
        selection(self.params, &self.resource, &self.target.version)
    }

    /// Runs a write as [`write`] does and answers with its outcome.
    fn write(&self, op: impl FnOnce(&mut StoreState) -> Result<Reply, ApiError>) -> Response {
        reply(write(self.app, self.dry_run, op))
    }

    fn is_watch(&self) -> bool {
        is_watch(self.method, &self.target, self.params)
    }

    async fn watch(self) -> Result<Response, ApiError> {
        if *self.method != Method::GET || self.target.subresource.is_some() {
            return Err(self.not_allowed());
        }
        let request = self.watch_request()?;
        watch::watch(
            Arc::clone(&self.app.store),
            self.app.watch.clone(),
            self.ctx,
            request,
        )
        .await
    }

    /// The watch's options; a watch of one object selects it by name.
    fn watch_request(&self) -> Result<WatchRequest, ApiError> {
        let mut selection = self.selection()?;
        if let Some(name) = &self.target.name {
            let served = self
                .resource
                .version(&self.target.version)
                .ok_or_else(ApiError::path_not_found)?;
            selection.fields = FieldSelector::parse(&format!("metadata.name={name}"), served)?;
        }
        Ok(WatchRequest {
            selection,
            resource_version: self.params.get("resourceVersion").cloned(),
            resource_version_match: self.params.get("resourceVersionMatch").cloned(),
            send_initial_events: self
                .params
                .get("sendInitialEvents")
                .map(|v| v == "true" || v == "1"),
            bookmarks: flag(self.params, "allowWatchBookmarks"),
            timeout: watch_timeout(self.params)?,
        })
    }

    /// Every verb but watch, by method and by whether the path names one object. A pod's
    /// `binding` and a service account's `token` take only a create.
    fn verb(&self) -> Result<Response, ApiError> {
        let subresource = self.target.subresource.as_deref();
        let binding = subresource == Some("binding");
        let token = subresource == Some("token");
        let create_only = binding || token;
        match (self.method.clone(), self.target.name.as_deref()) {
            (Method::GET, None) => self.list(),
            (Method::GET, Some(name)) if !create_only => self.get(name),
            (Method::POST, None) if self.resource.namespaced && self.target.namespace.is_none() => {
                Err(self.not_allowed())
            }
            (Method::POST, None) => self.create(),
            (Method::POST, Some(name)) if binding => self.bind(name),
            (Method::POST, Some(name)) if token => self.token(name),
            (Method::PUT, Some(name)) if !create_only => self.replace(name),
            (Method::PATCH, Some(name)) if !create_only => self.patch(name),
            (Method::DELETE, Some(name)) if self.ctx.part == Part::Main && !create_only => {
                self.delete(name)
            }
            (Method::DELETE, None) if self.resource.verbs().contains(&"deletecollection") => {
                self.delete_collection()
            }
            _ => Err(self.not_allowed()),
        }
    }

    fn list(&self) -> Result<Response, ApiError> {
        let selection = self.selection()?;
        let limit = self
            .params
            .get("limit")
            .and_then(|l| l.parse::<usize>().ok());
        let state = self.app.store.lock();
        let list = operations::list(
            &state,
            &self.ctx,
            &selection,
            limit,
            self.params.get("continue").map(String::as_str),
        )?;
        Ok(json_response(StatusCode::OK, &list, &[]))
    }

    fn get(&self, name: &str) -> Result<Response, ApiError> {
        let object = operations::get(&self.app.store.lock(), &self.ctx, name)?;
        Ok(json_response(StatusCode::OK, &object, &[]))
    }

    fn create(&self) -> Result<Response, ApiError> {
        let mut object = parse_body(self.headers, self.body)?;
        operations::check_type_meta(&self.ctx, &mut object)?;
        operations::resolve_namespace(&self.ctx, &mut object)?;
        Ok(self.write(|state| operations::create(state, &self.ctx, object, Write::Update)))
    }

    fn bind(&self, name: &str) -> Result<Response, ApiError> {
        let object = parse_body(self.headers, self.body)?;
        Ok(self.write(|state| operations::bind(state, &self.ctx, name, &object)))
    }

    fn token(&self, name: &str) -> Result<Response, ApiError> {
        let request = parse_body(self.headers, self.body)?;
        Ok(self.write(|state| authn::token_request(state, &self.ctx, name, request)))
    }

    fn replace(&self, name: &str) -> Result<Response, ApiError> {
        let object = parse_body(self.headers, self.body)?;
        Ok(self.write(|state| operations::replace(state, &self.ctx, name, object)))
    }

    fn patch(&self, name: &str) -> Result<Response, ApiError> {
        let kind = patch_type(self.headers)?;
        let field_manager = apply_manager(self.params, kind)?;
        let patch = parse_body(self.headers, self.body)?;
        Ok(self
            .write(|state| operations::patch(state, &self.ctx, name, kind, patch, field_manager)))
    }

    fn delete(&self, name: &str) -> Result<Response, ApiError> {
        let options = delete_options(self.params, self.body)?;
        Ok(self.write(|state| operations::delete(state, &self.ctx, name, &options)))
    }

    fn delete_collection(&self) -> Result<Response, ApiError> {
        let selection = self.selection()?;
        let options = delete_options(self.params, self.body)?;
        Ok(self
            .write(|state| operations::delete_collection(state, &self.ctx, &selection, &options)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(path: &str) -> Target {
        match route(path) {
            Some(Route::Objects(target)) => target,
            _ => panic!("{path} names no objects"),
        }
    }

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn verb(method: Method, path: &str, query: &[(&str, &str)]) -> &'static str {
        request_attributes(&method, &target(path), &params(query)).verb
    }

    #[test]
    fn the_verb_follows_the_method_and_whether_one_object_is_named() {
        assert_eq!(verb(Method::GET, "/apis/apps/v1/deployments", &[]), "list");
        assert_eq!(verb(Method::GET, "/api/v1/namespaces/a/pods/p", &[]), "get");
        let watch = [("watch", "true")];
        assert_eq!(verb(Method::GET, "/api/v1/pods", &watch), "watch");
        assert_eq!(
            verb(Method::GET, "/api/v1/watch/namespaces/a/pods", &[]),
            "watch"
        );
        assert_eq!(
            verb(Method::POST, "/api/v1/namespaces/a/pods", &[]),
            "create"
        );
        assert_eq!(
            verb(Method::PUT, "/api/v1/namespaces/a/pods/p", &[]),
            "update"
        );
        assert_eq!(
            verb(Method::PATCH, "/api/v1/namespaces/a/pods/p", &[]),
            "patch"
        );
        assert_eq!(
            verb(Method::DELETE, "/api/v1/namespaces/a/pods/p", &[]),
            "delete"
        );
        let all = "/api/v1/namespaces/a/pods";
        assert_eq!(verb(Method::DELETE, all, &[]), "deletecollection");
    }

    #[test]
    fn a_namespace_is_its_own_namespace_and_a_name_selector_names_the_object() {
        let get = request_attributes(
            &Method::GET,
            &target("/api/v1/namespaces/app"),
            &params(&[]),
        );
        assert_eq!(get.namespace.as_deref(), Some("app"));
        assert_eq!(get.name.as_deref(), Some("app"));
        let selected = params(&[("fieldSelector", "metadata.name=token")]);
        let list = request_attributes(
            &Method::GET,
            &target("/api/v1/namespaces/a/secrets"),
            &selected,
        );
        assert_eq!((list.verb, list.name.as_deref()), ("list", Some("token")));
        let status = target("/api/v1/namespaces/a/pods/p/status");
        let update = request_attributes(&Method::PUT, &status, &params(&[]));
        assert_eq!(update.subresource.as_deref(), Some("status"));
    }
}
