//! The shipped admission policy (deploy/admission) evaluated with a CEL interpreter: only the
//! broker (and the cluster's own controllers, for pods made from its templates) may admit a
//! breakglass pod template.

use serde_json::{Map, Value, json};

const BROKER: &str = "system:serviceaccount:breakglass:breakglass-broker";

struct Policy {
    variables: Vec<(String, String)>,
    validation: String,
}

fn policy() -> Policy {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/admission/breakglass-only-by-broker.yaml"
    ))
    .expect("policy file");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("YAML");
    let vap = docs
        .iter()
        .find(|d| d["kind"] == "ValidatingAdmissionPolicy")
        .expect("a ValidatingAdmissionPolicy");
    let binding = docs
        .iter()
        .find(|d| d["kind"] == "ValidatingAdmissionPolicyBinding")
        .expect("a binding");
    assert_eq!(binding["spec"]["policyName"], vap["metadata"]["name"]);
    assert!(
        binding["spec"]["validationActions"]
            .as_array()
            .expect("actions")
            .contains(&json!("Deny"))
    );
    assert_eq!(vap["spec"]["failurePolicy"], "Fail", "fail closed");
    Policy {
        variables: vap["spec"]["variables"]
            .as_array()
            .expect("variables")
            .iter()
            .map(|v| {
                (
                    v["name"].as_str().expect("name").to_owned(),
                    v["expression"].as_str().expect("expr").to_owned(),
                )
            })
            .collect(),
        validation: vap["spec"]["validations"][0]["expression"]
            .as_str()
            .expect("expression")
            .to_owned(),
    }
}

/// Whether the policy admits `object` written by `username`, as the API server would decide.
fn admits(object: &Value, username: &str) -> bool {
    let policy = policy();
    let request = json!({ "userInfo": { "username": username } });
    let mut variables = Map::new();
    for (name, expression) in &policy.variables {
        let mut context = cel::Context::default();
        context
            .add_variable("object", object.clone())
            .expect("object");
        context
            .add_variable("request", request.clone())
            .expect("request");
        context
            .add_variable("variables", Value::Object(variables.clone()))
            .expect("variables");
        let program = cel::Program::compile(expression).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let value = program
            .execute(&context)
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        variables.insert(name.clone(), value.json().expect("JSON"));
    }
    let mut context = cel::Context::default();
    context
        .add_variable("object", object.clone())
        .expect("object");
    context.add_variable("request", request).expect("request");
    context
        .add_variable("variables", Value::Object(variables))
        .expect("variables");
    let verdict = cel::Program::compile(&policy.validation)
        .expect("compiles")
        .execute(&context)
        .expect("evaluates");
    verdict == cel::Value::Bool(true)
}

fn deployment(labels: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "api" },
        "spec": { "template": { "metadata": { "labels": labels }, "spec": { "containers": [{ "name": "a", "image": "x" }] } } }
    })
}

#[test]
fn a_person_cannot_set_the_breakglass_label_but_the_broker_can() {
    let labelled = deployment(json!({ "app": "api", "image-policy.k8s.io/break-glass": "true" }));
    assert!(!admits(&labelled, "alice@example.com"));
    assert!(!admits(&labelled, "system:serviceaccount:ci:deployer"));
    assert!(admits(&labelled, BROKER));
}

#[test]
fn ordinary_workloads_are_untouched() {
    assert!(admits(
        &deployment(json!({ "app": "api" })),
        "alice@example.com"
    ));
    let no_labels =
        json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "p" }, "spec": {} });
    assert!(admits(&no_labels, "alice@example.com"));
}

#[test]
fn the_older_annotation_and_cronjob_templates_are_covered_too() {
    let annotated = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "p", "annotations": { "alpha.image-policy.k8s.io/break-glass": "true" } }, "spec": {}
    });
    assert!(!admits(&annotated, "alice@example.com"));
    let cronjob = json!({
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": { "name": "c" },
        "spec": { "jobTemplate": { "spec": { "template": { "metadata": { "labels": { "image-policy.k8s.io/break-glass": "true" } } } } } }
    });
    assert!(!admits(&cronjob, "alice@example.com"));
    assert!(admits(&cronjob, BROKER));
}

#[test]
fn controllers_may_create_pods_from_the_brokers_templates_but_not_deployments() {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "api-1", "labels": { "image-policy.k8s.io/break-glass": "true" } }, "spec": {}
    });
    assert!(admits(
        &pod,
        "system:serviceaccount:kube-system:replicaset-controller"
    ));
    let labelled = deployment(json!({ "image-policy.k8s.io/break-glass": "true" }));
    assert!(!admits(
        &labelled,
        "system:serviceaccount:kube-system:generic-garbage-collector"
    ));
}
