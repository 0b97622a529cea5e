//! The shipped admission policy (deploy/admission) evaluated with a CEL interpreter, and the
//! shipped RBAC (deploy/kubernetes) read beside it: only the broker (and the cluster's own
//! controllers, each for the kind it makes from a template) may admit a breakglass pod
//! template, and the broker's role covers exactly what the policy lets it write.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

const BROKER: &str = "system:serviceaccount:breakglass:breakglass-broker";
const PERSON: &str = "alice@example.com";

/// The controllers the policy trusts, each with the one kind it makes from a template.
const CONTROLLERS: [(&str, &str); 6] = [
    ("deployment-controller", "ReplicaSet"),
    ("replicaset-controller", "Pod"),
    ("statefulset-controller", "Pod"),
    ("daemon-set-controller", "Pod"),
    ("job-controller", "Pod"),
    ("cronjob-controller", "Job"),
];

/// The verbs the broker uses on every kind it writes: read, create, server-side apply,
/// restore at a version, delete.
const BROKER_VERBS: [&str; 5] = ["get", "create", "patch", "update", "delete"];

fn kube_system(name: &str) -> String {
    format!("system:serviceaccount:kube-system:{name}")
}

fn shipped(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("a list, not {value}"))
        .iter()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

/// One of the policy's `matchConstraints.resourceRules`.
struct Rule {
    groups: Vec<String>,
    operations: Vec<String>,
    resources: Vec<String>,
}

struct Policy {
    rules: Vec<Rule>,
    variables: Vec<(String, String)>,
    validations: Vec<String>,
}

fn policy() -> Policy {
    let docs = shipped("deploy/admission/breakglass-only-by-broker.yaml");
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
        rules: vap["spec"]["matchConstraints"]["resourceRules"]
            .as_array()
            .expect("resourceRules")
            .iter()
            .map(|r| Rule {
                groups: strings(&r["apiGroups"]),
                operations: strings(&r["operations"]),
                resources: strings(&r["resources"]),
            })
            .collect(),
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
        validations: vap["spec"]["validations"]
            .as_array()
            .expect("validations")
            .iter()
            .map(|v| v["expression"].as_str().expect("expression").to_owned())
            .collect(),
    }
}

/// The API group and REST resource of a kind the policy is about.
fn resource_of(kind: &str) -> (&'static str, &'static str) {
    match kind {
        "Pod" => ("", "pods"),
        "Deployment" => ("apps", "deployments"),
        "StatefulSet" => ("apps", "statefulsets"),
        "DaemonSet" => ("apps", "daemonsets"),
        "ReplicaSet" => ("apps", "replicasets"),
        "Job" => ("batch", "jobs"),
        "CronJob" => ("batch", "cronjobs"),
        other => panic!("no resource for {other}"),
    }
}

/// One write as the API server hands it to admission.
struct Write<'a> {
    object: &'a Value,
    username: &'a str,
    operation: &'a str,
    /// "" for the object itself, "ephemeralcontainers" for `kubectl debug`.
    sub_resource: &'a str,
}

/// `request` as the API server gives it to CEL: an AdmissionRequest converted to unstructured,
/// so fields tagged `omitempty` (subResource, name...) are absent when empty.
fn admission_request(write: &Write) -> Value {
    let kind = write.object["kind"].as_str().expect("kind");
    let (group, plural) = resource_of(kind);
    let groups = match write.username.strip_prefix("system:serviceaccount:") {
        Some(rest) => {
            let namespace = rest.split(':').next().expect("namespace");
            json!([
                "system:serviceaccounts",
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated"
            ])
        }
        None => json!(["system:authenticated"]),
    };
    let mut request = json!({
        "kind": { "group": group, "version": "v1", "kind": kind },
        "resource": { "group": group, "version": "v1", "resource": plural },
        "requestKind": { "group": group, "version": "v1", "kind": kind },
        "requestResource": { "group": group, "version": "v1", "resource": plural },
        "namespace": "payments",
        "operation": write.operation,
        "userInfo": { "username": write.username, "groups": groups },
        "dryRun": false,
    });
    if let Some(name) = write.object["metadata"]["name"].as_str() {
        request["name"] = json!(name);
    }
    if !write.sub_resource.is_empty() {
        request["subResource"] = json!(write.sub_resource);
        request["requestSubResource"] = json!(write.sub_resource);
    }
    request
}

