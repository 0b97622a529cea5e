//! The dashboard, the new-request form and the request page.

use std::sync::Arc;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::look::{self, Look};
use super::view::{self, DiffLine, Line};
use super::{CsrfForm, Nav, PageError, SignedIn, see_other, urlencode};
use crate::clock::Millis;
use crate::domain::access::{awaits_decision_from, may_cancel, may_close, may_decide};
use crate::domain::approval::describe;
use crate::domain::person::Names;
use crate::domain::policy::images;
use crate::domain::stamp::stamped;
use crate::domain::timeline;
use crate::domain::{ApprovalTally, State as RequestState};
use crate::lifecycle::{Decision, ExtendForm, Lifecycle, stamp_of};
use crate::store::{Approval, AuditEvent, Named, Request, RequestFilter, RequestPage};
use crate::web::AppState;
use crate::web::error::AppError;

/// A request as a row in a list.
pub struct Row {
    pub id: String,
    pub ticket: String,
    pub target: String,
    pub namespace: String,
    pub requester: String,
    pub state: RequestState,
    pub state_class: &'static str,
    pub detail: String,
}

fn row(request: &Request, now: i64, names: &Names) -> Row {
    let detail = match (request.state, request.expires_at) {
        (RequestState::Active, Some(at)) => view::time_left(now, at),
        (RequestState::Pending, _) => format!("decide by {}", view::when(request.decide_by)),
        _ => view::when(request.created_at),
    };
    Row {
        id: request.id.clone(),
        ticket: request.ticket.clone(),
        target: request.target.clone(),
        namespace: request.namespace.clone(),
        requester: names.show(&request.requester_name, &request.requester_subject),
        state: request.state,
        state_class: view::state_class(request.state),
        detail,
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "dashboard.html")]
pub struct Dashboard {
    nav: Nav,
    /// Open alerts of the detector this person should see (auditors, targets' approvers).
    alerts: usize,
    attention: Vec<Row>,
    mine: Vec<Row>,
    to_decide: Vec<Row>,
    active: Vec<Row>,
    /// For auditors: notifications the broker gave up on in the last week.
    undelivered: Vec<(Option<String>, crate::web::notices::NoticeView)>,
    /// For auditors: endpoints a 410 disabled, until their configuration changes.
    disabled: Vec<crate::web::notices::DisabledView>,
}

pub async fn dashboard(
    State(state): State<AppState>,
    viewer: SignedIn,
) -> Result<Dashboard, PageError> {
    let now = state.clock.now();
    let person = &viewer.person;
    let mine = state
        .store
        .requests(&RequestFilter {
            requester_subject: Some(person.subject.clone()),
            limit: 50,
            ..Default::default()
        })
        .await?;
    let mine: Vec<&Request> = mine.iter().filter(|r| !r.state.is_final()).collect();
    let pending = state
        .store
        .requests(&RequestFilter {
            state: Some(RequestState::Pending),
            visible_to: state.lifecycle.visibility(person),
            limit: 200,
            ..Default::default()
        })
        .await?;
    let decided = state.store.pending_decided_by(&person.subject).await?;
    let lifecycle = &state.lifecycle;
    let to_decide: Vec<&Request> = pending
        .iter()
        .filter(|r| {
            awaits_decision_from(&lifecycle.access(r), person, decided.contains(&r.id), now)
        })
        .collect();
    let active = state
        .store
        .requests(&RequestFilter {
            state: Some(RequestState::Active),
            visible_to: state.lifecycle.visibility(person),
            limit: 200,
            ..Default::default()
        })
        .await?;
    let active: Vec<&Request> = active
        .iter()
        .filter(|r| lifecycle.may_see(person, r))
        .collect();
    // Breakglasses the broker could not end are an alarm for the target's approvers and for
    // auditors: first on their dashboard.
    let attention = state
        .store
        .requests(&RequestFilter {
            state: Some(RequestState::NeedsAttention),
            visible_to: lifecycle.visibility(person),
            limit: 200,
            ..Default::default()
        })
        .await?;
    let attention: Vec<&Request> = attention
        .iter()
        .filter(|r| state.config.roles.audits(person) || may_decide(&lifecycle.access(r), person))
        .collect();
    let lists = [&attention, &mine, &to_decide, &active];
    // The viewer is in view too: someone else with their name must not read as them.
    let names = Names::new(
        lists
            .iter()
            .flat_map(|list| list.iter())
            .map(|r| (r.requester_name.as_str(), r.requester_subject.as_str()))
            .chain(std::iter::once((
                person.name.as_str(),
                person.subject.as_str(),
            ))),
    );
    let rows = |list: &[&Request]| list.iter().map(|r| row(r, now, &names)).collect();
    let undelivered = if state.config.roles.audits(person) {
        let week_ago = now - 7 * 24 * 3600 * 1000;
        let messages = state.store.undelivered_since(week_ago, 50).await?;
        messages
            .iter()
            .map(|m| m.request_id.clone())
            .zip(crate::web::notices::views(&messages))
            .collect()
    } else {
        Vec::new()
    };
    let disabled = if state.config.roles.audits(person) {
        crate::web::notices::disabled(&state).await?
    } else {
        Vec::new()
    };
    let alerts = crate::web::alerts::open_for(&state, person).await?;
    Ok(Dashboard {
        undelivered,
        disabled,
        nav: viewer.nav(&state),
        alerts,
        attention: rows(&attention),
        mine: rows(&mine),
        to_decide: rows(&to_decide),
        active: rows(&active),
    })
}

