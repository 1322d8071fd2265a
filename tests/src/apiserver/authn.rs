//! Authentication, as the real server's request filter does it for the two kinds of client a
//! test has: a request without an `Authorization` header is the test's administrator (as a
//! client certificate in `system:masters` is in a real cluster), and one with
//! `Authorization: Bearer <token>` is the service account a TokenRequest issued the token for,
//! while the token has not expired, is meant for the API server, and its service account still
//! exists. Any other credential gets the real server's 401. An authenticated request goes on
//! without its `Authorization` header, as the real filter drops it, so the service proxy never
//! forwards it.
//!
//! `POST /api/v1/namespaces/<ns>/serviceaccounts/<name>/token` issues the tokens, as the
//! service account registry's `TokenREST` does. A token is an opaque random string where the
//! real one is a signed JWT; the server remembers whom it stands for.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Request, State as Shared};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::distr::{Alphanumeric, SampleString};
use serde_json::{Value, json};

use super::errors::{ApiError, FieldError, GroupResource};
use super::handlers::App;
use super::operations::{Context, Reply, format_time};
use super::store::{ObjectKey, State};
use super::validation::{render, strings};

/// The administrator, as a real cluster's admin client certificate names it.
const ADMIN: &str = "system:admin";

/// The group every authenticated user is in.
pub const AUTHENTICATED: &str = "system:authenticated";

/// The group the real server allows everything, before RBAC is asked.
const MASTERS: &str = "system:masters";

/// The API server's own audience (`--api-audiences`, as kind and kubeadm set it): what a
/// TokenRequest without audiences gets, and what a token must be for to authenticate here.
const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// `SetDefaults_TokenRequestSpec`: a token lives an hour unless the request says otherwise.
const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;

/// The shortest and longest lives `ValidateTokenRequest` accepts.
const MIN_EXPIRATION_SECONDS: i64 = 600;
const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;

/// The length of an issued token, in alphanumeric characters.
const TOKEN_LENGTH: usize = 48;

/// Who a request comes from (`user.Info`): a name and the groups it is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

impl User {
    /// The test's administrator: every request without credentials.
    pub fn admin() -> Self {
        Self {
            name: ADMIN.to_owned(),
            groups: vec![MASTERS.to_owned(), AUTHENTICATED.to_owned()],
        }
    }

    /// A service account, as its tokens authenticate it.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        Self {
            name: format!("system:serviceaccount:{namespace}:{name}"),
            groups: vec![
                "system:serviceaccounts".to_owned(),
                format!("system:serviceaccounts:{namespace}"),
                AUTHENTICATED.to_owned(),
            ],
        }
    }

    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// In `system:masters`, which no authorizer denies anything.
    pub fn is_privileged(&self) -> bool {
        self.in_group(MASTERS)
    }
}

/// What an issued token stands for.
#[derive(Debug, Clone)]
struct Issued {
    namespace: String,
    name: String,
    /// The service account's uid: one made again under the same name does not inherit it.
    uid: String,
    audiences: Vec<String>,
    expires: jiff::Timestamp,
}

/// The tokens the server issued and that have not expired, by token.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    issued: HashMap<String, Issued>,
}

impl Tokens {
    /// A new token for `issued`; the expired ones are forgotten.
    fn issue(&mut self, issued: Issued, now: jiff::Timestamp) -> String {
        self.issued.retain(|_, token| token.expires > now);
        let token = Alphanumeric.sample_string(&mut rand::rng(), TOKEN_LENGTH);
        self.issued.insert(token.clone(), issued);
        token
    }
}

/// The user of a request with `authorization` as its `Authorization` header, at `now`: the
/// administrator without one, the service account of a valid bearer token, 401 otherwise.
fn authenticate(
    state: &State,
    authorization: Option<&str>,
    now: jiff::Timestamp,
) -> Result<User, ApiError> {
    let Some(authorization) = authorization else {
        return Ok(User::admin());
    };
    let mut parts = authorization.splitn(3, ' ');
    let scheme = parts.next().unwrap_or("");
    let token = parts.next().unwrap_or("");
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(ApiError::unauthorized());
    }
    let issued = state
        .tokens
        .issued
        .get(token)
        .filter(|issued| issued.expires > now)
        .filter(|issued| issued.audiences.iter().any(|a| a == API_AUDIENCE))
        .ok_or_else(ApiError::unauthorized)?;
    let key = ObjectKey {
        namespace: issued.namespace.clone(),
        name: issued.name.clone(),
    };
    let account_uid = state
        .get(&service_accounts_key(), &key)
        .and_then(|account| account.pointer("/metadata/uid"))
        .and_then(Value::as_str);
    if account_uid != Some(issued.uid.as_str()) {
        return Err(ApiError::unauthorized());
    }
    Ok(User::service_account(&issued.namespace, &issued.name))
}

