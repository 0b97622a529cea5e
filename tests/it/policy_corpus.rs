//! The refusal corpus: hostile and malformed requests, each sent to the preview and to filing,
//! each refused with its status and a message that names the object, the field path and the
//! rule. None may answer 5xx, and none may reach the cluster or the database.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{HOTFIX_IMAGE, TestEnv};
use crate::policy_env::{STRICT, start_with_strict_target, strict_request};

const UNPROCESSABLE: StatusCode = StatusCode::UNPROCESSABLE_ENTITY;
const TOO_LARGE: StatusCode = StatusCode::PAYLOAD_TOO_LARGE;
const BAD_REQUEST: StatusCode = StatusCode::BAD_REQUEST;

/// How long one refusal may take: tight in a release build, generous in a debug build on a
/// busy CI machine, where the whole corpus runs beside other tests.
const ANSWER_LIMIT: std::time::Duration = if cfg!(debug_assertions) {
    std::time::Duration::from_secs(30)
} else {
    std::time::Duration::from_secs(5)
};

/// A digest-pinned image from a registry nobody allows.
const DOCKER_HUB_IMAGE: &str = "docker.io/library/nginx@sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// What is sent: a JSON request body, or raw bytes with a content type.
enum Body {
    Json(Value),
    Raw(&'static str, String),
}

struct Case {
    name: &'static str,
    body: Body,
    status: StatusCode,
    /// Each must appear in the `error` message of both answers.
    expect: Vec<String>,
}

fn case(name: &'static str, body: Value, status: StatusCode, expect: &[&str]) -> Case {
    Case {
        name,
        body: Body::Json(body),
        status,
        expect: expect.iter().map(|e| (*e).to_owned()).collect(),
    }
}

/// A request for dev-cluster, namespace prod, with a valid ticket, justification and duration.
fn request(manifest: &str) -> Value {
    crate::common::request_body("prod", manifest, "INC-4242", 60)
}

/// The same request with one field replaced (or removed, with `Value::Null` and `remove`).
fn with(mut body: Value, field: &str, value: Value) -> Value {
    body[field] = value;
    body
}

fn without(mut body: Value, field: &str) -> Value {
    if let Some(map) = body.as_object_mut() {
        map.remove(field);
    }
    body
}

fn indent(lines: &str, by: usize) -> String {
    lines
        .lines()
        .map(|l| format!("{}{l}\n", " ".repeat(by)))
        .collect()
}

/// Deployment `api` with extra lines in its pod spec and in its only container.
fn deploy(pod: &str, container: &str) -> String {
    deploy_image(pod, container, HOTFIX_IMAGE)
}

fn deploy_image(pod: &str, container: &str, image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\nspec:\n  selector:\n    matchLabels: {{app: api}}\n  template:\n    metadata:\n      labels: {{app: api}}\n    spec:\n{}      containers:\n      - name: api\n        image: {image}\n{}",
        indent(pod, 6),
        indent(container, 8)
    )
}

/// Deployment `api` with extra lines in its own metadata and in its pod template's.
fn deploy_meta(object: &str, template: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\n{}spec:\n  selector:\n    matchLabels: {{app: api}}\n  template:\n    metadata:\n{}      labels: {{app: api}}\n    spec:\n      containers:\n      - name: api\n        image: {HOTFIX_IMAGE}\n",
        indent(object, 2),
        indent(template, 6)
    )
}

fn cronjob(pod: &str, image: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: nightly\nspec:\n  schedule: \"0 3 * * *\"\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: OnFailure\n{}          containers:\n          - name: nightly\n            image: {image}\n",
        indent(pod, 10)
    )
}

/// Any object of the given kind, as a one-document manifest.
fn object(api_version: &str, kind: &str, name: &str, rest: &str) -> String {
    format!("apiVersion: {api_version}\nkind: {kind}\nmetadata:\n  name: {name}\n{rest}")
}

fn billion_laughs() -> String {
    let mut doc = String::from(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: lol}\nl0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
    );
    for i in 1..10 {
        let refs = vec![format!("*l{}", i - 1); 9].join(", ");
        doc.push_str(&format!("l{i}: &l{i} [{refs}]\n"));
    }
    doc
}

fn deep_block(levels: usize) -> String {
    let mut doc = String::from("apiVersion: v1\nkind: Pod\nmetadata: {name: deep}\nspec:\n");
    for i in 0..levels {
        doc.push_str(&format!("{}k{i}:\n", "  ".repeat(i + 1)));
    }
    doc
}