/// One object on the request page: as it will be applied, and against what runs now.
pub struct ObjectView {
    pub label: String,
    pub images: Vec<ImageView>,
    pub admission: Option<String>,
    pub admitted: bool,
    pub lines: Vec<Line>,
    pub diff: Vec<DiffLine>,
    pub exists: bool,
}

pub struct ImageView {
    pub reference: String,
    pub digest: String,
}

pub struct DecisionView {
    pub approver: String,
    pub decision: String,
    pub comment: String,
    pub at: String,
}

pub struct EventView {
    pub at: String,
    /// The stored action name, kept beside the sentence for those who search by it.
    pub action: Arc<str>,
    pub sentence: Arc<str>,
}

#[derive(Template, WebTemplate)]
#[template(path = "requests/show.html")]
pub struct ShowPage {
    nav: Nav,
    /// The request, as the page's data holds it (not copied for each view).
    r: Shown,
    /// What the page shows of its data alone, made once per read of the data.
    made: Arc<Made>,
    state_class: &'static str,
    state_sentence: &'static str,
    time_left: Option<String>,
    duration: String,
    /// The objects, as HTML made from the template `requests/objects.html`.
    objects: Arc<String>,
    timeline: Vec<EventView>,
    /// Who was notified, and whether it reached them.
    notices: Vec<crate::web::notices::NoticeView>,
    can_decide: bool,
    can_cancel: bool,
    can_close: bool,
    /// The requester may ask for more time on a breakglass that runs.
    can_extend: bool,
    /// The requester may write the review of a breakglass that ended.
    can_review: bool,
    viewer_subject: String,
    refresh: bool,
    /// How old the last look at the cluster is, if there was one.
    look_age: Option<String>,
    /// Whether a look at the cluster still matters (people still decide).
    can_look: bool,
    /// A decision sent through sign-in again, to be sent once more: which form, and its comment.
    resume: Option<Resume>,
}

/// What the request page shows that depends on its data alone (not on who looks, nor when):
/// made at the first view of the data and kept with it ([`RequestPage::derived`]), so that
/// the views the cache serves do not make it again.
struct Made {
    /// The objects as HTML (stamped, marked, compared with the last look), when the data
    /// holds a look; they are most of the page.
    objects: Option<Arc<String>>,
    rule: String,
    tally: ApprovalTally,
    decisions: Vec<DecisionView>,
    /// Oldest first.
    events: Vec<MadeEvent>,
    /// Who filed it, as named on this page.
    requester: String,
    created: String,
    decide_by: String,
    /// When the review was written.
    reviewed: Option<String>,
}

struct MadeEvent {
    at: Millis,
    action: Arc<str>,
    sentence: Arc<str>,
}

