//! Failures as the API server reports them: a `Status` object with the real code, reason, message
//! and details (`apimachinery/pkg/api/errors`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The resource an error is about, as `<plural>` or `<plural>.<group>`.
#[derive(Debug, Clone)]
pub struct GroupResource {
    pub group: String,
    pub resource: String,
}

impl std::fmt::Display for GroupResource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.group.is_empty() {
            f.write_str(&self.resource)
        } else {
            write!(f, "{}.{}", self.resource, self.group)
        }
    }
}

/// One entry of a validation failure (`field.Error`): a field path and what is wrong with it.
#[derive(Debug, Clone)]
pub struct FieldError {
    pub field: String,
    pub problem: FieldProblem,
}

/// The kinds of `field.Error` the server reports. Values are already rendered as Go prints them.
#[derive(Debug, Clone)]
pub enum FieldProblem {
    Required {
        detail: String,
    },
    Invalid {
        value: String,
        detail: String,
    },
    TypeInvalid {
        value: String,
        detail: String,
    },
    NotSupported {
        value: String,
        supported: Vec<String>,
    },
    Forbidden {
        detail: String,
    },
}

impl FieldError {
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: FieldProblem::Required {
                detail: detail.into(),
            },
        }
    }

    pub fn invalid(
        field: impl Into<String>,
        value: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            problem: FieldProblem::Invalid {
                value: value.into(),
                detail: detail.into(),
            },
        }
    }

    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: FieldProblem::Forbidden {
                detail: detail.into(),
            },
        }
    }

    /// The cause type that `StatusCause.reason` carries.
    fn reason(&self) -> &'static str {
        match self.problem {
            FieldProblem::Required { .. } => "FieldValueRequired",
            FieldProblem::Invalid { .. } => "FieldValueInvalid",
            FieldProblem::TypeInvalid { .. } => "FieldValueTypeInvalid",
            FieldProblem::NotSupported { .. } => "FieldValueNotSupported",
            FieldProblem::Forbidden { .. } => "FieldValueForbidden",
        }
    }

    /// `field.Error.ErrorBody()`: the message without the field path.
    fn body(&self) -> String {
        match &self.problem {
            FieldProblem::Required { detail } if detail.is_empty() => "Required value".to_owned(),
            FieldProblem::Required { detail } => format!("Required value: {detail}"),
            FieldProblem::Invalid { value, detail }
            | FieldProblem::TypeInvalid { value, detail } => {
                format!("Invalid value: {value}: {detail}")
            }
            FieldProblem::NotSupported { value, supported } => {
                format!(
                    "Unsupported value: {value}: supported values: {}",
                    supported.join(", ")
                )
            }
            FieldProblem::Forbidden { detail } => format!("Forbidden: {detail}"),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// A failed request, rendered as a `Status`.
#[derive(Debug, Clone)]
pub struct ApiError {
    code: StatusCode,
    reason: &'static str,
    message: String,
    details: Option<Value>,
}

impl ApiError {
    fn new(code: StatusCode, reason: &'static str, message: String) -> Self {
        Self {
            code,
            reason,
            message,
            details: None,
        }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    fn resource_details(resource: &GroupResource, name: &str) -> Value {
        json!({"name": name, "group": resource.group, "kind": resource.resource})
    }

    pub fn not_found(resource: &GroupResource, name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{resource} \"{name}\" not found"),
        )
        .with_details(Self::resource_details(resource, name))
    }

    pub fn already_exists(resource: &GroupResource, name: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{resource} \"{name}\" already exists"),
        )
        .with_details(Self::resource_details(resource, name))
    }

    /// `errors.NewConflict` with `OptimisticLockErrorMsg`.
    pub fn stale(resource: &GroupResource, name: &str) -> Self {
        Self::conflict(
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub fn conflict(resource: &GroupResource, name: &str, why: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!("Operation cannot be fulfilled on {resource} \"{name}\": {why}"),
        )
        .with_details(Self::resource_details(resource, name))
    }

    /// `errors.NewInvalid`: `qualified_kind` is `Kind` or `Kind.group`.
    pub fn invalid(
        qualified_kind: &str,
        group: &str,
        kind: &str,
        name: &str,
        errors: &[FieldError],
    ) -> Self {
        let aggregate = match errors {
            [one] => one.to_string(),
            many => format!(
                "[{}]",
                many.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| json!({"reason": e.reason(), "message": e.body(), "field": e.field}))
            .collect();
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!("{qualified_kind} \"{name}\" is invalid: {aggregate}"),
        )
        .with_details(json!({"name": name, "group": group, "kind": kind, "causes": causes}))
    }

    /// A patch that cannot be applied to the object (`errors.NewGenericServerResponse` with 422).
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message.into())
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message.into())
    }

    /// `errors.NewResourceExpired`: the answer to a resourceVersion older than the kept history.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, "Expired", message.into())
    }

    pub fn method_not_allowed(method: &str, resource: &GroupResource) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} is not supported on resources of kind \"{resource}\""),
        )
        .with_details(json!({"group": resource.group, "kind": resource.resource}))
    }

    pub fn path_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource".to_owned(),
        )
    }

    pub fn unsupported_media_type(content_type: &str, accepted: &[&str]) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                accepted.join(", ")
            ),
        )
        .with_details(json!({"causes": [{"reason": "UnexpectedHeader", "message": content_type}]}))
    }

    pub fn forbidden(resource: &GroupResource, name: &str, why: &str) -> Self {
        Self::forbidden_request(resource, Some(name), why)
    }

    /// `errors.NewForbidden`: `<resource> is forbidden: <why>`, or `<resource> "<name>" is
    /// forbidden: <why>` when the request is about one object.
    pub fn forbidden_request(resource: &GroupResource, name: Option<&str>, why: &str) -> Self {
        let (message, details) = match name {
            Some(name) => (
                format!("{resource} \"{name}\" is forbidden: {why}"),
                Self::resource_details(resource, name),
            ),
            None => (
                format!("{resource} is forbidden: {why}"),
                json!({"group": resource.group, "kind": resource.resource}),
            ),
        };
        Self::new(StatusCode::FORBIDDEN, "Forbidden", message).with_details(details)
    }

    /// `errors.NewForbidden` of a request for no resource: `forbidden: <why>`, with empty details.
    pub fn forbidden_path(why: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("forbidden: {why}"),
        )
        .with_details(json!({}))
    }

    /// What the authentication filter answers a request whose credentials it does not accept.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized".to_owned(),
        )
    }

    /// `errors.NewServiceUnavailable`: what the service proxy answers when it has nowhere to go.
    pub fn service_unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            message.into(),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            message.into(),
        )
    }

    /// The watch cache's answer to a resourceVersion it has not reached within its wait.
    pub fn too_large_resource_version(requested: u64, current: u64) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "Timeout",
            format!("Too large resource version: {requested}, current: {current}"),
        )
        .with_details(json!({
            "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
            "retryAfterSeconds": 1,
        }))
    }

    /// The `Status` object.
    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.code, axum::Json(self.status())).into_response()
    }
}
