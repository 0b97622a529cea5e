//! The same rule for Cloud Run: a service carrying a breakglass justification (or the v1
//! annotation) is the broker's only when its UID was recorded at apply by a live request and
//! the broker's request annotation names that live request.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{Known, Reason, Suspect};
use crate::domain::stamp::REQUEST_ID;

/// The v1 annotation that carries a Cloud Run breakglass justification.
pub const RUN_BREAKGLASS_ANNOTATION: &str = "run.googleapis.com/binary-authorization-breakglass";

/// The justification a Cloud Run service (Admin API v2 shape) carries, in either form.
fn run_justification(service: &Value) -> Option<&str> {
    service["binaryAuthorization"]["breakglassJustification"]
        .as_str()
        .or_else(|| service["annotations"][RUN_BREAKGLASS_ANNOTATION].as_str())
        .filter(|j| !j.trim().is_empty())
}

/// The request ids the broker's annotation names on these Cloud Run services.
pub fn stamped_services(services: &[Value]) -> BTreeSet<String> {
    services
        .iter()
        .filter(|s| run_justification(s).is_some())
        .filter_map(|s| s["annotations"][REQUEST_ID].as_str().map(str::to_owned))
        .collect()
}

/// Every Cloud Run service (Admin API v2 shape) that carries a breakglass justification the
/// broker did not set: it is the broker's only when its UID was recorded at apply by a live
/// request and the broker's request annotation names that live request.
pub fn unbrokered_services(services: &[Value], known: &Known) -> Vec<Suspect> {
    let mut found = Vec::new();
    for service in services {
        if run_justification(service).is_none() {
            continue;
        }
        let uid = service["uid"].as_str().unwrap_or_default();
        let stamp = service["annotations"][REQUEST_ID].as_str();
        let live_stamp = stamp.is_some_and(|id| known.requests.get(id) == Some(&true));
        let approved = service["template"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["image"].as_str())
            .all(|image| {
                known
                    .approved_images
                    .get(uid)
                    .is_some_and(|a| a.contains(image))
            });
        if known.live_uids.contains(uid) && live_stamp && approved {
            continue;
        }
        if !known.live_uids.contains(uid) && stamp.is_some_and(|id| known.applying.contains(id)) {
            continue;
        }
        let mut reasons = BTreeSet::new();
        if service["binaryAuthorization"]["breakglassJustification"]
            .as_str()
            .is_none_or(|j| j.trim().is_empty())
        {
            reasons.insert(Reason::LegacyAnnotation);
        }
        if let Some(id) = stamp {
            let request_id = id.to_owned();
            reasons.insert(match known.requests.get(id) {
                None => Reason::MadeUpRequest { request_id },
                Some(false) => Reason::EndedRequest { request_id },
                Some(true) => Reason::CopiedStamp { request_id },
            });
        }
        if known.ended_uids.contains(uid) {
            reasons.insert(Reason::LeftAfterEnd);
            reasons.retain(|r| !matches!(r, Reason::EndedRequest { .. }));
        }
        if known.live_uids.contains(uid) && live_stamp && !approved {
            reasons.insert(Reason::ImagesNotApproved {
                images: service["template"]["containers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c["image"].as_str())
                    .filter(|i| {
                        !known
                            .approved_images
                            .get(uid)
                            .is_some_and(|a| a.contains(*i))
                    })
                    .map(str::to_owned)
                    .collect(),
            });
            reasons.retain(|r| !matches!(r, Reason::CopiedStamp { .. }));
        }
        if reasons.is_empty() {
            reasons.insert(Reason::NotByTheBroker);
        }
        let full_name = service["name"].as_str().unwrap_or_default();
        let mut images: Vec<String> = Vec::new();
        for image in service["template"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["image"].as_str())
        {
            if !images.iter().any(|i| i == image) {
                images.push(image.to_owned());
            }
        }
        let writers: BTreeSet<String> = ["creator", "lastModifier"]
            .iter()
            .filter_map(|k| service[*k].as_str().map(str::to_owned))
            .collect();
        found.push(Suspect {
            api_version: crate::domain::cloud_run::API_VERSION.to_owned(),
            kind: crate::domain::cloud_run::KIND.to_owned(),
            // Services have no namespace; the project and region stand in its place.
            namespace: full_name
                .rsplit_once("/services/")
                .map(|(parent, _)| parent.to_owned())
                .unwrap_or_default(),
            name: full_name.rsplit('/').next().unwrap_or_default().to_owned(),
            uid: uid.to_owned(),
            resource_version: service["etag"].as_str().unwrap_or_default().to_owned(),
            reasons: reasons.into_iter().collect(),
            images,
            writers: writers.into_iter().collect(),
            members: Vec::new(),
        });
    }
    found
}

/// Whether the detector may take the breakglass off this service: never one whose UID a
/// live broker request applied (or one a request's end still needs attention on), and only at
/// the etag it was seen at.
pub fn removable_service(suspect: &Suspect, known: &Known) -> bool {
    let brokers =
        known.live_uids.contains(&suspect.uid) || known.attention_uids.contains(&suspect.uid);
    suspect.kind == crate::domain::cloud_run::KIND
        && !brokers
        && !suspect.resource_version.is_empty()
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use serde_json::json;

    use super::*;

    fn service(uid: &str, justification: Option<&str>, request: Option<&str>) -> Value {
        let mut service = json!({
            "name": format!("projects/p/locations/r/services/s-{uid}"), "uid": uid, "etag": "\"e1\"",
            "creator": "owner@p.iam", "lastModifier": "mallory@example.com",
            "annotations": {},
            "template": { "containers": [{ "image": "evil@sha256:2" }] },
        });
        if let Some(j) = justification {
            service["binaryAuthorization"] = json!({ "breakglassJustification": j });
        }
        if let Some(id) = request {
            service["annotations"][REQUEST_ID] = json!(id);
        }
        service
    }

    #[test]
    fn a_cloud_run_justification_the_broker_did_not_set_is_a_finding_and_its_own_is_not() {
        let known = Known {
            live_uids: HashSet::from(["ours".to_owned()]),
            requests: HashMap::from([("r1".to_owned(), true), ("old".to_owned(), false)]),
            approved_images: HashMap::from([(
                "ours".to_owned(),
                HashSet::from(["evil@sha256:2".to_owned()]),
            )]),
            ..Known::default()
        };
        let mut hijacked = service("ours", Some("INC-1: breakglass request r1"), Some("r1"));
        hijacked["template"]["containers"][0]["image"] = json!("miner@sha256:3");
        let found = unbrokered_services(&[hijacked], &known);
        assert_eq!(
            found[0].reasons,
            vec![Reason::ImagesNotApproved {
                images: vec!["miner@sha256:3".into()]
            }],
            "the broker's own service, serving images nobody approved"
        );
        let services = vec![
            service("ours", Some("INC-1: breakglass request r1"), Some("r1")),
            service("plain", None, None),
            service("theirs", Some("trust me"), None),
            service("copied", Some("INC-1: breakglass request r1"), Some("r1")),
            service("stale", Some("INC-0"), Some("old")),
        ];
        let found = unbrokered_services(&services, &known);
        let names: Vec<&str> = found.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["s-theirs", "s-copied", "s-stale"]);
        assert_eq!(found[0].reasons, vec![Reason::NotByTheBroker]);
        assert_eq!(found[0].writers, vec!["mallory@example.com", "owner@p.iam"]);
        assert_eq!(found[0].namespace, "projects/p/locations/r");
        assert_eq!(found[0].images, vec!["evil@sha256:2"]);
        assert_eq!(
            found[1].reasons,
            vec![Reason::CopiedStamp {
                request_id: "r1".into()
            }]
        );
        assert_eq!(
            found[2].reasons,
            vec![Reason::EndedRequest {
                request_id: "old".into()
            }]
        );
        assert_eq!(
            stamped_services(&services).into_iter().collect::<Vec<_>>(),
            vec!["old", "r1"]
        );
        let mut v1 = service("v1", None, None);
        v1["annotations"][RUN_BREAKGLASS_ANNOTATION] = json!("because");
        let found = unbrokered_services(&[v1], &known);
        assert_eq!(found[0].reasons, vec![Reason::LegacyAnnotation]);
    }
}
