//! The keys of a `kind = "cloud-run"` target, each problem a sentence an operator can act on.

use super::{Credentials, TargetConfig};

pub(super) fn problems(target: &TargetConfig, problem: &mut impl FnMut(String)) {
    if target.credentials != Credentials::Google {
        problem(
            "kind \"cloud-run\" needs credentials = \"google\" (the broker's own Google identity)"
                .into(),
        );
    }
    for (key, value) in [
        ("kubeconfig", target.kubeconfig.is_some()),
        ("context", target.context.is_some()),
    ] {
        if value {
            problem(format!(
                "{key} is for Kubernetes targets; a Cloud Run target has none"
            ));
        }
    }
    if !target.namespaces.is_empty() {
        problem("namespaces: Cloud Run services have no namespace; remove the key".into());
    }
    match target.project.as_deref() {
        None => problem("project is missing: name the Google Cloud project of the services".into()),
        Some(project) if !is_project_id(project) => problem(format!(
            "project {project:?} is not a project ID (6 to 30 lower-case letters, digits and '-', starting with a letter)"
        )),
        Some(_) => {}
    }
    match target.region.as_deref() {
        None => {
            problem("region is missing: name the services' region, e.g. \"us-central1\"".into())
        }
        Some(region) if !is_region(region) => problem(format!(
            "region {region:?} is not a region name such as \"us-central1\""
        )),
        Some(_) => {}
    }
    if target.services.is_empty() {
        problem("services is empty: list the Cloud Run services breakglass may change".into());
    }
    for (i, service) in target.services.iter().enumerate() {
        if !is_service_id(service) {
            problem(format!(
                "services: {service:?} is not a Cloud Run service name (up to 49 lower-case letters, digits and '-', starting with a letter)"
            ));
        } else if target.services[..i].contains(service) {
            problem(format!("services: {service:?} is listed twice"));
        }
    }
    if target.service_accounts.is_empty() {
        problem(
            "service_accounts is empty: list the runtime service accounts (emails) a breakglass revision may run as"
                .into(),
        );
    }
    for account in &target.service_accounts {
        if !is_account_email(account) {
            problem(format!(
                "service_accounts: {account:?} is not a service account email such as \"checkout@my-project.iam.gserviceaccount.com\""
            ));
        }
    }
    if let Some(api) = &target.run_api
        && !matches!(api.scheme(), "https" | "http")
    {
        problem(format!("run_api {api} must be an http(s) URL"));
    }
}

fn is_project_id(id: &str) -> bool {
    (6..=30).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && !id.ends_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn is_region(region: &str) -> bool {
    let mut parts = region.split('-');
    parts.clone().count() == 2
        && parts
            .next()
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts.next().is_some_and(|p| {
            p.len() > 1
                && p.starts_with(|c: char| c.is_ascii_lowercase())
                && p.ends_with(|c: char| c.is_ascii_digit())
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

pub(crate) fn is_service_id(id: &str) -> bool {
    (1..=49).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && !id.ends_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn is_account_email(account: &str) -> bool {
    match account.split_once('@') {
        Some((user, domain)) => {
            !user.is_empty()
                && domain.contains('.')
                && account
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"@.-_".contains(&b))
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_told_apart_by_shape() {
        assert!(is_project_id("dev-project") && !is_project_id("Dev") && !is_project_id("p"));
        assert!(is_region("us-central1") && is_region("europe-west4"));
        assert!(!is_region("us") && !is_region("us-central") && !is_region("US-central1"));
        assert!(is_service_id("checkout") && !is_service_id("-x") && !is_service_id("A"));
        assert!(is_account_email("a@p.iam.gserviceaccount.com") && !is_account_email("default"));
    }
}