/// The request of a page's data, read through it.
struct Shown(Arc<RequestPage>);

impl std::ops::Deref for Shown {
    type Target = Request;
    fn deref(&self) -> &Request {
        &self.0.request
    }
}

/// A decision form as it was before sign-in sent it through the provider again.
#[derive(Deserialize)]
pub struct Resume {
    #[serde(default)]
    resume: String,
    #[serde(default)]
    comment: String,
}

impl Resume {
    /// The comment for the form `which` ("decide" or "close"), when it is the one resumed.
    pub fn comment_for(&self, which: &str) -> &str {
        let form = match self.resume.as_str() {
            "approve" | "reject" => "decide",
            other => other,
        };
        if form == which { &self.comment } else { "" }
    }
}

pub async fn show(
    State(state): State<AppState>,
    viewer: SignedIn,
    Path(id): Path<String>,
    Query(resume): Query<Resume>,
) -> Result<ShowPage, PageError> {
    let person = &viewer.person;
    let lifecycle = &state.lifecycle;
    let page = lifecycle
        .load_visible_page(person, &id, 200)
        .await
        .map_err(AppError::from)?;
    let made = made_of(lifecycle, &page)?;
    let RequestPage {
        request,
        approvals,
        look: looked,
        messages,
        ..
    } = &*page;
    let now = state.clock.now();
    let decided = approvals
        .iter()
        .any(|a| a.approver_subject == person.subject);
    let access = lifecycle.access(request);
    let can_decide = awaits_decision_from(&access, person, decided, now);
    let can_cancel = request.state == RequestState::Pending && may_cancel(&access, person);
    let can_close = matches!(
        request.state,
        RequestState::Active | RequestState::NeedsAttention
    ) && request.end_requested.is_none()
        && may_close(&access, person);
    let can_extend = request.state == RequestState::Active
        && request.end_requested.is_none()
        && request.extends.is_none()
        && request.requester_subject == person.subject;
    let can_review = matches!(request.state, RequestState::Expired | RequestState::Closed)
        && request.review.is_none()
        && request.requester_subject == person.subject;
    let (objects, look_age) = match (looked, &made.objects) {
        (Some((taken_at, _)), Some(objects)) => (objects.clone(), Some(look::age(now, *taken_at))),
        _ => {
            let looked = look::first(&state, request).await?;
            (
                Arc::new(render_objects(&object_views(
                    request,
                    approvals,
                    looked.as_ref(),
                ))?),
                looked.as_ref().map(|l| look::age(now, l.taken_at)),
            )
        }
    };
    let can_look = look::undecided(request);
    Ok(ShowPage {
        nav: viewer.nav(&state),
        state_class: view::state_class(request.state),
        state_sentence: view::state_sentence(request.state),
        time_left: match request.state {
            RequestState::Active => request.expires_at.map(|at| view::time_left(now, at)),
            RequestState::Pending => Some(format!(
                "{} to decide",
                view::time_left(now, request.decide_by)
            )),
            _ => None,
        },
        duration: view::duration(request.duration_seconds / 60),
        timeline: made
            .events
            .iter()
            .map(|e| EventView {
                at: view::when_ago(now, e.at),
                action: e.action.clone(),
                sentence: e.sentence.clone(),
            })
            .collect(),
        made: made.clone(),
        objects,
        notices: crate::web::notices::views(messages),
        can_decide,
        can_cancel,
        can_close,
        can_extend,
        can_review,
        viewer_subject: person.subject.clone(),
        refresh: request.state == RequestState::Approved,
        look_age,
        can_look,
        resume: (!resume.resume.is_empty()).then_some(resume),
        r: Shown(page.clone()),
    })
}

pub(super) fn event_view(e: &AuditEvent, names: &Names, now: Millis) -> EventView {
    EventView {
        at: view::when_ago(now, e.at),
        action: e.action.as_str().into(),
        sentence: timeline::sentence(&e.action, &names.show(&e.actor, e.subject()), &e.detail)
            .into(),
    }
}

