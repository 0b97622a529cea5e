//! The simulated cluster through real HTTP: kube-rs as the broker uses it, and kubectl.

use std::error::Error;

use breakglass_broker::dev::sim_cluster::{
    BreakglassAdmission, ObjectKey, SimCluster, SimClusterConfig, WriteRecord, kubeconfig,
};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams, Preconditions,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, ResourceExt};
use serde_json::json;

mod kubectl;
mod watch;

type TestResult = Result<(), Box<dyn Error>>;

const TOKEN: &str = "sim-write-token";
const ATTESTED: &str = "us-docker.pkg.dev/acme/release/";
const UNATTESTED: &str = "docker.io/library/nginx:1.27";
const BREAKGLASS: &str = "image-policy.k8s.io/break-glass";
const MANAGER: &str = "breakglass-broker";

/// A simulator serving on a random loopback port for the length of one test.
struct Sim {
    cluster: SimCluster,
    url: String,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Sim {
    async fn start() -> Result<Self, Box<dyn Error>> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let cluster = SimCluster::new(SimClusterConfig {
            write_token: TOKEN.to_owned(),
            attested_prefixes: vec![ATTESTED.to_owned()],
            namespaces: vec!["default".to_owned(), "prod".to_owned()],
        });
        let task = tokio::spawn(cluster.clone().serve(listener));
        Ok(Self { cluster, url, task })
    }

    /// A kube-rs client without its default retries, so failures surface at once.
    async fn client(&self, token: Option<&str>) -> Result<Client, Box<dyn Error>> {
        let mut config = self.config(token).await?;
        config.default_retry = false;
        Ok(Client::try_from(config)?)
    }

    async fn config(&self, token: Option<&str>) -> Result<Config, Box<dyn Error>> {
        let kubeconfig = Kubeconfig::from_yaml(&kubeconfig(&self.url, token))?;
        Ok(Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?)
    }

    async fn deployments(&self, token: Option<&str>) -> Result<Api<DynamicObject>, Box<dyn Error>> {
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment"));
        Ok(Api::namespaced_with(
            self.client(token).await?,
            "prod",
            &resource,
        ))
    }

    async fn writer(&self) -> Result<Api<DynamicObject>, Box<dyn Error>> {
        self.deployments(Some(TOKEN)).await
    }
}

fn deployment_key(name: &str) -> ObjectKey {
    ObjectKey::new("apps/v1", "Deployment", "prod", name)
}

fn deployment(name: &str, image: &str, breakglass: bool) -> Result<DynamicObject, Box<dyn Error>> {
    let mut object = deployment_labelled(name, image, breakglass)?;
    if breakglass {
        object
            .labels_mut()
            .insert(BREAKGLASS.to_owned(), "true".to_owned());
    }
    Ok(object)
}

/// A Deployment whose pod template carries the breakglass label or not.
fn deployment_labelled(
    name: &str,
    image: &str,
    template_breakglass: bool,
) -> Result<DynamicObject, Box<dyn Error>> {
    let mut template_labels = json!({ "app": name });
    if template_breakglass {
        template_labels[BREAKGLASS] = json!("true");
    }
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name, "namespace": "prod", "labels": { "app": name } },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": template_labels },
                "spec": { "containers": [{ "name": "app", "image": image }] },
            },
        },
    }))?)
}

async fn apply(api: &Api<DynamicObject>, object: &DynamicObject) -> kube::Result<DynamicObject> {
    let name = object.metadata.name.clone().unwrap_or_default();
    let params = PatchParams::apply(MANAGER).force();
    api.patch(&name, &params, &Patch::Apply(object)).await
}

/// The API `Status` a failed call carried.
fn status_of<T: std::fmt::Debug>(result: kube::Result<T>) -> Result<kube::core::Status, String> {
    match result {
        Err(kube::Error::Api(status)) => Ok(*status),
        other => Err(format!("expected an API error, got {other:?}")),
    }
}

fn first_image(object: &DynamicObject) -> Option<&str> {
    object
        .data
        .pointer("/spec/template/spec/containers/0/image")?
        .as_str()
}