/// Authenticates every request: the user goes on with it as an extension, and its
/// `Authorization` header no further.
pub async fn layer(Shared(app): Shared<Arc<App>>, mut request: Request, next: Next) -> Response {
    let user = {
        let authorization = request
            .headers()
            .get(header::AUTHORIZATION)
            .map(|value| value.to_str().unwrap_or_default());
        authenticate(&app.store.lock(), authorization, jiff::Timestamp::now())
    };
    match user {
        Ok(user) => {
            request.headers_mut().remove(header::AUTHORIZATION);
            request.extensions_mut().insert(user);
            next.run(request).await
        }
        Err(error) => error.into_response(),
    }
}

fn service_accounts_key() -> (String, String) {
    (String::new(), "serviceaccounts".to_owned())
}

/// `TokenREST.Create`: a token for the service account `name` of the context's namespace,
/// answered as the request given back with the token and its expiry in `status`.
pub fn token_request(
    state: &mut State,
    ctx: &Context,
    name: &str,
    mut request: Value,
) -> Result<Reply, ApiError> {
    check_shape(&request)?;
    let namespace = ctx.namespace.clone().unwrap_or_default();
    check_names(&request, name, &namespace)?;
    let key = ObjectKey {
        namespace: namespace.clone(),
        name: name.to_owned(),
    };
    let account = state.get(&service_accounts_key(), &key).ok_or_else(|| {
        let resource = GroupResource {
            group: String::new(),
            resource: "serviceaccounts".to_owned(),
        };
        ApiError::not_found(&resource, name)
    })?;
    let uid = account
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let (audiences, seconds) = token_spec(&request)?;
    let expires = ctx.now + jiff::SignedDuration::from_secs(seconds);
    let issued = Issued {
        namespace: namespace.clone(),
        name: name.to_owned(),
        uid,
        audiences: audiences.clone(),
        expires,
    };
    let token = state.tokens.issue(issued, ctx.now);
    request["apiVersion"] = json!("authentication.k8s.io/v1");
    request["kind"] = json!("TokenRequest");
    request["metadata"]["name"] = json!(name);
    request["metadata"]["namespace"] = json!(namespace);
    request["metadata"]["creationTimestamp"] = json!(format_time(ctx.now));
    request["spec"]["audiences"] = json!(audiences);
    request["spec"]["expirationSeconds"] = json!(seconds);
    if request["spec"].get("boundObjectRef").is_none() {
        request["spec"]["boundObjectRef"] = Value::Null;
    }
    request["status"] = json!({"token": token, "expirationTimestamp": format_time(expires)});
    Ok(Reply {
        code: StatusCode::CREATED,
        body: request,
        warnings: Vec::new(),
    })
}

/// A TokenRequest is an object, and so are its metadata and spec where it has them.
fn check_shape(request: &Value) -> Result<(), ApiError> {
    let misshapen = |field: &str| {
        request
            .get(field)
            .is_some_and(|value| !value.is_object() && !value.is_null())
    };
    if request.is_object() && !misshapen("metadata") && !misshapen("spec") {
        return Ok(());
    }
    Err(ApiError::bad_request(
        "the body of the request could not be decoded: it is not a TokenRequest",
    ))
}

/// A TokenRequest's name and namespace, where it gives them, must be those of the path.
fn check_names(request: &Value, name: &str, namespace: &str) -> Result<(), ApiError> {
    let given = |field: &str| {
        request
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_str)
            .filter(|value| !value.is_empty())
    };
    let mismatch = match (given("name"), given("namespace")) {
        (Some(other), _) if other != name => Some(("name", other)),
        (_, Some(other)) if other != namespace => Some(("namespace", other)),
        _ => None,
    };
    match mismatch {
        Some((field, value)) => Err(invalid(
            name,
            FieldError::invalid(
                format!("metadata.{field}"),
                render(&json!(value)),
                format!("must match the service account {field} if specified"),
            ),
        )),
        None => Ok(()),
    }
}

