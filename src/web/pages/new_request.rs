//! The new-request form: fields from the configuration, a preview, and every problem shown
//! beside the field it is about. A request gives a manifest, or a workload of the target
//! (looked up first, to show what each container runs now) and new images for some of its
//! containers.

use std::collections::BTreeMap;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::view;
use super::{CsrfForm, Nav, PageError, SignedIn, see_other};
use crate::domain::approval::describe;
use crate::domain::policy::Finding;
use crate::lifecycle::{LifecycleError, RequestForm, Workload, WorkloadRef};
use crate::web::AppState;
use crate::web::error::AppError;

/// The new-request form, its values, and what is wrong with them, field by field.
#[derive(Template, WebTemplate)]
#[template(path = "requests/new.html")]
pub struct NewPage {
    nav: Nav,
    targets: Vec<TargetChoice>,
    form: FormValues,
    errors: FieldErrors,
    preview: Option<Preview>,
    lookup: Option<Lookup>,
}

/// A workload as it runs now, with the new image asked for each container.
pub struct Lookup {
    pub label: String,
    pub containers: Vec<ContainerRow>,
}

pub struct ContainerRow {
    pub key: String,
    pub init: bool,
    pub current: String,
    pub new: String,
}

/// Form fields named `image.CONTAINER` carry the new image of that container.
const IMAGE_FIELD: &str = "image.";

pub struct TargetChoice {
    pub name: String,
    pub namespaces: Vec<String>,
    pub max_minutes: u64,
    pub rule: String,
}

#[derive(Default, Deserialize)]
pub struct FormValues {
    #[serde(default)]
    pub target: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub manifest: String,
    #[serde(default)]
    pub ticket: String,
    #[serde(default)]
    pub justification: String,
    #[serde(default)]
    pub duration_minutes: String,
    #[serde(default)]
    pub intent: String,
    #[serde(default)]
    pub workload_kind: String,
    #[serde(default)]
    pub workload_name: String,
    /// Everything else the form sent: the `image.CONTAINER` fields among it.
    #[serde(flatten)]
    pub rest: BTreeMap<String, String>,
}

impl FormValues {
    fn names_workload(&self) -> bool {
        !self.workload_kind.trim().is_empty() || !self.workload_name.trim().is_empty()
    }

    fn workload(&self) -> WorkloadRef {
        WorkloadRef {
            kind: self.workload_kind.trim().to_owned(),
            name: self.workload_name.trim().to_owned(),
        }
    }

    /// The new images given, by container; blank fields ask for no change.
    fn images(&self) -> BTreeMap<String, String> {
        self.rest
            .iter()
            .filter_map(|(field, image)| {
                let key = field.strip_prefix(IMAGE_FIELD)?;
                let image = image.trim();
                (!image.is_empty()).then(|| (key.to_owned(), image.to_owned()))
            })
            .collect()
    }

    fn new_image(&self, key: &str) -> String {
        self.rest
            .get(&format!("{IMAGE_FIELD}{key}"))
            .cloned()
            .unwrap_or_default()
    }
}

#[derive(Default)]
pub struct FieldErrors {
    pub target: Vec<String>,
    pub namespace: Vec<String>,
    pub manifest: Vec<String>,
    pub ticket: Vec<String>,
    pub justification: Vec<String>,
    pub duration_minutes: Vec<String>,
    pub workload: Vec<String>,
    pub images: Vec<String>,
    pub general: Vec<String>,
}

impl FieldErrors {
    fn any(&self) -> bool {
        ![
            &self.target,
            &self.namespace,
            &self.manifest,
            &self.ticket,
            &self.justification,
            &self.duration_minutes,
            &self.workload,
            &self.images,
            &self.general,
        ]
        .iter()
        .all(|e| e.is_empty())
    }

    /// Puts each finding beside the field it is about; manifest findings name their object.
    fn add(&mut self, finding: &Finding) {
        let slot = match (finding.object.is_empty(), finding.path.as_str()) {
            (true, "target") => &mut self.target,
            (true, "namespace") => &mut self.namespace,
            (true, "ticket") => &mut self.ticket,
            (true, "justification") => &mut self.justification,
            (true, "duration_minutes") => &mut self.duration_minutes,
            (true, "workload" | "workload.kind" | "workload.name") => &mut self.workload,
            (true, path) if path == "images" || path.starts_with("images.") => &mut self.images,
            _ => &mut self.manifest,
        };
        let plain = ["manifest", "workload.kind", "workload.name"];
        let text = if finding.object.is_empty()
            && !plain.contains(&finding.path.as_str())
            && !finding.path.starts_with("images.")
        {
            finding.message.clone()
        } else {
            finding.to_string()
        };
        slot.push(text);
    }
}

pub struct Preview {
    pub digest: String,
    pub rule: String,
    pub objects: Vec<String>,
}

fn choices(state: &AppState) -> Vec<TargetChoice> {
    state
        .lifecycle
        .targets
        .iter()
        .map(|t| TargetChoice {
            name: t.config.name.clone(),
            namespaces: t.config.namespaces.clone(),
            max_minutes: t.config.max_duration.as_secs() / 60,
            rule: describe(t.rules()),
        })
        .collect()
}