#[tokio::test]
async fn attested_deployment_is_admitted_and_stored_with_server_metadata() -> TestResult {
    let sim = Sim::start().await?;
    let api = sim.writer().await?;

    let applied = apply(
        &api,
        &deployment("api", &format!("{ATTESTED}api:1"), false)?,
    )
    .await?;
    let fetched = api.get("api").await?;

    assert!(applied.metadata.uid.is_some());
    assert_eq!(fetched.metadata.uid, applied.metadata.uid);
    assert_eq!(
        fetched.metadata.resource_version,
        applied.metadata.resource_version
    );
    assert!(fetched.metadata.creation_timestamp.is_some());
    assert_eq!(fetched.metadata.generation, Some(1));
    assert_eq!(
        first_image(&fetched),
        Some(format!("{ATTESTED}api:1").as_str())
    );
    assert_eq!(sim.cluster.write_count(&deployment_key("api")).applies, 1);
    assert!(sim.cluster.breakglass_admissions().is_empty());
    Ok(())
}

#[tokio::test]
async fn unattested_image_is_denied_without_breakglass() -> TestResult {
    let sim = Sim::start().await?;
    let api = sim.writer().await?;

    let status = status_of(apply(&api, &deployment("api", UNATTESTED, false)?).await)?;

    assert_eq!(status.code, 403);
    assert_eq!(status.reason, "Forbidden");
    assert!(
        status
            .message
            .contains(&format!("Image {UNATTESTED} denied")),
        "{}",
        status.message
    );
    assert!(sim.cluster.object(&deployment_key("api")).is_none());
    assert_eq!(sim.cluster.write_count(&deployment_key("api")).total(), 0);
    assert!(sim.cluster.breakglass_admissions().is_empty());
    Ok(())
}

#[tokio::test]
async fn breakglass_label_on_template_admits_unattested_image_and_records_it() -> TestResult {
    let sim = Sim::start().await?;
    let api = sim.writer().await?;

    apply(&api, &deployment("hotfix", UNATTESTED, true)?).await?;
    let over_http: Vec<BreakglassAdmission> =
        reqwest::get(format!("{}/sim/v1/breakglass-admissions", sim.url))
            .await?
            .json()
            .await?;

    let admissions = sim.cluster.breakglass_admissions();
    assert_eq!(admissions.len(), 1);
    let admission = &admissions[0];
    assert_eq!(admission.key, deployment_key("hotfix"));
    assert_eq!(admission.images, [UNATTESTED]);
    assert_eq!(
        admission.user,
        "system:serviceaccount:breakglass:breakglass-broker"
    );
    assert_eq!(
        admission.labels.get(BREAKGLASS).map(String::as_str),
        Some("true")
    );
    assert_eq!(over_http, admissions);
    assert!(sim.cluster.object(&deployment_key("hotfix")).is_some());
    Ok(())
}

#[tokio::test]
async fn breakglass_label_only_on_the_deployment_itself_does_not_admit() -> TestResult {
    let sim = Sim::start().await?;
    let api = sim.writer().await?;
    let mut object = deployment_labelled("api", UNATTESTED, false)?;
    object
        .labels_mut()
        .insert(BREAKGLASS.to_owned(), "true".to_owned());

    let status = status_of(apply(&api, &object).await)?;

    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
    assert!(sim.cluster.breakglass_admissions().is_empty());
    Ok(())
}