/// What the page makes of its data alone ([`Made`]), made at the first view of the data.
fn made_of(lifecycle: &Lifecycle, page: &RequestPage) -> Result<Arc<Made>, PageError> {
    page.derived.get_or_make(|| {
        let request = &page.request;
        let objects = match &page.look {
            Some(looked) => Some(Arc::new(render_objects(&object_views(
                request,
                &page.approvals,
                Some(&look::parse(looked)),
            ))?)),
            None => None,
        };
        let names = Names::new(
            std::iter::once((
                request.requester_name.as_str(),
                request.requester_subject.as_str(),
            ))
            .chain(
                page.approvals
                    .iter()
                    .map(|a| (a.approver_name.as_str(), a.approver_subject.as_str())),
            )
            .chain(page.events.iter().map(|e| (e.actor.as_str(), e.subject()))),
        );
        Ok(Made {
            objects,
            rule: describe(lifecycle.targets.rules(&request.target).unwrap_or_default()),
            tally: lifecycle.tally_of(request, &page.approvals),
            decisions: page
                .approvals
                .iter()
                .map(|a| DecisionView {
                    approver: names.show(&a.approver_name, &a.approver_subject),
                    decision: a.decision.clone(),
                    comment: a.comment.clone(),
                    at: view::when(a.at),
                })
                .collect(),
            events: page
                .events
                .iter()
                .rev()
                .map(|e| MadeEvent {
                    at: e.at,
                    action: e.action.as_str().into(),
                    sentence: timeline::sentence(
                        &e.action,
                        &names.show(&e.actor, e.subject()),
                        &e.detail,
                    )
                    .into(),
                })
                .collect(),
            requester: names.show(&request.requester_name, &request.requester_subject),
            created: view::when(request.created_at),
            decide_by: view::when(request.decide_by),
            reviewed: request.reviewed_at.map(view::when),
        })
    })
}

#[derive(Template)]
#[template(path = "requests/objects.html")]
struct ObjectsPart<'a> {
    objects: &'a [ObjectView],
}

fn render_objects(objects: &[ObjectView]) -> Result<String, PageError> {
    ObjectsPart { objects }
        .render()
        .map_err(|e| PageError(AppError::Internal(anyhow::Error::new(e))))
}

/// What each object will look like once stamped and, from the last look at the cluster
/// ([`look`]), whether it would admit it without breakglass and how it differs from what runs
/// there. Nothing here asks the cluster.
fn object_views(
    request: &Request,
    approvals: &[Approval],
    looked: Option<&Look>,
) -> Vec<ObjectView> {
    let named = Named::of(request, approvals);
    let expires = request
        .expires_at
        .filter(|_| request.applied_at.is_some())
        .map(crate::clock::rfc3339)
        .unwrap_or_else(|| "(set when applied)".into());
    let stamp = stamp_of(request, &named, &expires);
    let shown = look::undecided(request);
    let mut views = Vec::new();
    for (position, object) in request.objects().unwrap_or_default().iter().enumerate() {
        let applied = stamped(object, &stamp);
        let found = looked
            .filter(|_| shown)
            .and_then(|l| l.objects.get(position))
            .cloned()
            .unwrap_or_default();
        let diff = found
            .live
            .as_deref()
            .map(|live| view::diff(live, &view::yaml(&applied)))
            .unwrap_or_default();
        views.push(ObjectView {
            label: object.label(),
            images: images(object)
                .into_iter()
                .map(|reference| ImageView {
                    digest: crate::domain::policy::image_digest(&reference)
                        .unwrap_or("not pinned")
                        .to_owned(),
                    reference,
                })
                .collect(),
            admission: found.admission,
            admitted: found.admitted,
            lines: view::marked_lines(&applied, &object.kind),
            exists: found.live.is_some(),
            diff,
        });
    }
    views
}

#[derive(Deserialize)]
pub struct DecisionForm {
    #[serde(default)]
    digest: String,
    #[serde(default)]
    comment: String,
}

