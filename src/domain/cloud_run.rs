//! How a Cloud Run service is written in a request, and the Cloud Run breakglass.
//!
//! A request names a service as an object of `apiVersion: run.googleapis.com/v2`, `kind:
//! Service`, in the shape people know from Kubernetes and Knative: `metadata` (name, labels,
//! annotations), `spec.template.metadata` (the revision's labels and annotations) and
//! `spec.template.spec` (the rest of the revision template: containers, service account...).
//! Every other field of the Admin API v2 Service goes under `spec` as the API spells it. So
//! stamps, policy and the end read a service as they read a Deployment, and only the Cloud Run
//! target knows the wire shape. Services have no namespace.

use serde_json::Value;

pub const API_VERSION: &str = "run.googleapis.com/v2";
pub const KIND: &str = "Service";

/// Google Cloud label keys may hold neither `/` nor `.`, so the broker's labels on a Cloud Run
/// service use this prefix; its annotations use [`super::BROKER_PREFIX`] as everywhere.
pub const LABEL_PREFIX: &str = "breakglass-broker-";

/// Where a service carries the justification that admits any image.
pub const JUSTIFICATION: &str = "/spec/binaryAuthorization/breakglassJustification";

/// Whether an object is a Cloud Run service.
pub fn is_service(api_version: &str, kind: &str) -> bool {
    api_version == API_VERSION && kind == KIND
}

/// The justification the broker writes: the ticket, the request and who approved it.
pub fn justification(ticket: &str, request_id: &str, approvers: &[String]) -> String {
    format!(
        "{ticket}: breakglass request {request_id} approved by {}",
        approvers.join(", ")
    )
}

/// Whether a service (in the request shape) carries a breakglass justification.
pub fn has_justification(object: &Value) -> bool {
    object
        .pointer(JUSTIFICATION)
        .and_then(Value::as_str)
        .is_some_and(|j| !j.trim().is_empty())
}

/// Removes the breakglass justification, and `binaryAuthorization` with it if nothing else of
/// it is left.
pub fn clear_justification(object: &mut Value) {
    if let Some(authorization) = object
        .pointer_mut("/spec/binaryAuthorization")
        .and_then(Value::as_object_mut)
    {
        authorization.remove("breakglassJustification");
        if authorization.is_empty()
            && let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut)
        {
            spec.remove("binaryAuthorization");
        }
    }
}

/// A Google Cloud label value: at most 63 lower-case letters, digits, `_` and `-`.
pub fn label_value(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '_' | '-' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '_',
        })
        .take(63)
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_justification_names_ticket_request_and_approvers_and_clears_cleanly() {
        let text = justification("INC-7", "r1", &["bob".into(), "carol".into()]);
        assert_eq!(text, "INC-7: breakglass request r1 approved by bob, carol");
        let mut service =
            json!({ "spec": { "binaryAuthorization": { "breakglassJustification": text } } });
        assert!(has_justification(&service));
        clear_justification(&mut service);
        assert_eq!(service, json!({ "spec": {} }));
        let mut kept = json!({ "spec": { "binaryAuthorization": { "useDefault": true, "breakglassJustification": "x" } } });
        clear_justification(&mut kept);
        assert_eq!(
            kept["spec"]["binaryAuthorization"],
            json!({ "useDefault": true })
        );
        assert!(!has_justification(&kept));
    }

    #[test]
    fn label_values_are_lower_case_and_safe() {
        assert_eq!(label_value("INC-123"), "inc-123");
        assert_eq!(label_value("a b/c"), "a_b_c");
        assert_eq!(label_value(&"x".repeat(80)).len(), 63);
    }
}