fn require_requester(state: &AppState, viewer: &SignedIn) -> Result<(), PageError> {
    if state.config.roles.may_file(&viewer.person) {
        Ok(())
    } else {
        Err(AppError::Forbidden(format!(
            "Filing breakglass requests needs membership in one of: {}.",
            state.config.roles.requesters.join(", ")
        ))
        .into())
    }
}

pub async fn new_form(
    State(state): State<AppState>,
    viewer: SignedIn,
) -> Result<NewPage, PageError> {
    require_requester(&state, &viewer)?;
    let targets = choices(&state);
    let form = FormValues {
        target: targets.first().map(|t| t.name.clone()).unwrap_or_default(),
        namespace: targets
            .first()
            .and_then(|t| t.namespaces.first().cloned())
            .unwrap_or_default(),
        duration_minutes: "60".into(),
        ..FormValues::default()
    };
    Ok(NewPage {
        nav: viewer.nav(&state),
        targets,
        form,
        errors: FieldErrors::default(),
        preview: None,
        lookup: None,
    })
}

/// Reads the workload the form names, for the look-up table; what stops it goes beside the
/// workload fields.
async fn look_up(
    state: &AppState,
    viewer: &SignedIn,
    form: &FormValues,
    errors: &mut FieldErrors,
) -> Result<Option<Lookup>, PageError> {
    match state
        .lifecycle
        .workload(
            &viewer.person,
            &form.target,
            &form.namespace,
            &form.workload(),
        )
        .await
    {
        Ok(Workload { object, containers }) => Ok(Some(Lookup {
            label: object.to_string(),
            containers: containers
                .into_iter()
                .map(|c| ContainerRow {
                    new: form.new_image(&c.key),
                    key: c.key,
                    init: c.init,
                    current: c.image,
                })
                .collect(),
        })),
        Err(LifecycleError::Refused(findings)) => {
            for finding in &findings {
                errors.add(finding);
            }
            Ok(None)
        }
        Err(LifecycleError::Unavailable(message)) => {
            errors.workload.push(message);
            Ok(None)
        }
        Err(other) => Err(AppError::from(other).into()),
    }
}

/// Files the request (post, redirect, get), or shows the form again with each problem beside
/// its field. `intent=preview` checks without filing.
pub async fn submit(
    State(state): State<AppState>,
    CsrfForm { viewer, form }: CsrfForm<FormValues>,
) -> Result<Response, PageError> {
    require_requester(&state, &viewer)?;
    let mut errors = FieldErrors::default();
    let lookup = if form.names_workload() {
        look_up(&state, &viewer, &form, &mut errors).await?
    } else {
        None
    };
    if form.intent == "lookup" {
        if !form.names_workload() {
            errors
                .workload
                .push("give the kind and name of the workload to look up".into());
        }
        let status = if errors.any() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::OK
        };
        let page = NewPage {
            nav: viewer.nav(&state),
            targets: choices(&state),
            form,
            errors,
            preview: None,
            lookup,
        };
        return Ok((status, page).into_response());
    }
    let minutes = match form.duration_minutes.trim().parse::<u64>() {
        Ok(m) => m,
        Err(_) => {
            errors
                .duration_minutes
                .push("enter a whole number of minutes".into());
            0
        }
    };
    let request = RequestForm {
        target: form.target.clone(),
        namespace: form.namespace.clone(),
        manifest: form.manifest.clone(),
        workload: form.names_workload().then(|| form.workload()),
        images: form.names_workload().then(|| form.images()),
        ticket: form.ticket.trim().to_owned(),
        justification: form.justification.clone(),
        duration_minutes: minutes,
    };
    let mut preview = None;
    if !errors.any() {
        let outcome = if form.intent == "preview" {
            state
                .lifecycle
                .preview(&viewer.person, &request)
                .await
                .map(|checked| {
                    preview = Some(Preview {
                        digest: checked.digest,
                        rule: checked.rule,
                        objects: checked
                            .objects
                            .iter()
                            .map(|o| view::yaml(&o.body))
                            .collect(),
                    });
                })
        } else {
            match state.lifecycle.file(&viewer.person, request).await {
                Ok(created) => return Ok(see_other(&format!("/requests/{}", created.id))),
                Err(e) => Err(e),
            }
        };
        match outcome {
            Ok(()) => {}
            Err(LifecycleError::Invalid(message)) => errors.general.push(message),
            Err(LifecycleError::Refused(findings)) => {
                for finding in &findings {
                    errors.add(finding);
                }
            }
            Err(LifecycleError::TooLarge(message)) => errors.manifest.push(message),
            Err(LifecycleError::Unavailable(message)) => errors.workload.push(message),
            Err(other) => return Err(AppError::from(other).into()),
        }
    }
    let status = if errors.any() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let page = NewPage {
        nav: viewer.nav(&state),
        targets: choices(&state),
        form,
        errors,
        preview,
        lookup,
    };
    Ok((status, page).into_response())
}