#[tokio::test]
async fn list_filters_by_label_selector_on_the_server() -> TestResult {
    let sim = Sim::start().await?;
    let api = sim.writer().await?;
    apply(
        &api,
        &deployment("api", &format!("{ATTESTED}api:1"), false)?,
    )
    .await?;
    apply(&api, &deployment("hotfix", UNATTESTED, true)?).await?;

    let names = |list: kube::core::ObjectList<DynamicObject>| -> Vec<String> {
        list.items
            .into_iter()
            .filter_map(|o| o.metadata.name)
            .collect()
    };
    let breakglass = api
        .list(&ListParams::default().labels(&format!("{BREAKGLASS}=true")))
        .await?;
    let without = api
        .list(&ListParams::default().labels(&format!("!{BREAKGLASS}")))
        .await?;
    let both = api
        .list(&ListParams::default().labels("app in (api, hotfix)"))
        .await?;
    let bad = status_of(api.list(&ListParams::default().labels("app in (api")).await)?;
    let metadata_only = api
        .list_metadata(&ListParams::default().labels(&format!("{BREAKGLASS}=true")))
        .await?;

    assert_eq!(names(breakglass), ["hotfix"]);
    assert_eq!(names(without), ["api"]);
    assert_eq!(names(both), ["api", "hotfix"]);
    assert_eq!((bad.code, bad.reason.as_str()), (400, "BadRequest"));
    let metadata_names: Vec<_> = metadata_only
        .items
        .iter()
        .filter_map(|o| o.metadata.name.as_deref())
        .collect();
    assert_eq!(metadata_names, ["hotfix"]);
    Ok(())
}

#[tokio::test]
async fn replace_with_stale_resource_version_is_a_conflict() -> TestResult {
    let sim = Sim::start().await?;
    let api = sim.writer().await?;
    let first = apply(
        &api,
        &deployment("api", &format!("{ATTESTED}api:1"), false)?,
    )
    .await?;
    apply(
        &api,
        &deployment("api", &format!("{ATTESTED}api:2"), false)?,
    )
    .await?;

    let mut stale = first.clone();
    stale.data["spec"]["replicas"] = json!(5);
    let status = status_of(api.replace("api", &PostParams::default(), &stale).await)?;
    let current = api.get("api").await?;
    let mut fresh = current.clone();
    fresh.data["spec"]["replicas"] = json!(3);
    let replaced = api.replace("api", &PostParams::default(), &fresh).await?;

    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert_eq!(current.data["spec"]["replicas"], json!(1));
    assert_eq!(replaced.data["spec"]["replicas"], json!(3));
    assert_ne!(
        replaced.metadata.resource_version,
        current.metadata.resource_version
    );
    assert_eq!(sim.cluster.write_count(&deployment_key("api")).replaces, 1);
    Ok(())
}

#[tokio::test]
async fn delete_with_mismatched_precondition_is_a_conflict_and_delete_removes_the_object()
-> TestResult {
    let sim = Sim::start().await?;
    let api = sim.writer().await?;
    let created = apply(
        &api,
        &deployment("api", &format!("{ATTESTED}api:1"), false)?,
    )
    .await?;
    let stale = DeleteParams::default().preconditions(Preconditions {
        resource_version: Some("999999".to_owned()),
        uid: None,
    });
    let exact = DeleteParams::default().preconditions(Preconditions {
        resource_version: created.metadata.resource_version.clone(),
        uid: created.metadata.uid.clone(),
    });

    let refused = status_of(api.delete("api", &stale).await)?;
    let still_there = sim.cluster.object(&deployment_key("api")).is_some();
    let deleted = api.delete("api", &exact).await?;
    let gone = status_of(api.get("api").await)?;

    assert_eq!((refused.code, refused.reason.as_str()), (409, "Conflict"));
    assert!(still_there);
    let deleted = deleted
        .left()
        .ok_or("delete should return the deleted object")?;
    assert_eq!(deleted.metadata.uid, created.metadata.uid);
    assert_eq!((gone.code, gone.reason.as_str()), (404, "NotFound"));
    let counts = sim.cluster.write_count(&deployment_key("api"));
    assert_eq!((counts.applies, counts.deletes, counts.total()), (1, 1, 2));
    Ok(())
}

#[tokio::test]
async fn anonymous_write_is_unauthorized_and_wrong_token_is_forbidden() -> TestResult {
    let sim = Sim::start().await?;
    let object = deployment("api", &format!("{ATTESTED}api:1"), false)?;

    let anonymous = sim.deployments(None).await?;
    let unauthorized = status_of(apply(&anonymous, &object).await)?;
    let forbidden = status_of(apply(&sim.deployments(Some("wrong")).await?, &object).await)?;
    let anonymous_read = anonymous.list(&ListParams::default()).await?;

    assert_eq!(
        (unauthorized.code, unauthorized.reason.as_str()),
        (401, "Unauthorized")
    );
    assert_eq!(
        (forbidden.code, forbidden.reason.as_str()),
        (403, "Forbidden")
    );
    assert!(anonymous_read.items.is_empty());
    assert!(sim.cluster.object(&deployment_key("api")).is_none());
    Ok(())
}

