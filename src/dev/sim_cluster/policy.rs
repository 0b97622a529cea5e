//! The admission policy `deploy/` ships (`deploy/admission/breakglass-only-by-broker.yaml`),
//! read from that very file and evaluated as the API server evaluates a
//! ValidatingAdmissionPolicy: its match rules, then its variables in order, then every
//! validation, with `object` the object as it would be stored and `request` the admission
//! request. It fails closed, as the policy's `failurePolicy: Fail` says: an expression that
//! cannot be compiled or evaluated denies the write.

use serde_json::{Map, Value, json};

use super::resources::ResourceType;

/// The shipped policy, built into the binary so the simulator enforces exactly that file.
const SHIPPED: &str = include_str!("../../../deploy/admission/breakglass-only-by-broker.yaml");

/// One write, as admission sees it.
pub(crate) struct Review<'a> {
    pub res: &'a ResourceType,
    /// `CREATE` or `UPDATE`.
    pub operation: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub user: &'a str,
    pub object: &'a Value,
}

/// Ok when the policy admits the write; otherwise the message the API server would give.
pub(crate) fn review(review: &Review) -> Result<(), String> {
    static DOCS: std::sync::OnceLock<Result<Vec<Value>, String>> = std::sync::OnceLock::new();
    let docs = DOCS
        .get_or_init(|| {
            serde_saphyr::from_multiple(SHIPPED)
                .map_err(|e| format!("the admission policy cannot be read: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)?;
    let policy = docs
        .iter()
        .find(|d| d["kind"] == "ValidatingAdmissionPolicy")
        .ok_or("the admission policy file holds no ValidatingAdmissionPolicy")?;
    let name = policy["metadata"]["name"].as_str().unwrap_or_default();
    let spec = &policy["spec"];
    if !matches(spec, review) {
        return Ok(());
    }
    let request = admission_request(review);
    let mut context = context(review.object, &request)?;
    let mut variables = Map::new();
    for variable in spec["variables"].as_array().into_iter().flatten() {
        let expression = variable["expression"].as_str().unwrap_or_default();
        let value = evaluate(expression, &context)?;
        let value = value
            .json()
            .map_err(|e| format!("variable {}: {e:?}", variable["name"]))?;
        variables.insert(
            variable["name"].as_str().unwrap_or_default().to_owned(),
            value,
        );
        context
            .add_variable("variables", Value::Object(variables.clone()))
            .map_err(|e| format!("the admission policy's inputs: {e:?}"))?;
    }
    for validation in spec["validations"].as_array().into_iter().flatten() {
        let expression = validation["expression"].as_str().unwrap_or_default();
        if evaluate(expression, &context)? == cel::Value::Bool(true) {
            continue;
        }
        let message = match validation["messageExpression"].as_str() {
            Some(m) => match evaluate(m, &context)? {
                cel::Value::String(text) => text.to_string(),
                _ => format!("failed expression: {expression}"),
            },
            None => validation["message"]
                .as_str()
                .map_or_else(|| format!("failed expression: {expression}"), str::to_owned),
        };
        return Err(format!(
            "ValidatingAdmissionPolicy '{name}' with binding '{name}' denied request: {message}"
        ));
    }
    Ok(())
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// Whether one of the policy's `matchConstraints.resourceRules` covers the write.
fn matches(spec: &Value, review: &Review) -> bool {
    let rules = spec["matchConstraints"]["resourceRules"].as_array();
    rules.into_iter().flatten().any(|rule| {
        let any = |field: &str, want: &str| {
            strings(&rule[field])
                .iter()
                .any(|v| *v == want || *v == "*")
        };
        any("apiGroups", review.res.group)
            && any("apiVersions", review.res.version)
            && any("operations", review.operation)
            && any("resources", review.res.plural)
    })
}

/// `request` as the API server hands it to CEL (an AdmissionRequest as unstructured: empty
/// `omitempty` fields such as `subResource` are absent).
fn admission_request(review: &Review) -> Value {
    let res = review.res;
    let groups = match review.user.strip_prefix("system:serviceaccount:") {
        Some(rest) => json!([
            "system:serviceaccounts",
            format!(
                "system:serviceaccounts:{}",
                rest.split(':').next().unwrap_or_default()
            ),
            "system:authenticated",
        ]),
        None => json!(["system:authenticated"]),
    };
    let kind = json!({ "group": res.group, "version": res.version, "kind": res.kind });
    let resource = json!({ "group": res.group, "version": res.version, "resource": res.plural });
    json!({
        "kind": kind, "requestKind": kind,
        "resource": resource, "requestResource": resource,
        "name": review.name,
        "namespace": review.namespace,
        "operation": review.operation,
        "userInfo": { "username": review.user, "groups": groups },
        "dryRun": false,
    })
}

/// The CEL context of one review: `object` and `request`, and `variables` as far as known.
fn context(object: &Value, request: &Value) -> Result<cel::Context<'static, 'static>, String> {
    let mut context = cel::Context::default();
    context
        .add_variable("object", object.clone())
        .and_then(|()| context.add_variable("request", request.clone()))
        .and_then(|()| context.add_variable("variables", Value::Object(Map::new())))
        .map_err(|e| format!("the admission policy's inputs: {e:?}"))?;
    Ok(context)
}

fn evaluate(expression: &str, context: &cel::Context<'_, '_>) -> Result<cel::Value, String> {
    let program = compiled(expression)?;
    program
        .execute(context)
        .map_err(|e| format!("the admission policy's expression failed: {e:?}"))
}

thread_local! {
    /// Compiling the policy's expressions costs milliseconds; each thread keeps what it
    /// compiled, so a write under the store's lock pays only for running them.
    static PROGRAMS: std::cell::RefCell<std::collections::HashMap<String, std::rc::Rc<cel::Program>>> =
        std::cell::RefCell::default();
}

fn compiled(expression: &str) -> Result<std::rc::Rc<cel::Program>, String> {
    if let Some(program) = PROGRAMS.with(|p| p.borrow().get(expression).cloned()) {
        return Ok(program);
    }
    let program = std::rc::Rc::new(
        cel::Program::compile(expression)
            .map_err(|e| format!("the admission policy's expression does not compile: {e:?}"))?,
    );
    PROGRAMS.with(|p| {
        p.borrow_mut()
            .insert(expression.to_owned(), program.clone())
    });
    Ok(program)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::sim_cluster::BROKER_USER;
    use crate::dev::sim_cluster::resources::find;

    fn deployment(labels: Value, annotations: Value) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": "api", "namespace": "prod" },
            "spec": { "template": {
                "metadata": { "labels": labels, "annotations": annotations },
                "spec": { "containers": [{ "name": "a", "image": "x" }] } } },
        })
    }

    fn decide(object: &Value, user: &str, operation: &str) -> Result<(), String> {
        let res = find("apps", "v1", "deployments").ok_or("no resource")?;
        review(&Review {
            res,
            operation,
            namespace: "prod",
            name: "api",
            user,
            object,
        })
    }

    #[test]
    fn the_shipped_policy_lets_only_the_broker_set_the_label_or_the_annotation() {
        let labelled = deployment(
            json!({ "image-policy.k8s.io/break-glass": "true" }),
            json!({}),
        );
        let annotated = deployment(
            json!({}),
            json!({ "alpha.image-policy.k8s.io/break-glass": "true" }),
        );
        let plain = deployment(json!({ "app": "api" }), json!({}));
        for operation in ["CREATE", "UPDATE"] {
            assert_eq!(decide(&labelled, BROKER_USER, operation), Ok(()));
            assert_eq!(decide(&plain, "deployer@example.com", operation), Ok(()));
            for object in [&labelled, &annotated] {
                let refused =
                    decide(object, "deployer@example.com", operation).expect_err("refused");
                assert!(
                    refused.contains("the breakglass label may only be set by the breakglass broker; deployer@example.com must request it"),
                    "{refused}"
                );
            }
        }
        // The label set to anything but "true" admits nothing, and the policy leaves it be.
        let other = deployment(
            json!({ "image-policy.k8s.io/break-glass": "false" }),
            json!({}),
        );
        assert_eq!(decide(&other, "deployer@example.com", "CREATE"), Ok(()));
    }

    #[test]
    fn kinds_and_operations_the_policy_does_not_match_pass_untouched() {
        let labelled = deployment(
            json!({ "image-policy.k8s.io/break-glass": "true" }),
            json!({}),
        );
        assert_eq!(decide(&labelled, "deployer@example.com", "DELETE"), Ok(()));
    }
}
