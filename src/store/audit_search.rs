//! Searching the audit history.
//!
//! Searches build their `WHERE` clause from the filters actually given rather than writing
//! `($1 IS NULL OR col = $1)` for every column: both SQLite and PostgreSQL plan a prepared
//! statement once, and a plan that must also serve "no ticket given" cannot use the ticket
//! index, which turns a search over a million events into a scan of all of them.

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use sqlx::AssertSqlSafe;

use super::audit::{AuditEvent, StoredEvent};
use super::{Result, Store, StoreError};
use crate::clock::Millis;

/// Which events a search or an export wants. Every field narrows; none given means all.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub request_id: Option<String>,
    pub ticket: Option<String>,
    pub actor: Option<String>,
    pub actor_subject: Option<String>,
    pub target: Option<String>,
    pub namespace: Option<String>,
    pub action: Option<String>,
    /// At or after this time.
    pub since: Option<Millis>,
    /// Before this time.
    pub until: Option<Millis>,
    /// Only events older than this sequence number (for paging newest first).
    pub before_seq: Option<i64>,
    /// Only events newer than this sequence number (for paging oldest first).
    pub after_seq: Option<i64>,
    /// Oldest first (a timeline) instead of newest first (a search).
    pub oldest_first: bool,
    /// At most this many for [`Store::audit_events`] (0 means 100, capped at 1000); ignored by
    /// [`Store::audit_stream`], which returns every match.
    pub limit: i64,
}

const EVENT_COLUMNS: &str = "seq, at, actor, actor_issuer, actor_subject, action, request_id, ticket, target, namespace, \
     detail, prev_hash, hash";

/// A bound value of a query built at run time.
enum Arg {
    Text(String),
    Int(i64),
}

/// The `SELECT` for a filter, with its arguments in placeholder order. Only fixed SQL
/// fragments go into the text; every value given is a bound parameter.
fn select_events(filter: &AuditFilter, limit: Option<i64>) -> (String, Vec<Arg>) {
    let mut conditions: Vec<String> = Vec::new();
    let mut args = Vec::new();
    let mut add = |condition: &str, arg: Arg| {
        args.push(arg);
        conditions.push(format!("{condition} ${}", args.len()));
    };
    let texts = [
        ("request_id =", &filter.request_id),
        ("ticket =", &filter.ticket),
        ("actor =", &filter.actor),
        ("actor_subject =", &filter.actor_subject),
        ("target =", &filter.target),
        ("namespace =", &filter.namespace),
        ("action =", &filter.action),
    ];
    for (condition, value) in texts {
        if let Some(value) = value {
            add(condition, Arg::Text(value.clone()));
        }
    }
    let numbers = [
        ("at >=", filter.since),
        ("at <", filter.until),
        ("seq <", filter.before_seq),
        ("seq >", filter.after_seq),
    ];
    for (condition, value) in numbers {
        if let Some(value) = value {
            add(condition, Arg::Int(value));
        }
    }
    let mut matching = String::from("FROM audit_events");
    if !conditions.is_empty() {
        matching.push_str(" WHERE ");
        matching.push_str(&conditions.join(" AND "));
    }
    let order = if filter.oldest_first {
        "ORDER BY seq ASC"
    } else {
        "ORDER BY seq DESC"
    };
    let sql = match limit {
        None => format!("SELECT {EVENT_COLUMNS} {matching} {order}"),
        // A page: pick its seqs first, from an index that holds both the filtered column and
        // seq, then read just those rows. Reading whole rows for every match of a wide time
        // window only to sort them and keep a hundred is what made such searches slow.
        Some(limit) => {
            args.push(Arg::Int(limit));
            format!(
                "SELECT {EVENT_COLUMNS} FROM audit_events WHERE seq IN \
                 (SELECT seq {matching} {order} LIMIT ${}) {order}",
                args.len()
            )
        }
    };
    (sql, args)
}

/// Binds `args` to the query in order.
macro_rules! bind_all {
    ($query:expr, $args:expr) => {{
        let mut query = $query;
        for arg in $args {
            query = match arg {
                Arg::Text(text) => query.bind(text),
                Arg::Int(number) => query.bind(number),
            };
        }
        query
    }};
}

impl Store {
    /// Events matching the filter, newest first unless it asks for oldest first; at most
    /// `filter.limit` of them (0 means 100; never more than 1000).
    ///
    /// Every change committed before the call is in the answer, whichever replica made it: a
    /// change is visible from its commit on, but its events take their place in the chain just
    /// after, so whatever waits in the journal is chained first.
    pub async fn audit_events(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>> {
        self.chain_committed().await;
        audit_events(self.pool(), filter).await
    }

    /// Every event matching the filter, in order, as a stream: memory stays constant however
    /// many there are, which is what lets an export run on a small replica. Each event comes
    /// as the database holds it, `detail` still text: an export writes it out without parsing
    /// every detail only to write it again.
    pub fn audit_stream(&self, filter: &AuditFilter) -> BoxStream<'_, Result<StoredEvent>> {
        let (sql, args) = select_events(filter, None);
        let query = bind_all!(sqlx::query_as(AssertSqlSafe(sql)), args);
        query
            .fetch(self.pool())
            .map(|row| row.map_err(StoreError::from))
            .boxed()
    }
}

/// [`Store::audit_events`] on any executor (a connection that serves several reads).
pub(super) async fn audit_events<'e, E>(
    executor: E,
    filter: &AuditFilter,
) -> Result<Vec<AuditEvent>>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let limit = if filter.limit > 0 {
        filter.limit.min(1000)
    } else {
        100
    };
    let (sql, args) = select_events(filter, Some(limit));
    // Built from fixed fragments; every value is bound (see `select_events`).
    let query = bind_all!(sqlx::query_as(AssertSqlSafe(sql)), args);
    Ok(query.fetch_all(executor).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_sql_names_only_the_filters_given_and_binds_every_value() {
        let filter = AuditFilter {
            ticket: Some("INC-1'; DROP TABLE audit_events; --".into()),
            since: Some(5),
            before_seq: Some(10),
            ..AuditFilter::default()
        };
        let (sql, args) = select_events(&filter, Some(50));
        assert!(
            sql.ends_with(
                "FROM audit_events WHERE seq IN (SELECT seq FROM audit_events \
                 WHERE ticket = $1 AND at >= $2 AND seq < $3 ORDER BY seq DESC LIMIT $4) \
                 ORDER BY seq DESC"
            ),
            "{sql}"
        );
        assert!(!sql.contains("DROP"), "values never enter the text");
        assert_eq!(args.len(), 4);
    }

    #[test]
    fn an_unfiltered_timeline_reads_oldest_first_without_a_where() {
        let filter = AuditFilter {
            oldest_first: true,
            ..AuditFilter::default()
        };
        let (sql, args) = select_events(&filter, None);
        assert!(sql.ends_with("FROM audit_events ORDER BY seq ASC"), "{sql}");
        assert!(args.is_empty());
    }
}