fn many(count: usize) -> String {
    (0..count)
        .map(|i| {
            deploy(&format!("# copy {i}"), "")
                .replace("name: api\nspec", &format!("name: api-{i}\nspec"))
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Every case. Messages are checked as the engineer would read them.
fn corpus() -> Vec<Case> {
    let not_pinned = "Deployment/api: spec.template.spec.containers[0].image \"nginx:latest\" is not pinned by digest (target dev-cluster requires digests)";
    let mut cases = vec![
        // --- YAML that cannot be read at all: the message names the line.
        case("syntax error", request("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: [api\n"), UNPROCESSABLE, &["manifest line 4, column", "unclosed bracket"]),
        case("tab indentation", request("apiVersion: v1\nkind: Pod\nmetadata:\n\tname: a\n"), UNPROCESSABLE, &["manifest line 4", "tabs"]),
        case("unterminated quote", request("apiVersion: v1\nkind: Pod\nmetadata: {name: \"api}\n"), UNPROCESSABLE, &["manifest line "]),
        case("duplicate top-level key", request("apiVersion: v1\nkind: Pod\nkind: Secret\nmetadata: {name: a}\n"), UNPROCESSABLE, &["manifest line 3, column 1: key \"kind\" appears twice in the same mapping"]),
        case("duplicate key inside a container", request(&deploy("", &format!("image: {HOTFIX_IMAGE}"))), UNPROCESSABLE, &["manifest line 15", "key \"image\" appears twice"]),
        case("duplicate key in a JSON manifest", request(r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "name": "b"}}"#), UNPROCESSABLE, &["manifest line 1", "key \"name\" appears twice"]),
        case("billion laughs", request(&billion_laughs()), UNPROCESSABLE, &["manifest line ", "uses YAML aliases that expand too far"]),
        case("alias to an undefined anchor", request("apiVersion: v1\nkind: Pod\nmetadata: *meta\n"), UNPROCESSABLE, &["manifest line 3", "refers to an anchor (&name) that is not defined"]),
        case("deep block nesting", request(&deep_block(40)), UNPROCESSABLE, &["manifest line ", "is nested more than 32 levels deep"]),
        case("deep flow nesting", request(&format!("{}{}", "[".repeat(20_000), "]".repeat(20_000))), UNPROCESSABLE, &["manifest line 1", "is nested more than 32 levels deep"]),
        case("custom YAML tag", request("apiVersion: v1\nkind: !Secret Pod\nmetadata: {name: a}\n"), UNPROCESSABLE, &["manifest line 2", "unsupported tag"]),
        case("non-finite number", request(&deploy("", "").replace("selector:", "replicas: .inf\n  selector:")), UNPROCESSABLE, &["manifest line 6", "not a finite number"]),
        case("list as a mapping key", request("? [a, b]\n: c\n"), UNPROCESSABLE, &["manifest line 1", "keys must be strings"]),
        case("NUL character", request("apiVersion: v1\nkind: Pod\nmetadata: {name: \"a\u{0}\"}\n"), UNPROCESSABLE, &["manifest line 3", "unexpected character"]),
        case("trailing garbage after JSON", request(r#"{"apiVersion": "v1"} {"kind": "Pod"}"#), UNPROCESSABLE, &["manifest line 1, column"]),
        case("empty manifest", request(""), UNPROCESSABLE, &["manifest is missing: give a manifest, or a workload and the new images of its containers"]),
        case("only separators and comments", request("# nothing\n---\n---\n# still nothing\n"), UNPROCESSABLE, &["manifest contains no objects"]),
        // --- Size and count: too large is 413 however it is too large; too many is 422.
        case("manifest over the target's size limit", request(&format!("{}{}", deploy("", ""), "# padding\n".repeat(30_000))), TOO_LARGE, &["manifest is 30", "target dev-cluster accepts at most 262144 bytes"]),
        case("body over the request limit", request(&"# padding\n".repeat(120_000)), TOO_LARGE, &[]),
        case("too many objects", request(&many(21)), UNPROCESSABLE, &["manifest has 21 objects; target dev-cluster accepts at most 20"]),
        case("far too many documents", request(&"apiVersion: v1\n---\n".repeat(200)), UNPROCESSABLE, &["manifest has more than 28 objects; target dev-cluster accepts at most 20"]),
        case("too many objects for the strict target", strict_request(&many(4)), UNPROCESSABLE, &["manifest has 4 objects; target strict-cluster accepts at most 3"]),
        // --- Documents that are not objects, or not nameable.
        case("scalar document", request("just some text\n"), UNPROCESSABLE, &["document 1: is a string, not a mapping of fields"]),
        case("JSON array of objects", request(r#"[{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}}]"#), UNPROCESSABLE, &["document 1: is a list, not a mapping of fields", "separate documents"]),
        case("second document is a list", request(&format!("{}---\n- kind: Pod\n", deploy("", ""))), UNPROCESSABLE, &["document 2: is a list"]),
        case("missing apiVersion", request("kind: Pod\nmetadata: {name: a}\n"), UNPROCESSABLE, &["document 1: apiVersion is missing"]),
        case("missing kind", request("apiVersion: v1\nmetadata: {name: a}\n"), UNPROCESSABLE, &["document 1: kind is missing"]),
        case("kind is a number", request("apiVersion: v1\nkind: 7\nmetadata: {name: a}\n"), UNPROCESSABLE, &["document 1: kind is a number; it must be a string"]),
        case("kind is not a kind", request("apiVersion: v1\nkind: \"Pod; rm -rf\"\nmetadata: {name: a}\n"), UNPROCESSABLE, &["document 1: kind \"Pod; rm -rf\" is not a valid kind"]),
        case("apiVersion is not a version", request("apiVersion: \"../../v1\"\nkind: Pod\nmetadata: {name: a}\n"), UNPROCESSABLE, &["document 1: apiVersion \"../../v1\" is not a valid apiVersion"]),
        case("missing metadata", request("apiVersion: v1\nkind: Pod\nspec: {}\n"), UNPROCESSABLE, &["Pod in document 1: metadata is missing or not a mapping"]),
        case("missing name", request("apiVersion: v1\nkind: Pod\nmetadata: {labels: {app: a}}\n"), UNPROCESSABLE, &["Pod in document 1: metadata.name is missing"]),
        case("generateName", request("apiVersion: v1\nkind: Pod\nmetadata: {generateName: hotfix-}\n"), UNPROCESSABLE, &["Pod in document 1: metadata.generateName is not supported"]),
        case("name with capitals", request(&deploy("", "").replace("name: api\nspec", "name: API\nspec")), UNPROCESSABLE, &["Deployment in document 1: metadata.name \"API\" is not a valid Kubernetes name"]),
        case("name too long", request(&deploy("", "").replace("name: api\nspec", &format!("name: {}\nspec", "a".repeat(300)))), UNPROCESSABLE, &["Deployment in document 1: metadata.name \"aaaa", "is not a valid Kubernetes name"]),
        case("name that YAML reads as a boolean", request("apiVersion: v1\nkind: Pod\nmetadata: {name: off}\n"), UNPROCESSABLE, &["Pod in document 1: metadata.name is the boolean false; it must be a string (YAML reads yes, no, on and off as booleans: quote them)"]),
        case("name is a number", request("apiVersion: v1\nkind: Pod\nmetadata: {name: 42}\n"), UNPROCESSABLE, &["Pod in document 1: metadata.name is a number; it must be a string"]),
        case("another namespace", request(&deploy("", "").replace("name: api\nspec", "name: api\n  namespace: kube-system\nspec")), UNPROCESSABLE, &["Deployment/api: metadata.namespace is \"kube-system\", but the request is for namespace \"prod\""]),
        case("same object twice", request(&format!("{}---\n{}", deploy("", ""), deploy("", ""))), UNPROCESSABLE, &["Deployment/api: metadata.name appears twice in the manifest"]),
        // --- Kinds the target does not accept.
        case("Secret", request(&object("v1", "Secret", "db", "stringData: {password: hunter2}\n")), UNPROCESSABLE, &["Secret/db: kind \"Secret\" may not be requested on target dev-cluster (allowed: Deployment, StatefulSet, DaemonSet, Job, CronJob, Pod)"]),
        case("ClusterRole", request(&object("rbac.authorization.k8s.io/v1", "ClusterRole", "pwn", "rules: [{apiGroups: ['*'], resources: ['*'], verbs: ['*']}]\n")), UNPROCESSABLE, &["ClusterRole/pwn: kind \"ClusterRole\" may not be requested on target dev-cluster"]),
        case("RoleBinding", request(&object("rbac.authorization.k8s.io/v1", "RoleBinding", "pwn", "roleRef: {kind: ClusterRole, name: cluster-admin, apiGroup: rbac.authorization.k8s.io}\n")), UNPROCESSABLE, &["RoleBinding/pwn: kind \"RoleBinding\" may not be requested"]),
        case("Namespace", request(&object("v1", "Namespace", "evil", "")), UNPROCESSABLE, &["Namespace/evil: kind \"Namespace\" may not be requested"]),
        case("CustomResourceDefinition", request(&object("apiextensions.k8s.io/v1", "CustomResourceDefinition", "things.example.com", "spec: {group: example.com}\n")), UNPROCESSABLE, &["CustomResourceDefinition/things.example.com: kind \"CustomResourceDefinition\" may not be requested"]),
        case("MutatingWebhookConfiguration", request(&object("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration", "inject", "webhooks: []\n")), UNPROCESSABLE, &["MutatingWebhookConfiguration/inject: kind \"MutatingWebhookConfiguration\" may not be requested"]),
        case("ValidatingAdmissionPolicy", request(&object("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy", "disable-checks", "spec: {}\n")), UNPROCESSABLE, &["ValidatingAdmissionPolicy/disable-checks: kind \"ValidatingAdmissionPolicy\" may not be requested"]),
        case("Service", request(&object("v1", "Service", "api", "spec: {type: LoadBalancer}\n")), UNPROCESSABLE, &["Service/api: kind \"Service\" may not be requested"]),
        case("ServiceAccount", request(&object("v1", "ServiceAccount", "robot", "")), UNPROCESSABLE, &["ServiceAccount/robot: kind \"ServiceAccount\" may not be requested"]),
        case("ReplicaSet, which dev-cluster does not list", request(&deploy("", "").replace("kind: Deployment", "kind: ReplicaSet")), UNPROCESSABLE, &["ReplicaSet/api: kind \"ReplicaSet\" may not be requested"]),
        case("List wrapping a Secret", request(&object("v1", "List", "bundle", "items:\n- {apiVersion: v1, kind: Secret, metadata: {name: x}}\n")), UNPROCESSABLE, &["List/bundle: kind \"List\" may not be requested"]),
        case("Deployment in an old API version", request(&deploy("", "").replace("apps/v1", "extensions/v1beta1")), UNPROCESSABLE, &["Deployment/api: apiVersion \"extensions/v1beta1\" is not accepted for Deployment on target dev-cluster (write apiVersion: apps/v1)"]),
        case("Pod in the apps group", request(&object("apps/v1", "Pod", "p", &format!("spec: {{containers: [{{name: a, image: {HOTFIX_IMAGE}}}]}}\n"))), UNPROCESSABLE, &["Pod/p: apiVersion \"apps/v1\" is not accepted for Pod on target dev-cluster (write apiVersion: v1)"]),
        case("several kinds at once, all named", request(&format!("{}---\n{}", object("v1", "Secret", "a", ""), object("v1", "ConfigMap", "b", ""))), UNPROCESSABLE, &["Secret/a: kind \"Secret\"", "ConfigMap/b: kind \"ConfigMap\""]),
        // --- Keys that belong to the broker, on the object and on its templates.
        case("breakglass label on the object", request(&deploy_meta("labels: {image-policy.k8s.io/break-glass: \"true\"}", "")), UNPROCESSABLE, &["Deployment/api: metadata.labels[\"image-policy.k8s.io/break-glass\"] is set by the broker itself; remove it from the manifest"]),
        case("breakglass label on the pod template", request(&deploy("", "").replace("labels: {app: api}\n    spec", "labels: {app: api, image-policy.k8s.io/break-glass: \"true\"}\n    spec")), UNPROCESSABLE, &["Deployment/api: spec.template.metadata.labels[\"image-policy.k8s.io/break-glass\"] is set by the broker itself"]),
        case("legacy breakglass annotation on the template", request(&deploy_meta("", "annotations: {alpha.image-policy.k8s.io/break-glass: \"true\"}")), UNPROCESSABLE, &["Deployment/api: spec.template.metadata.annotations[\"alpha.image-policy.k8s.io/break-glass\"] is set by the broker itself"]),
        case("breakglass label in other capitals", request(&deploy_meta("", "annotations: {Image-Policy.K8s.io/Break-Glass: \"true\"}")), UNPROCESSABLE, &["spec.template.metadata.annotations[\"Image-Policy.K8s.io/Break-Glass\"] is set by the broker itself"]),
        case("Cloud Run breakglass annotation", request(&deploy_meta("annotations: {run.googleapis.com/binary-authorization-breakglass: \"INC-1\"}", "")), UNPROCESSABLE, &["Deployment/api: metadata.annotations[\"run.googleapis.com/binary-authorization-breakglass\"] is set by the broker itself"]),
        case("broker request-id label on the object", request(&deploy_meta("labels: {breakglass-broker.io/request-id: forged}", "")), UNPROCESSABLE, &["Deployment/api: metadata.labels[\"breakglass-broker.io/request-id\"] is set by the broker itself"]),
        case("broker approvers annotation on the template", request(&deploy_meta("", "annotations: {breakglass-broker.io/approvers: \"bob,carol\"}")), UNPROCESSABLE, &["Deployment/api: spec.template.metadata.annotations[\"breakglass-broker.io/approvers\"] is set by the broker itself"]),
        case("breakglass label on a CronJob's job template", request(&cronjob("", HOTFIX_IMAGE).replace("  jobTemplate:\n", "  jobTemplate:\n    metadata: {labels: {image-policy.k8s.io/break-glass: \"true\"}}\n")), UNPROCESSABLE, &["CronJob/nightly: spec.jobTemplate.metadata.labels[\"image-policy.k8s.io/break-glass\"] is set by the broker itself"]),
        case("label value that is not a string", request(&deploy_meta("labels: {replicas: 3}", "")), UNPROCESSABLE, &["Deployment/api: metadata.labels[\"replicas\"] is 3; labels must be strings"]),
        case("finalizer that would outlive the breakglass", request(&deploy_meta("finalizers: [example.com/keep]", "")), UNPROCESSABLE, &["Deployment/api: metadata.finalizers is set; a finalizer could keep the breakglass workload after its time is up"]),
        case("owner reference", request(&deploy_meta("ownerReferences: [{apiVersion: v1, kind: ConfigMap, name: x, uid: u}]", "")), UNPROCESSABLE, &["Deployment/api: metadata.ownerReferences is set"]),
        // --- Pod guardrails.
        case("privileged container", request(&deploy("", "securityContext: {privileged: true}")), UNPROCESSABLE, &["Deployment/api: spec.template.spec.containers[0].securityContext.privileged is true; privileged containers are not allowed"]),
        case("privileged spelled as a string", request(&deploy("", "securityContext: {privileged: \"true\"}")), UNPROCESSABLE, &["Deployment/api: spec.template.spec.containers[0].securityContext.privileged is \"true\"; it must be true or false"]),
        case("privileged init container", request(&deploy(&format!("initContainers: [{{name: init, image: {HOTFIX_IMAGE}, securityContext: {{privileged: true}}}}]"), "")), UNPROCESSABLE, &["Deployment/api: spec.template.spec.initContainers[0].securityContext.privileged is true"]),
        case("hostNetwork", request(&deploy("hostNetwork: true", "")), UNPROCESSABLE, &["Deployment/api: spec.template.spec.hostNetwork is true; pods may not share the node's network namespace"]),
        case("hostPID", request(&deploy("hostPID: true", "")), UNPROCESSABLE, &["Deployment/api: spec.template.spec.hostPID is true; pods may not share the node's process namespace"]),
        case("hostIPC", request(&deploy("hostIPC: true", "")), UNPROCESSABLE, &["Deployment/api: spec.template.spec.hostIPC is true; pods may not share the node's IPC namespace"]),
        case("hostNetwork as a string", request(&deploy("hostNetwork: \"yes\"", "")), UNPROCESSABLE, &["Deployment/api: spec.template.spec.hostNetwork is \"yes\"; it must be true or false"]),
        case("hostPath volume", request(&deploy("volumes: [{name: root, hostPath: {path: /}}]", "")), UNPROCESSABLE, &["Deployment/api: spec.template.spec.volumes[0].hostPath mounts the node's filesystem, which is not allowed"]),
        case("hostPort", request(&deploy("", "ports: [{containerPort: 80, hostPort: 80}]")), UNPROCESSABLE, &["Deployment/api: spec.template.spec.containers[0].ports[0].hostPort is 80; binding a port on the node is not allowed"]),
        case("SYS_ADMIN capability", request(&deploy("", "securityContext: {capabilities: {add: [SYS_ADMIN]}}")), UNPROCESSABLE, &["Deployment/api: spec.template.spec.containers[0].securityContext.capabilities.add[0] \"SYS_ADMIN\" is not allowed (target dev-cluster allows: NET_BIND_SERVICE)"]),
        case("NET_RAW capability", request(&deploy("", "securityContext: {capabilities: {add: [NET_BIND_SERVICE, NET_RAW]}}")), UNPROCESSABLE, &["securityContext.capabilities.add[1] \"NET_RAW\" is not allowed"]),
        case("ALL capabilities", request(&deploy("", "securityContext: {capabilities: {add: [ALL]}}")), UNPROCESSABLE, &["securityContext.capabilities.add[0] \"ALL\" is not allowed"]),
        case("capability in lower case with a prefix", request(&deploy("", "securityContext: {capabilities: {add: [cap_sys_admin]}}")), UNPROCESSABLE, &["securityContext.capabilities.add[0] \"cap_sys_admin\" is not allowed"]),
        case("capabilities as a string", request(&deploy("", "securityContext: {capabilities: {add: SYS_ADMIN}}")), UNPROCESSABLE, &["securityContext.capabilities.add is a string; it must be a list of capability names"]),
        case("service account outside the allowlist", request(&deploy("serviceAccountName: cluster-admin", "")), UNPROCESSABLE, &["Deployment/api: spec.template.spec.serviceAccountName \"cluster-admin\" is not allowed on target dev-cluster (allowed: default)"]),
        case("deprecated serviceAccount field", request(&deploy("serviceAccountName: default\nserviceAccount: cluster-admin", "")), UNPROCESSABLE, &["Deployment/api: spec.template.spec.serviceAccount \"cluster-admin\" is not allowed on target dev-cluster"]),
        case("empty containers", request(&deploy_image("", "", HOTFIX_IMAGE).replace(&format!("      containers:\n      - name: api\n        image: {HOTFIX_IMAGE}\n"), "      containers: []\n")), UNPROCESSABLE, &["Deployment/api: spec.template.spec.containers is empty; a pod needs at least one container"]),
        case("only init containers", request(&deploy_image("", "", HOTFIX_IMAGE).replace("      containers:\n", "      initContainers:\n")), UNPROCESSABLE, &["Deployment/api: spec.template.spec.containers is empty"]),
        case("container without an image", request(&deploy_image("", "", HOTFIX_IMAGE).replace(&format!("        image: {HOTFIX_IMAGE}\n"), "")), UNPROCESSABLE, &["Deployment/api: spec.template.spec.containers[0].image is missing"]),
        case("containers as a mapping", request(&deploy_image("", "", HOTFIX_IMAGE).replace(&format!("      containers:\n      - name: api\n        image: {HOTFIX_IMAGE}\n"), "      containers: {name: api}\n")), UNPROCESSABLE, &["Deployment/api: spec.template.spec.containers is a mapping; it must be a list of containers"]),
        case("Deployment without a pod template", request("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api}\nspec: {replicas: 1}\n"), UNPROCESSABLE, &["Deployment/api: spec.template is missing or not a mapping"]),
        case("Pod without a spec", request("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"), UNPROCESSABLE, &["Pod/p: spec is missing or not a mapping"]),
        // --- Images.
        case("tag instead of a digest", request(&deploy_image("", "", "nginx:latest")), UNPROCESSABLE, &[not_pinned]),
        case("allowed registry, tag instead of a digest", request(&deploy_image("", "", "us-docker.pkg.dev/acme/hotfix/api:1.2.3")), UNPROCESSABLE, &["Deployment/api: spec.template.spec.containers[0].image \"us-docker.pkg.dev/acme/hotfix/api:1.2.3\" is not pinned by digest (target dev-cluster requires digests)"]),
        case("image from another registry", request(&deploy_image("", "", DOCKER_HUB_IMAGE)), UNPROCESSABLE, &["Deployment/api: spec.template.spec.containers[0].image \"docker.io/library/nginx@sha256:0000", "is not from an allowed registry (target dev-cluster allows us-docker.pkg.dev/)"]),
        case("look-alike registry host", request(&deploy_image("", "", &HOTFIX_IMAGE.replace("us-docker.pkg.dev/", "us-docker.pkg.dev.evil.example/"))), UNPROCESSABLE, &["is not from an allowed registry"]),
        case("registry prefix without a path boundary", strict_request(&crate::policy_env::strict_deployment("api").replace("pkg.dev/acme/hotfix", "pkg.dev/acme-evil/hotfix")), UNPROCESSABLE, &["Deployment/api: spec.template.spec.containers[0].image \"us-docker.pkg.dev/acme-evil/hotfix/api@sha256:", "is not from an allowed registry (target strict-cluster allows us-docker.pkg.dev/acme)"]),
        case("digest too short", request(&deploy_image("", "", "us-docker.pkg.dev/acme/api@sha256:abc123")), UNPROCESSABLE, &["Deployment/api: spec.template.spec.containers[0].image \"us-docker.pkg.dev/acme/api@sha256:abc123\" has a malformed digest \"sha256:abc123\""]),
        case("digest in upper case", request(&deploy_image("", "", &format!("us-docker.pkg.dev/acme/api@sha256:{}", "8F4E".repeat(16)))), UNPROCESSABLE, &["has a malformed digest \"sha256:8F4E"]),
        case("digest with another algorithm", request(&deploy_image("", "", &format!("us-docker.pkg.dev/acme/api@md5:{}", "0".repeat(32)))), UNPROCESSABLE, &["has a malformed digest \"md5:0000", "expected sha256: and 64 lower-case hex digits"]),
        case("image with a space", request(&deploy_image("", "", "\"us-docker.pkg.dev/acme/api @sha256:00\"")), UNPROCESSABLE, &["is not a valid image reference (it contains spaces or control characters)"]),
        case("image path with a parent directory", request(&deploy_image("", "", &HOTFIX_IMAGE.replace("acme/hotfix", "acme/../other"))), UNPROCESSABLE, &["is not a valid image reference"]),
        case("image as a number", request(&deploy_image("", "", "42")), UNPROCESSABLE, &["Deployment/api: spec.template.spec.containers[0].image is a number; it must be a string"]),
        case("init container with an unpinned image", request(&deploy("initContainers: [{name: init, image: \"busybox:latest\"}]", "")), UNPROCESSABLE, &["Deployment/api: spec.template.spec.initContainers[0].image \"busybox:latest\" is not pinned by digest"]),
        case("ephemeral container from another registry", request(&deploy(&format!("ephemeralContainers: [{{name: debug, image: \"{DOCKER_HUB_IMAGE}\"}}]"), "")), UNPROCESSABLE, &["Deployment/api: spec.template.spec.ephemeralContainers[0].image \"docker.io/library/nginx@sha256:", "is not from an allowed registry"]),
        case("CronJob with an unpinned image", request(&cronjob("", "nginx:latest")), UNPROCESSABLE, &["CronJob/nightly: spec.jobTemplate.spec.template.spec.containers[0].image \"nginx:latest\" is not pinned by digest (target dev-cluster requires digests)"]),
        case("CronJob on the host network", request(&cronjob("hostNetwork: true", HOTFIX_IMAGE)), UNPROCESSABLE, &["CronJob/nightly: spec.jobTemplate.spec.template.spec.hostNetwork is true"]),
        case("Job with a privileged container", request(&deploy("", "securityContext: {privileged: true}").replace("apps/v1", "batch/v1").replace("kind: Deployment", "kind: Job")), UNPROCESSABLE, &["Job/api: spec.template.spec.containers[0].securityContext.privileged is true"]),
        case("bare Pod with an unpinned image", request(&object("v1", "Pod", "p", "spec:\n  containers: [{name: a, image: \"nginx:latest\"}]\n")), UNPROCESSABLE, &["Pod/p: spec.containers[0].image \"nginx:latest\" is not pinned by digest"]),
        case("every finding at once", request(&deploy_image("hostNetwork: true", "securityContext: {privileged: true}", "nginx:latest")), UNPROCESSABLE, &["spec.template.spec.hostNetwork is true", "securityContext.privileged is true", not_pinned]),
        case("JSON manifest with an unpinned image", request(r#"{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"}, "spec": {"template": {"spec": {"containers": [{"name": "api", "image": "nginx:latest"}]}}}}"#), UNPROCESSABLE, &[not_pinned]),
        // --- Token automounting, where the target does not allow it.
        case("automount not set on the strict target", strict_request(&crate::policy_env::strict_deployment("api").replace("      automountServiceAccountToken: false\n", "")), UNPROCESSABLE, &["Deployment/api: spec.template.spec.automountServiceAccountToken is not set; it must be false (target strict-cluster does not allow service account tokens)"]),
        case("automount true on the strict target", strict_request(&crate::policy_env::strict_deployment("api").replace("automountServiceAccountToken: false", "automountServiceAccountToken: true")), UNPROCESSABLE, &["Deployment/api: spec.template.spec.automountServiceAccountToken is true; it must be false"]),
        case("automount as the string \"false\"", strict_request(&crate::policy_env::strict_deployment("api").replace("automountServiceAccountToken: false", "automountServiceAccountToken: \"false\"")), UNPROCESSABLE, &["automountServiceAccountToken is \"false\"; it must be false"]),
        case("projected service account token", strict_request(&crate::policy_env::strict_deployment("api").replace("      automountServiceAccountToken: false\n", "      automountServiceAccountToken: false\n      volumes: [{name: t, projected: {sources: [{serviceAccountToken: {path: token}}]}}]\n")), UNPROCESSABLE, &["Deployment/api: spec.template.spec.volumes[0].projected.sources[0].serviceAccountToken mounts a service account token (target strict-cluster does not allow service account tokens)"]),
        case("service account outside the strict allowlist", strict_request(&crate::policy_env::strict_deployment("api").replace("      automountServiceAccountToken: false\n", "      automountServiceAccountToken: false\n      serviceAccountName: payments-admin\n")), UNPROCESSABLE, &["spec.template.spec.serviceAccountName \"payments-admin\" is not allowed on target strict-cluster (allowed: default, api-runner)"]),
        // --- The request's own fields.
        case("ticket not matching", with(request(&deploy("", "")), "ticket", json!("fixing stuff")), UNPROCESSABLE, &["ticket \"fixing stuff\" does not match the ticket pattern ^[A-Z][A-Z0-9]*-[0-9]+$ of target dev-cluster"]),
        case("ticket with a second line", with(request(&deploy("", "")), "ticket", json!("INC-1\nrm -rf")), UNPROCESSABLE, &["ticket \"INC-1\\nrm -rf\" does not match the ticket pattern"]),
        case("ticket too long", with(request(&deploy("", "")), "ticket", json!(format!("INC-{}", "1".repeat(300)))), UNPROCESSABLE, &["ticket is longer than 200 characters"]),
        case("ticket not matching the strict pattern", with(strict_request(&crate::policy_env::strict_deployment("api")), "ticket", json!("JIRA-1")), UNPROCESSABLE, &["ticket \"JIRA-1\" does not match the ticket pattern ^(INC|CHG)-[0-9]+$ of target strict-cluster"]),
        case("short justification", with(request(&deploy("", "")), "justification", json!("asap")), UNPROCESSABLE, &["justification must say why, in at least 10 characters"]),
        case("blank justification", with(request(&deploy("", "")), "justification", json!("          \n\t  ")), UNPROCESSABLE, &["justification must say why"]),
        case("justification too long", with(request(&deploy("", "")), "justification", json!("why ".repeat(1500))), UNPROCESSABLE, &["justification must be at most 4000 characters"]),
        case("duration 0", with(request(&deploy("", "")), "duration_minutes", json!(0)), UNPROCESSABLE, &["duration_minutes 0 is not between 1 and 240 minutes (target dev-cluster allows at most 4h)"]),
        case("duration over the maximum", with(request(&deploy("", "")), "duration_minutes", json!(241)), UNPROCESSABLE, &["duration_minutes 241 is not between 1 and 240 minutes"]),
        case("largest duration there is", with(request(&deploy("", "")), "duration_minutes", json!(u64::MAX)), UNPROCESSABLE, &["duration_minutes 18446744073709551615 is not between 1 and 240 minutes"]),
        case("unknown target", with(request(&deploy("", "")), "target", json!("prod-gke")), UNPROCESSABLE, &["target \"prod-gke\" is not a configured target (known: dev-cluster, dev-gke, dev-run, strict-cluster)"]),
        case("namespace not allowed", with(request(&deploy("", "")), "namespace", json!("kube-system")), UNPROCESSABLE, &["namespace \"kube-system\" is not open to breakglass on target dev-cluster (allowed: default, prod)"]),
        case("namespace not allowed on the strict target", with(strict_request(&crate::policy_env::strict_deployment("api")), "namespace", json!("default")), UNPROCESSABLE, &["namespace \"default\" is not open to breakglass on target strict-cluster (allowed: prod)"]),
        // --- The JSON body itself.
        case("unknown JSON field", with(request(&deploy("", "")), "approvers", json!(["alice"])), UNPROCESSABLE, &["unknown field `approvers`"]),
        case("duration as a string", with(request(&deploy("", "")), "duration_minutes", json!("60")), UNPROCESSABLE, &["duration_minutes: invalid type: string \"60\", expected u64"]),
        case("negative duration", with(request(&deploy("", "")), "duration_minutes", json!(-5)), UNPROCESSABLE, &["duration_minutes: invalid value: integer `-5`"]),
        case("fractional duration", with(request(&deploy("", "")), "duration_minutes", json!(1.5)), UNPROCESSABLE, &["duration_minutes: invalid type: floating point"]),
        case("manifest as a JSON object", with(request(""), "manifest", json!({"kind": "Pod"})), UNPROCESSABLE, &["manifest: invalid type: map, expected a string"]),
        case("ticket null", with(request(&deploy("", "")), "ticket", Value::Null), UNPROCESSABLE, &["ticket: invalid type: null"]),
        case("missing manifest", without(request(""), "manifest"), UNPROCESSABLE, &["manifest is missing: give a manifest, or a workload and the new images of its containers"]),
        case("body is a list", json!([request("")]), UNPROCESSABLE, &["Failed to deserialize the JSON body"]),
    ];
    cases.push(Case {
        name: "body is not JSON",
        body: Body::Raw("application/json", "{not json".into()),
        status: BAD_REQUEST,
        expect: vec!["Failed to parse the request body as JSON".into()],
    });
    cases.push(Case {
        name: "lone surrogate in a JSON string",
        body: Body::Raw(
            "application/json",
            r#"{"target": "dev-cluster", "namespace": "prod", "manifest": "\ud800", "ticket": "INC-1", "justification": "0123456789", "duration_minutes": 5}"#.into(),
        ),
        status: BAD_REQUEST,
        expect: vec!["Failed to parse the request body as JSON: manifest:".into()],
    });
    cases.push(Case {
        name: "body sent as a form",
        body: Body::Raw(
            "application/x-www-form-urlencoded",
            "target=dev-cluster".into(),
        ),
        status: BAD_REQUEST,
        expect: vec!["Content-Type: application/json".into()],
    });
    cases
}

/// Sends one case to one endpoint and checks what comes back; returns what was wrong.
async fn check_case(env: &TestEnv, token: &str, path: &str, case: &Case) -> Option<String> {
    let request = env.http.post(env.url(path)).bearer_auth(token);
    let request = match &case.body {
        Body::Json(value) => request.json(value),
        Body::Raw(content_type, text) => request
            .header("content-type", *content_type)
            .body(text.clone()),
    };
    let started = std::time::Instant::now();
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) => return Some(format!("{}: {path}: no answer: {e}", case.name)),
    };
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let elapsed = started.elapsed();
    let message = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| text.clone());
    let mut wrong = Vec::new();
    if status.is_server_error() {
        wrong.push(format!("server error {status}"));
    }
    if status != case.status {
        wrong.push(format!("status {status}, expected {}", case.status));
    }
    for expected in &case.expect {
        if !message.contains(expected.as_str()) {
            wrong.push(format!("message lacks {expected:?}"));
        }
    }
    // A refusal takes milliseconds; the bound only catches a parser that blows up (an alias
    // bomb or deep nesting read in full takes minutes), with room for a busy debug build.
    if elapsed > ANSWER_LIMIT {
        wrong.push(format!("took {elapsed:?}"));
    }
    (!wrong.is_empty()).then(|| {
        format!(
            "{}: POST {path}: {}\n    got: {}",
            case.name,
            wrong.join("; "),
            message.chars().take(600).collect::<String>()
        )
    })
}

#[tokio::test]
async fn every_hostile_or_malformed_request_is_refused_with_a_message_that_names_the_problem() {
    let env = start_with_strict_target().await;
    let corpus = corpus();
    assert!(corpus.len() >= 60, "the corpus has {} cases", corpus.len());
    let token = env.token("alice").await;
    let mut failures = Vec::new();
    for case in &corpus {
        // One filing a second stays within a person's default 60 a minute ([limits]).
        env.clock.advance(std::time::Duration::from_secs(1));
        for path in ["/api/v1/requests/preview", "/api/v1/requests"] {
            if let Some(failure) = check_case(&env, &token, path, case).await {
                failures.push(failure);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} answers were wrong:\n{}",
        failures.len(),
        corpus.len() * 2,
        failures.join("\n")
    );

    // Nothing reached the cluster, and nothing was stored or audited.
    assert!(
        env.env.sim.writes().is_empty(),
        "{:?}",
        env.env.sim.writes()
    );
    assert!(env.env.sim.breakglass_admissions().is_empty());
    let (status, listed) = env.get("dave", "/api/v1/requests").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed, json!([]), "no request was stored");
    let (status, events) = env.get("dave", "/api/v1/audit").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(events, json!([]), "no audit event was written");
}

#[tokio::test]
async fn the_preview_of_an_acceptable_request_shows_the_digest_and_the_rule_and_stores_nothing() {
    let env = start_with_strict_target().await;
    let (status, preview) = env
        .post(
            "alice",
            "/api/v1/requests/preview",
            strict_request(&crate::policy_env::strict_deployment("api")),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(
        preview["approval_rule"],
        "1 from approvers AND 1 from oncall"
    );
    assert!(
        preview["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:") && d.len() == 71),
        "{preview}"
    );
    assert_eq!(preview["objects"][0]["metadata"]["namespace"], "prod");
    let (_, listed) = env.get("dave", "/api/v1/requests").await;
    assert_eq!(listed, json!([]));

    let (status, preview) = env
        .post(
            "alice",
            "/api/v1/requests/preview",
            request(&deploy("", "")),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "dev-cluster takes a plain hotfix: {preview}"
    );
    assert_eq!(preview["approval_rule"], "2 from approvers");

    // The same request sent to the other target is another request: its digest differs, so
    // an approval for one cannot be spent on the other.
    let strict_body = strict_request(&crate::policy_env::strict_deployment("api"));
    assert_eq!(strict_body["target"], STRICT);
    let (_, on_strict) = env
        .post("alice", "/api/v1/requests/preview", strict_body.clone())
        .await;
    let (status, on_dev) = env
        .post(
            "alice",
            "/api/v1/requests/preview",
            with(strict_body, "target", json!("dev-cluster")),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{on_dev}");
    assert_eq!(on_dev["approval_rule"], "2 from approvers");
    assert_eq!(on_dev["objects"], on_strict["objects"], "the same objects");
    assert_ne!(
        on_dev["digest"], on_strict["digest"],
        "the target is part of what is approved"
    );
}
