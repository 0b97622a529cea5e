//! Server-side printing: `meta.k8s.io/v1` `Table` and `PartialObjectMetadata`.
//!
//! kubectl's default output asks the server for a Table and prints its cells
//! verbatim, taking names and namespaces from each row's embedded object; kube-rs's
//! metadata calls ask for `PartialObjectMetadata`. Both are answered here.

use std::time::{Duration, SystemTime};

use chrono::DateTime;
use serde_json::{Value, json};

use super::resources::{PodSpecAt, ResourceType};

/// What the client asked the server to render, from its `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rendering {
    Object,
    Table,
    Metadata,
}

impl Rendering {
    /// The first alternative in `Accept` the simulator can produce; `None` if none is.
    pub(crate) fn negotiate(accept: Option<&str>) -> Option<Self> {
        let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
            return Some(Self::Object);
        };
        accept.split(',').find_map(|alternative| {
            let mut parts = alternative.split(';').map(str::trim);
            let media = parts.next().unwrap_or("");
            let params: Vec<&str> = parts.collect();
            let as_ = params.iter().find_map(|p| p.strip_prefix("as="));
            match (media, as_) {
                ("application/json" | "*/*" | "application/*", None) => Some(Self::Object),
                ("application/json", Some("Table")) => Some(Self::Table),
                (
                    "application/json",
                    Some("PartialObjectMetadata" | "PartialObjectMetadataList"),
                ) => Some(Self::Metadata),
                _ => None,
            }
        })
    }
}

/// Which object a Table row embeds (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub(crate) fn parse(value: Option<&str>) -> Result<Self, String> {
        match value {
            None | Some("" | "Metadata") => Ok(Self::Metadata),
            Some("None") => Ok(Self::None),
            Some("Object") => Ok(Self::Object),
            Some(other) => Err(format!("includeObject: unsupported value {other:?}")),
        }
    }
}

/// An object reduced to `PartialObjectMetadata`.
pub(crate) fn partial_metadata(object: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// A list reduced to `PartialObjectMetadataList`.
pub(crate) fn partial_metadata_list(items: &[Value], resource_version: &str) -> Value {
    json!({
        "kind": "PartialObjectMetadataList",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": { "resourceVersion": resource_version },
        "items": items.iter().map(partial_metadata).collect::<Vec<_>>(),
    })
}

/// kubectl's `HumanDuration`, so ages read as they do against a real cluster.
pub(crate) fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{days}d"),
            h => format!("{days}d{h}h"),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        return match days % 365 {
            0 => format!("{years}y"),
            d => format!("{years}y{d}d"),
        };
    }
    format!("{years}y")
}

fn age(object: &Value, now: SystemTime) -> String {
    let created = object["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(SystemTime::from);
    match created {
        Some(created) => human_duration(now.duration_since(created).unwrap_or_default()),
        None => "<unknown>".to_owned(),
    }
}

fn pod_spec(res: &ResourceType, object: &Value) -> Option<Value> {
    let pointer = match res.pod_spec {
        PodSpecAt::Nowhere => return None,
        PodSpecAt::Pod => "/spec",
        PodSpecAt::Template => "/spec/template/spec",
        PodSpecAt::CronJob => "/spec/jobTemplate/spec/template/spec",
    };
    Some(object.pointer(pointer).cloned().unwrap_or(Value::Null))
}

fn containers_and_images(spec: &Value) -> (String, String) {
    let containers = spec["containers"].as_array().cloned().unwrap_or_default();
    let field = |key: &str| {
        containers
            .iter()
            .filter_map(|c| c[key].as_str())
            .collect::<Vec<_>>()
            .join(",")
    };
    (field("name"), field("image"))
}

fn column(name: &str, format: &str, priority: u8, description: &str) -> Value {
    json!({ "name": name, "type": "string", "format": format, "description": description, "priority": priority })
}

/// Renders objects as the Table kubectl prints: NAME, AGE, and in `-o wide` the containers and images.
pub(crate) fn table(
    res: &ResourceType,
    objects: &[Value],
    resource_version: &str,
    include: IncludeObject,
    now: SystemTime,
) -> Value {
    let with_pods = res.pod_spec != PodSpecAt::Nowhere;
    let mut columns = vec![column("Name", "name", 0, "Name of the object")];
    columns.push(column("Age", "", 0, "Time since the object was created"));
    if with_pods {
        columns.push(column("Containers", "", 1, "Names of the containers"));
        columns.push(column("Images", "", 1, "Images of the containers"));
    }
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let mut cells = vec![object["metadata"]["name"].clone(), json!(age(object, now))];
            if let Some(spec) = pod_spec(res, object) {
                let (containers, images) = containers_and_images(&spec);
                cells.extend([json!(containers), json!(images)]);
            }
            let mut row = json!({ "cells": cells });
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => row["object"] = partial_metadata(object),
                IncludeObject::Object => row["object"] = object.clone(),
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": { "resourceVersion": resource_version },
        "columnDefinitions": columns,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_table_accept_header_selects_a_table() {
        let accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(Rendering::negotiate(Some(accept)), Some(Rendering::Table));
        assert_eq!(
            Rendering::negotiate(Some("application/json")),
            Some(Rendering::Object)
        );
        assert_eq!(Rendering::negotiate(None), Some(Rendering::Object));
        assert_eq!(
            Rendering::negotiate(Some("application/vnd.kubernetes.protobuf")),
            None
        );
    }

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(human_duration(Duration::from_secs(5)), "5s");
        assert_eq!(human_duration(Duration::from_secs(150)), "2m30s");
        assert_eq!(human_duration(Duration::from_secs(3600)), "60m");
        assert_eq!(human_duration(Duration::from_secs(5 * 3600 + 60)), "5h1m");
        assert_eq!(human_duration(Duration::from_secs(3 * 86400)), "3d");
    }
}