/// A decision from the browser counts only on a recent sign-in (`[oidc] decision_max_age`).
/// On an older one this is where the browser goes instead: through sign-in again, asking the
/// provider to authenticate the person afresh, and back to the request with the form as it
/// was, to send once more with the groups the provider gives now.
fn sign_in_again(
    state: &AppState,
    f: &CsrfForm<DecisionForm>,
    id: &str,
    form: &str,
) -> Option<Response> {
    let max_age = i64::try_from(state.config.oidc.decision_max_age.as_millis()).unwrap_or(i64::MAX);
    if state.clock.now() - f.viewer.signed_in_at <= max_age {
        return None;
    }
    let mut back = format!(
        "/requests/{}?resume={form}&comment={}",
        urlencode(id),
        urlencode(&f.form.comment)
    );
    // A comment too long to travel through sign-in is typed again; the form still returns.
    if back.len() > super::MAX_RETURN_PATH {
        back = format!("/requests/{}?resume={form}", urlencode(id));
    }
    Some(see_other(&format!(
        "/auth/login?fresh=1&next={}",
        urlencode(&back)
    )))
}

pub async fn approve(
    State(state): State<AppState>,
    Path(id): Path<String>,
    f: CsrfForm<DecisionForm>,
) -> Result<Response, PageError> {
    if let Some(again) = sign_in_again(&state, &f, &id, "approve") {
        return Ok(again);
    }
    state
        .lifecycle
        .decide(
            &f.viewer.person,
            &id,
            Decision::Approve,
            Some(&f.form.digest),
            &f.form.comment,
        )
        .await
        .map_err(AppError::from)?;
    Ok(see_other(&format!("/requests/{id}")))
}

pub async fn reject(
    State(state): State<AppState>,
    Path(id): Path<String>,
    f: CsrfForm<DecisionForm>,
) -> Result<Response, PageError> {
    if let Some(again) = sign_in_again(&state, &f, &id, "reject") {
        return Ok(again);
    }
    state
        .lifecycle
        .decide(
            &f.viewer.person,
            &id,
            Decision::Reject,
            None,
            &f.form.comment,
        )
        .await
        .map_err(AppError::from)?;
    Ok(see_other(&format!("/requests/{id}")))
}

pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    f: CsrfForm<DecisionForm>,
) -> Result<Response, PageError> {
    state
        .lifecycle
        .cancel(&f.viewer.person, &id)
        .await
        .map_err(AppError::from)?;
    Ok(see_other(&format!("/requests/{id}")))
}

pub async fn close(
    State(state): State<AppState>,
    Path(id): Path<String>,
    f: CsrfForm<DecisionForm>,
) -> Result<Response, PageError> {
    if let Some(again) = sign_in_again(&state, &f, &id, "close") {
        return Ok(again);
    }
    state
        .lifecycle
        .close(&f.viewer.person, &id, &f.form.comment)
        .await
        .map_err(AppError::from)?;
    Ok(see_other(&format!("/requests/{id}")))
}

#[derive(Deserialize)]
pub struct ExtendPageForm {
    #[serde(default)]
    minutes: String,
    #[serde(default)]
    justification: String,
}

/// Files an extension from the breakglass's page and shows the extension.
pub async fn extend(
    State(state): State<AppState>,
    Path(id): Path<String>,
    f: CsrfForm<ExtendPageForm>,
) -> Result<Response, PageError> {
    let minutes = f.form.minutes.trim().parse::<u64>().map_err(|_| {
        AppError::BadRequest(format!(
            "minutes must be a whole number of minutes, not {:?}",
            f.form.minutes
        ))
    })?;
    let extension = state
        .lifecycle
        .extend(
            &f.viewer.person,
            &id,
            ExtendForm {
                minutes,
                justification: f.form.justification.clone(),
            },
        )
        .await
        .map_err(AppError::from)?;
    Ok(see_other(&format!("/requests/{}", extension.id)))
}

#[derive(Deserialize)]
pub struct ReviewPageForm {
    #[serde(default)]
    review: String,
}

/// Records the requester's review from the request page.
pub async fn review(
    State(state): State<AppState>,
    Path(id): Path<String>,
    f: CsrfForm<ReviewPageForm>,
) -> Result<Response, PageError> {
    state
        .lifecycle
        .review(&f.viewer.person, &id, &f.form.review)
        .await
        .map_err(AppError::from)?;
    Ok(see_other(&format!("/requests/{id}")))
}