fn evaluate(
    expression: &str,
    object: &Value,
    request: &Value,
    variables: &Map<String, Value>,
) -> cel::Value {
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
    cel::Program::compile(expression)
        .unwrap_or_else(|e| panic!("{expression}: {e:?}"))
        .execute(&context)
        .unwrap_or_else(|e| panic!("{expression}: {e:?}"))
}

/// Whether the API server would let `write` through this policy: writes its rules do not
/// match pass untouched; matched ones must pass every validation.
fn admitted(write: &Write) -> bool {
    let policy = policy();
    let (group, plural) = resource_of(write.object["kind"].as_str().expect("kind"));
    let resource = if write.sub_resource.is_empty() {
        plural.to_owned()
    } else {
        format!("{plural}/{}", write.sub_resource)
    };
    let matched = policy.rules.iter().any(|rule| {
        rule.groups.iter().any(|g| g == group || g == "*")
            && rule
                .operations
                .iter()
                .any(|o| o == write.operation || o == "*")
            && rule.resources.iter().any(|r| *r == resource || r == "*")
    });
    if !matched {
        return true;
    }
    let request = admission_request(write);
    let mut variables = Map::new();
    for (name, expression) in &policy.variables {
        let value = evaluate(expression, write.object, &request, &variables);
        variables.insert(name.clone(), value.json().expect("JSON"));
    }
    policy.validations.iter().all(|expression| {
        evaluate(expression, write.object, &request, &variables) == cel::Value::Bool(true)
    })
}

/// Whether `username` may create `object`.
fn admits(object: &Value, username: &str) -> bool {
    admitted(&Write {
        object,
        username,
        operation: "CREATE",
        sub_resource: "",
    })
}

/// Whether `username` may update `object` in place.
fn admits_update(object: &Value, username: &str) -> bool {
    admitted(&Write {
        object,
        username,
        operation: "UPDATE",
        sub_resource: "",
    })
}

/// Whether `username` may add an ephemeral container to `pod` (`kubectl debug`: an UPDATE of
/// pods/ephemeralcontainers whose object is the whole Pod).
fn admits_ephemeral_container(pod: &Value, username: &str) -> bool {
    admitted(&Write {
        object: pod,
        username,
        operation: "UPDATE",
        sub_resource: "ephemeralcontainers",
    })
}

fn deployment(labels: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "api" },
        "spec": { "template": { "metadata": { "labels": labels }, "spec": { "containers": [{ "name": "a", "image": "x" }] } } }
    })
}

/// A breakglass object of `kind` as its maker would write it: the mark in its pod template.
fn breakglass(kind: &str) -> Value {
    let template = json!({
        "metadata": { "labels": { "app": "api", "image-policy.k8s.io/break-glass": "true" } },
        "spec": { "containers": [{ "name": "a", "image": "x" }] }
    });
    let api_version = match resource_of(kind).0 {
        "" => "v1".to_owned(),
        group => format!("{group}/v1"),
    };
    let mut object = match kind {
        "Pod" => template.clone(),
        "CronJob" => json!({ "spec": { "jobTemplate": { "spec": { "template": template } } } }),
        _ => json!({ "spec": { "template": template } }),
    };
    object["apiVersion"] = json!(api_version);
    object["kind"] = json!(kind);
    object["metadata"]["name"] = json!("api-1");
    object
}

/// A running pod with an ephemeral container being added, carrying `metadata`.
fn pod_being_debugged(metadata: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": metadata,
        "spec": {
            "containers": [{ "name": "a", "image": "x" }],
            "ephemeralContainers": [{ "name": "debugger", "image": "busybox" }]
        }
    })
}

