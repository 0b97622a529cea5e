//! Kubernetes `Status` error bodies.
//!
//! Clients branch on `reason` and `code` (kube-rs `is_conflict()`, kubectl's
//! "Error from server (NotFound)"), so every failure the simulator reports has the
//! same shape and wording the real API server uses.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::resources::ResourceType;

/// A failed API request, rendered as a `Status` object with the matching HTTP code.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    code: u16,
    reason: &'static str,
    message: String,
    details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn about(mut self, res: &ResourceType, name: &str) -> Self {
        self.details = Some(json!({ "name": name, "group": res.group, "kind": res.plural }));
        self
    }

    pub(crate) fn not_found(res: &ResourceType, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", res.qualified()),
        )
        .about(res, name)
    }

    pub(crate) fn namespace_not_found(namespace: &str) -> Self {
        Self {
            details: Some(json!({ "name": namespace, "kind": "namespaces" })),
            ..Self::new(
                404,
                "NotFound",
                format!("namespaces \"{namespace}\" not found"),
            )
        }
    }

    /// The answer for paths and groups the simulator does not serve, e.g. `/openapi/v2`.
    pub(crate) fn no_such_path() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    pub(crate) fn already_exists(res: &ResourceType, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", res.qualified()),
        )
        .about(res, name)
    }

    /// Optimistic-concurrency failure; `why` follows the real server's wording.
    pub(crate) fn conflict(res: &ResourceType, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                res.qualified()
            ),
        )
        .about(res, name)
    }

    pub(crate) fn modified(res: &ResourceType, name: &str) -> Self {
        Self::conflict(
            res,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub(crate) fn apply_conflict(res: &ResourceType, name: &str, message: String) -> Self {
        Self::new(409, "Conflict", message).about(res, name)
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub(crate) fn invalid(res: &ResourceType, name: &str, problem: &str) -> Self {
        Self::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {problem}", res.qualified()),
        )
        .about(res, name)
    }

    pub(crate) fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    pub(crate) fn denied(res: &ResourceType, name: &str, message: String) -> Self {
        Self::new(403, "Forbidden", message).about(res, name)
    }

    pub(crate) fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    pub(crate) fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/apply-patch+yaml, application/merge-patch+json, application/strategic-merge-patch+json (got {content_type:?})"
            ),
        )
    }

    pub(crate) fn not_acceptable() -> Self {
        Self::new(
            406,
            "NotAcceptable",
            "only the following media types are accepted: application/json, application/yaml",
        )
    }

    /// A watch that would resume before the oldest change the server still keeps
    /// (`too old resource version`): the client must list again.
    pub(crate) fn expired(requested: u64, oldest: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    /// The injected failure of [`super::SimCluster::set_failure`].
    pub(crate) fn injected(code: u16) -> Self {
        let reason = match code {
            429 => "TooManyRequests",
            500 => "InternalError",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            409 => "Conflict",
            _ => "",
        };
        Self::new(code, reason, format!("simulated failure (HTTP {code})"))
    }

    #[cfg(test)]
    pub(crate) fn code(&self) -> u16 {
        self.code
    }

    pub(crate) fn body(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            code,
            [(header::CONTENT_TYPE, "application/json")],
            self.body().to_string(),
        )
            .into_response()
    }
}
