use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, TimeZone, Utc};
use tokio::sync::watch;

/// Milliseconds since the Unix epoch: the one unit of time the store and the rules use.
pub type Millis = i64;

/// The broker's notion of now.
///
/// Production reads the system clock. Tests and benchmarks use a manual clock that they move
/// forward; workers waiting for a deadline are woken when it moves, so nothing sleeps in tests.
#[derive(Clone)]
pub struct Clock {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` for the system clock; otherwise the manual time in milliseconds.
    manual: Option<AtomicI64>,
    moved: watch::Sender<()>,
}

impl Clock {
    pub fn system() -> Self {
        Self::build(None)
    }

    /// A clock that stands still at `start` until [`Clock::advance`] moves it.
    pub fn manual(start: Millis) -> Self {
        Self::build(Some(AtomicI64::new(start)))
    }

    fn build(manual: Option<AtomicI64>) -> Self {
        let (moved, _) = watch::channel(());
        Self {
            inner: Arc::new(Inner { manual, moved }),
        }
    }

    pub fn now(&self) -> Millis {
        match &self.inner.manual {
            Some(at) => at.load(Ordering::SeqCst),
            None => Utc::now().timestamp_millis(),
        }
    }

    pub fn now_utc(&self) -> DateTime<Utc> {
        to_utc(self.now())
    }

    /// Moves a manual clock forward and wakes everything waiting on it.
    pub fn advance(&self, by: std::time::Duration) {
        if let Some(at) = &self.inner.manual {
            let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
            at.fetch_add(by, Ordering::SeqCst);
            self.inner.moved.send_replace(());
        }
    }

    /// Waits until the clock reads at least `deadline`.
    pub async fn sleep_until(&self, deadline: Millis) {
        match &self.inner.manual {
            None => {
                let wait = deadline.saturating_sub(self.now()).max(0);
                tokio::time::sleep(std::time::Duration::from_millis(wait.unsigned_abs())).await;
            }
            Some(_) => {
                let mut moved = self.inner.moved.subscribe();
                while self.now() < deadline {
                    if moved.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

pub fn to_utc(at: Millis) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(at).single().unwrap_or_default()
}

/// RFC 3339 with millisecond precision, the form every API response and log line uses.
pub fn rfc3339(at: Millis) -> String {
    to_utc(at).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// [`rfc3339`] appended to `out`, without the detour through chrono's formatting machinery:
/// an export writes a million of these. Years outside 1000..=9999 (which nothing the broker
/// records has) go through [`rfc3339`] itself; a test holds the two equal.
pub fn write_rfc3339(out: &mut Vec<u8>, at: Millis) {
    const DAY: i64 = 86_400_000;
    let (year, month, day) = civil_from_days(at.div_euclid(DAY));
    if !(1000..=9999).contains(&year) {
        out.extend_from_slice(rfc3339(at).as_bytes());
        return;
    }
    let of_day = at.rem_euclid(DAY);
    let (hour, minute) = (of_day / 3_600_000, of_day / 60_000 % 60);
    let (second, milli) = (of_day / 1000 % 60, of_day % 1000);
    let digit = |n: i64| b'0' + (n % 10) as u8;
    out.extend_from_slice(&[
        digit(year / 1000),
        digit(year / 100),
        digit(year / 10),
        digit(year),
        b'-',
        digit(month / 10),
        digit(month),
        b'-',
        digit(day / 10),
        digit(day),
        b'T',
        digit(hour / 10),
        digit(hour),
        b':',
        digit(minute / 10),
        digit(minute),
        b':',
        digit(second / 10),
        digit(second),
        b'.',
        digit(milli / 100),
        digit(milli / 10),
        digit(milli),
        b'Z',
    ]);
}

/// The proleptic Gregorian (year, month, day) of a day counted from 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let of_era = z.rem_euclid(146_097);
    let year_of_era = (of_era - of_era / 1460 + of_era / 36_524 - of_era / 146_096) / 365;
    let day_of_year = of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(at: Millis) -> String {
        let mut out = Vec::new();
        write_rfc3339(&mut out, at);
        String::from_utf8(out).expect("ASCII")
    }

    #[test]
    fn the_fast_rfc3339_writes_what_chrono_writes() {
        // From before the year 0 to past 9999 in uneven steps of up to four months...
        let mut at: Millis = -62_200_000_000_000;
        let mut step: Millis = 1;
        while at < 260_000_000_000_000 {
            assert_eq!(written(at), rfc3339(at), "{at}");
            at += step;
            step = (step * 3 + 7_777) % 9_999_999_999_937;
        }
        // ...and hour by hour (and an odd millisecond) through leap years and century ends.
        for start in [-2_208_988_800_000, 946_684_800_000, 4_102_444_800_000] {
            for hour in 0..3 * 366 * 24 {
                let at = start - 366 * 86_400_000 + hour * 3_600_001;
                assert_eq!(written(at), rfc3339(at), "{at}");
            }
        }
        for at in [
            0,
            -1,
            1,
            951_782_400_000,     // 2000-02-29
            4_107_542_399_999,   // 2100-02-28T23:59:59.999
            253_402_300_799_999, // 9999-12-31T23:59:59.999
            253_402_300_800_000,
            -30_610_224_000_000, // 1000-01-01
            -30_610_224_000_001,
            i64::MIN,
            i64::MAX,
        ] {
            assert_eq!(written(at), rfc3339(at), "{at}");
        }
    }

    /// Lets every other task on this (current-thread) runtime run until it waits again.
    async fn let_others_run() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_when_advanced_and_not_before_their_deadline() {
        let clock = Clock::manual(1_000);
        let mut waiter = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep_until(61_000).await }
        });
        // The waiter has run and is parked on the clock.
        let_others_run().await;
        assert_eq!(clock.inner.moved.receiver_count(), 1, "the waiter waits");
        assert!(!waiter.is_finished());

        // Woken by a move that falls short of its deadline, it goes back to waiting.
        clock.advance(std::time::Duration::from_secs(30));
        let_others_run().await;
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), &mut waiter)
                .await
                .is_err(),
            "the waiter finished 30 s before its deadline"
        );
        assert!(!waiter.is_finished());
        assert_eq!(clock.inner.moved.receiver_count(), 1, "still waiting");

        clock.advance(std::time::Duration::from_secs(30));
        tokio::time::timeout(std::time::Duration::from_secs(60), waiter)
            .await
            .expect("sleeper woke")
            .expect("task ran");
        assert_eq!(clock.now(), 61_000);
    }
}