/// The audiences (the API server's when none are asked for) and the life in seconds of the
/// token a TokenRequest asks for, within the bounds `ValidateTokenRequest` sets.
fn token_spec(request: &Value) -> Result<(Vec<String>, i64), ApiError> {
    let mut audiences = strings(request.pointer("/spec/audiences"));
    if audiences.is_empty() {
        audiences.push(API_AUDIENCE.to_owned());
    }
    let seconds = match request.pointer("/spec/expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_EXPIRATION_SECONDS,
        Some(value) => value.as_i64().ok_or_else(|| {
            ApiError::bad_request(format!(
                "the body of the request could not be decoded: \
                 spec.expirationSeconds {value} is not an integer"
            ))
        })?,
    };
    let why = if seconds < MIN_EXPIRATION_SECONDS {
        "may not specify a duration less than 10 minutes"
    } else if seconds > MAX_EXPIRATION_SECONDS {
        "may not specify a duration larger than 2^32 seconds"
    } else {
        return Ok((audiences, seconds));
    };
    let error = FieldError::invalid("spec.expirationSeconds", seconds.to_string(), why);
    Err(invalid("", error))
}

/// `errors.NewInvalid` of a TokenRequest.
fn invalid(name: &str, error: FieldError) -> ApiError {
    ApiError::invalid(
        "TokenRequest.authentication.k8s.io",
        "authentication.k8s.io",
        "TokenRequest",
        name,
        &[error],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources::Registry;

    fn state_with_account(uid: &str) -> State {
        let mut state = State::new(Registry::with_builtins(), 10);
        let key = ObjectKey {
            namespace: "t1".to_owned(),
            name: "agent".to_owned(),
        };
        let account = json!({"metadata": {"name": "agent", "namespace": "t1", "uid": uid}});
        state.put(&service_accounts_key(), key, account);
        state
    }

    fn issue(state: &mut State, audiences: &[&str], expires: jiff::Timestamp) -> String {
        let issued = Issued {
            namespace: "t1".to_owned(),
            name: "agent".to_owned(),
            uid: "u-1".to_owned(),
            audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
            expires,
        };
        state.tokens.issue(issued, jiff::Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn a_bearer_token_is_its_service_account_while_it_is_valid() {
        let now = jiff::Timestamp::now();
        let later = now + jiff::SignedDuration::from_secs(60);
        let mut state = state_with_account("u-1");
        let valid = issue(&mut state, &[API_AUDIENCE], later);
        let expired = issue(&mut state, &[API_AUDIENCE], now);
        let elsewhere = issue(&mut state, &["vault"], later);
        let user = authenticate(&state, Some(&format!("Bearer {valid}")), now).unwrap();
        assert_eq!(user.name, "system:serviceaccount:t1:agent");
        assert_eq!(
            user.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:t1",
                "system:authenticated"
            ]
        );
        assert_eq!(
            authenticate(&state, Some(&format!("bearer {valid}")), now).unwrap(),
            user
        );
        let refused = |header: String| {
            let status = authenticate(&state, Some(&header), now)
                .unwrap_err()
                .status();
            assert_eq!(
                status,
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": "Unauthorized", "reason": "Unauthorized", "code": 401}),
                "{header}"
            );
        };
        refused(format!("Bearer {expired}"));
        refused(format!("Bearer {elsewhere}"));
        refused("Bearer unknown".to_owned());
        refused("Bearer ".to_owned());
        refused(format!("Basic {valid}"));
        assert_eq!(authenticate(&state, None, now).unwrap(), User::admin());
    }

    #[test]
    fn a_service_account_made_again_does_not_inherit_its_tokens() {
        let now = jiff::Timestamp::now();
        let later = now + jiff::SignedDuration::from_secs(60);
        let mut state = state_with_account("u-2");
        let token = issue(&mut state, &[API_AUDIENCE], later);
        assert!(authenticate(&state, Some(&format!("Bearer {token}")), now).is_err());
    }
}