#[test]
fn a_person_cannot_set_the_breakglass_label_but_the_broker_can() {
    let labelled = deployment(json!({ "app": "api", "image-policy.k8s.io/break-glass": "true" }));
    assert!(!admits(&labelled, PERSON));
    assert!(!admits(&labelled, "system:serviceaccount:ci:deployer"));
    assert!(admits(&labelled, BROKER));
}

#[test]
fn ordinary_workloads_are_untouched() {
    assert!(admits(&deployment(json!({ "app": "api" })), PERSON));
    assert!(admits_update(&deployment(json!({ "app": "api" })), PERSON));
    let no_labels =
        json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "p" }, "spec": {} });
    assert!(admits(&no_labels, PERSON));
}

#[test]
fn the_older_annotation_and_cronjob_templates_are_covered_too() {
    let annotated = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "p", "annotations": { "alpha.image-policy.k8s.io/break-glass": "true" } }, "spec": {}
    });
    assert!(!admits(&annotated, PERSON));
    let cronjob = json!({
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": { "name": "c" },
        "spec": { "jobTemplate": { "spec": { "template": { "metadata": { "labels": { "image-policy.k8s.io/break-glass": "true" } } } } } }
    });
    assert!(!admits(&cronjob, PERSON));
    assert!(admits(&cronjob, BROKER));
}

#[test]
fn controllers_may_create_pods_from_the_brokers_templates_but_not_deployments() {
    assert!(admits(
        &breakglass("Pod"),
        &kube_system("replicaset-controller")
    ));
    assert!(!admits(
        &breakglass("Deployment"),
        &kube_system("generic-garbage-collector")
    ));
}

#[test]
fn each_named_controller_may_write_the_kind_it_makes_from_a_template_and_no_other() {
    for (controller, kind) in CONTROLLERS {
        let object = breakglass(kind);
        assert!(
            admits(&object, &kube_system(controller)),
            "{controller} creating a breakglass {kind}"
        );
        assert!(
            admits_update(&object, &kube_system(controller)),
            "{controller} updating a breakglass {kind} (adoption, scaling, finalizers)"
        );
        for other in [
            "Pod",
            "ReplicaSet",
            "Job",
            "Deployment",
            "StatefulSet",
            "DaemonSet",
            "CronJob",
        ] {
            if other != kind {
                assert!(
                    !admits(&breakglass(other), &kube_system(controller)),
                    "{controller} creating a breakglass {other}"
                );
            }
        }
    }
}

#[test]
fn any_other_kube_system_service_account_is_refused_like_a_person() {
    let pod = breakglass("Pod");
    for someone in [
        kube_system("generic-garbage-collector"),
        kube_system("default"),
        kube_system("kube-proxy"),
        kube_system("replicaset-controller-extra"),
        "system:kube-controller-manager".to_owned(),
        "system:serviceaccount:payments:replicaset-controller".to_owned(),
    ] {
        assert!(
            !admits(&pod, &someone),
            "{someone} creating a breakglass Pod"
        );
        assert!(
            !admits_update(&pod, &someone),
            "{someone} updating a breakglass Pod"
        );
    }
    for kind in ["ReplicaSet", "Job"] {
        assert!(
            !admits(&breakglass(kind), &kube_system("generic-garbage-collector")),
            "the garbage collector creating a breakglass {kind}"
        );
    }
}

#[test]
fn a_person_cannot_add_an_ephemeral_container_to_a_breakglass_pod_nor_can_its_controller() {
    let labelled = pod_being_debugged(json!({
        "name": "api-1", "labels": { "app": "api", "image-policy.k8s.io/break-glass": "true" }
    }));
    let annotated = pod_being_debugged(json!({
        "name": "api-1", "annotations": { "alpha.image-policy.k8s.io/break-glass": "true" }
    }));
    for pod in [&labelled, &annotated] {
        assert!(!admits_ephemeral_container(pod, PERSON));
        assert!(!admits_ephemeral_container(
            pod,
            "system:serviceaccount:ci:deployer"
        ));
        assert!(!admits_ephemeral_container(
            pod,
            &kube_system("replicaset-controller")
        ));
    }
}