#[tokio::test]
async fn apply_into_an_unknown_namespace_is_not_found() -> TestResult {
    let sim = Sim::start().await?;
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment"));
    let api: Api<DynamicObject> =
        Api::namespaced_with(sim.client(Some(TOKEN)).await?, "staging", &resource);
    let mut object = deployment("api", &format!("{ATTESTED}api:1"), false)?;
    object.metadata.namespace = Some("staging".to_owned());

    let status = status_of(apply(&api, &object).await)?;

    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
    assert!(
        status.message.contains("namespaces \"staging\" not found"),
        "{}",
        status.message
    );
    Ok(())
}

#[tokio::test]
async fn reapplying_without_the_breakglass_label_removes_it() -> TestResult {
    let sim = Sim::start().await?;
    let api = sim.writer().await?;
    apply(&api, &deployment("api", UNATTESTED, true)?).await?;

    let restored = apply(
        &api,
        &deployment("api", &format!("{ATTESTED}api:1"), false)?,
    )
    .await?;

    assert_eq!(restored.labels().get(BREAKGLASS), None);
    assert_eq!(
        restored.labels().get("app").map(String::as_str),
        Some("api")
    );
    let template_labels = &restored.data["spec"]["template"]["metadata"]["labels"];
    assert_eq!(template_labels.get(BREAKGLASS), None);
    assert_eq!(restored.metadata.generation, Some(2));
    Ok(())
}

#[tokio::test]
async fn injected_failure_answers_every_request_until_cleared() -> TestResult {
    let sim = Sim::start().await?;
    let api = sim.writer().await?;

    sim.cluster.set_failure(Some(503));
    let failed = status_of(api.list(&ListParams::default()).await)?;
    let failed_write =
        status_of(apply(&api, &deployment("api", &format!("{ATTESTED}a:1"), false)?).await)?;
    sim.cluster.set_failure(None);
    let recovered = api.list(&ListParams::default()).await;

    assert_eq!(
        (failed.code, failed.reason.as_str()),
        (503, "ServiceUnavailable")
    );
    assert_eq!(failed_write.code, 503);
    assert!(recovered.is_ok());
    assert!(sim.cluster.object(&deployment_key("api")).is_none());
    Ok(())
}

#[tokio::test]
async fn default_kube_client_retries_through_a_transient_503() -> TestResult {
    let sim = Sim::start().await?;
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment"));
    let client = Client::try_from(sim.config(None).await?)?;
    let api: Api<DynamicObject> = Api::namespaced_with(client, "prod", &resource);

    sim.cluster.set_failure(Some(503));
    let pending = tokio::spawn(async move { api.list(&ListParams::default()).await });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let still_waiting = !pending.is_finished();
    sim.cluster.set_failure(None);
    let listed = pending.await?;

    assert!(
        still_waiting,
        "kube-rs should still be retrying while the server fails"
    );
    assert!(listed.is_ok(), "{listed:?}");
    Ok(())
}

#[tokio::test]
async fn writes_endpoint_reports_counts_over_http() -> TestResult {
    let sim = Sim::start().await?;
    let api = sim.writer().await?;
    let image = format!("{ATTESTED}api:1");
    apply(&api, &deployment("api", &image, false)?).await?;
    apply(&api, &deployment("api", &image, false)?).await?;

    let records: Vec<WriteRecord> = reqwest::get(format!("{}/sim/v1/writes", sim.url))
        .await?
        .json()
        .await?;

    assert_eq!(records.len(), 1);
    assert_eq!(records[0].key, deployment_key("api"));
    assert_eq!(records[0].count.applies, 2);
    Ok(())
}