#[test]
fn the_broker_may_add_an_ephemeral_container_to_a_breakglass_pod() {
    let labelled = pod_being_debugged(json!({
        "name": "api-1", "labels": { "app": "api", "image-policy.k8s.io/break-glass": "true" }
    }));
    assert!(admits_ephemeral_container(&labelled, BROKER));
}

#[test]
fn ephemeral_containers_on_an_ordinary_pod_are_untouched() {
    let ordinary = pod_being_debugged(json!({ "name": "api-1", "labels": { "app": "api" } }));
    assert!(admits_ephemeral_container(&ordinary, PERSON));
    let unlabelled = pod_being_debugged(json!({ "name": "api-1" }));
    assert!(admits_ephemeral_container(&unlabelled, PERSON));
}

#[test]
fn the_brokers_role_grants_every_kind_the_policy_lets_it_write_and_only_the_verbs_it_uses() {
    let docs = shipped("deploy/kubernetes/rbac.yaml");
    let role = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole")
        .expect("a ClusterRole");
    let binding = docs
        .iter()
        .find(|d| d["kind"] == "RoleBinding")
        .expect("a RoleBinding");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["name"], "breakglass-broker");
    assert_eq!(binding["subjects"][0]["namespace"], "breakglass");

    // (group, resource) -> verbs, over every rule of the role.
    let mut granted: Vec<((String, String), BTreeSet<String>)> = Vec::new();
    for rule in role["rules"].as_array().expect("rules") {
        let verbs: BTreeSet<String> = strings(&rule["verbs"]).into_iter().collect();
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                granted.push(((group.clone(), resource), verbs.clone()));
            }
        }
    }
    let verbs_on = |group: &str, resource: &str| -> BTreeSet<String> {
        granted
            .iter()
            .filter(|((g, r), _)| g == group && r == resource)
            .flat_map(|(_, verbs)| verbs.iter().cloned())
            .collect()
    };
    let wanted: BTreeSet<String> = BROKER_VERBS.iter().map(|v| (*v).to_owned()).collect();

    assert_eq!(
        verbs_on("apps", "replicasets"),
        wanted,
        "the broker can apply, restore and delete ReplicaSets"
    );
    // Every object the policy governs, the broker must be able to write (its subresources it
    // never touches).
    let governed: Vec<(String, String)> = policy()
        .rules
        .iter()
        .flat_map(|rule| {
            rule.groups.iter().flat_map(|g| {
                rule.resources
                    .iter()
                    .filter(|r| !r.contains('/'))
                    .map(|r| (g.clone(), r.clone()))
            })
        })
        .collect();
    assert_eq!(governed.len(), 7, "{governed:?}");
    for (group, resource) in &governed {
        assert_eq!(
            verbs_on(group, resource),
            wanted,
            "the broker's verbs on {group}/{resource}"
        );
    }
    // And nothing else: no other resource, subresource or wildcard.
    for ((group, resource), _) in &granted {
        assert!(
            governed.contains(&(group.clone(), resource.clone())),
            "the role grants {group}/{resource}, which the broker never writes"
        );
    }
}

#[test]
fn the_detectors_role_gets_lists_and_watches_every_kind_it_follows_and_nothing_more() {
    let docs = shipped("deploy/kubernetes/rbac.yaml");
    let role = docs
        .iter()
        .find(|d| {
            d["kind"] == "ClusterRole" && d["metadata"]["name"] == "breakglass-broker-detector"
        })
        .expect("the detector's ClusterRole");
    let mut granted: BTreeSet<(String, String, String)> = BTreeSet::new();
    for rule in role["rules"].as_array().expect("rules") {
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    granted.insert((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    let followed = [
        ("", "pods"),
        ("apps", "deployments"),
        ("apps", "replicasets"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
        ("batch", "jobs"),
        ("batch", "cronjobs"),
    ];
    let wanted: BTreeSet<(String, String, String)> = followed
        .iter()
        .flat_map(|(group, resource)| {
            // get: the owners of a write read in Cloud Audit Logs.
            ["get", "list", "watch"]
                .map(|verb| ((*group).to_owned(), (*resource).to_owned(), verb.to_owned()))
        })
        .collect();
    assert_eq!(granted, wanted);
}
