//! The [`MailStore`] checks: the queue keeps what it is given, claims due mail in order with a
//! lease and an attempt counted, takes a failed mail back for later, and never hands one mail to
//! two claimers at once.

use std::collections::HashSet;
use std::sync::Arc;

use tessera_core::store::UserStore;
use tessera_core::{MailId, MailStore, QueuedMail, UserId};
use tokio::task::JoinSet;

use super::{HOUR, RACERS, T0, at, with_user};

/// What a backend with a mail queue holds: the accounts mail may concern, and the queue.
pub trait MailQueueStore: UserStore + MailStore {}

impl<S> MailQueueStore for S where S: UserStore + MailStore {}

const LEASE: i64 = 120_000;

fn mail(user: Option<&UserId>, created_at: i64, due: i64) -> QueuedMail {
    let id = MailId::generate().expect("OS randomness");
    QueuedMail {
        sealed: format!("sealed {id}").into_bytes(),
        id,
        user_id: user.cloned(),
        created_at: at(created_at),
        not_after: at(created_at + HOUR),
        attempts: 0,
        next_attempt_at: at(due),
        last_error: None,
    }
}

async fn queued<S: MailStore>(
    store: &S,
    user: Option<&UserId>,
    created_at: i64,
    due: i64,
) -> QueuedMail {
    let mail = mail(user, created_at, due);
    store.enqueue_mail(&mail).await.expect("enqueue_mail");
    mail
}

async fn claim<S: MailStore>(store: &S, now: i64, limit: usize) -> Vec<QueuedMail> {
    store
        .claim_mail(at(now), at(now + LEASE), limit)
        .await
        .expect("claim_mail")
}

fn ids(mails: &[QueuedMail]) -> Vec<&MailId> {
    mails.iter().map(|m| &m.id).collect()
}

/// `mail` as a claim at `now` returns it: leased, one more attempt.
fn claimed_at(mail: &QueuedMail, now: i64) -> QueuedMail {
    QueuedMail {
        attempts: mail.attempts + 1,
        next_attempt_at: at(now + LEASE),
        ..mail.clone()
    }
}

/// A queued mail comes back from a claim as given (sealed bytes, account or none, times) but
/// leased and with an attempt counted; the queue counts its mails, claimed ones included; an id
/// that exists, or an account that does not, is refused.
pub async fn mail_round_trip<S: MailQueueStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    assert_eq!(store.queued_mail().await.expect("queued_mail"), 0);
    assert!(
        claim(&store, T0, 10).await.is_empty(),
        "an empty queue has nothing due"
    );
    let mut to_alice = mail(Some(&alice.id), T0, T0);
    to_alice.sealed = (0..=255).collect();
    store.enqueue_mail(&to_alice).await.expect("enqueue_mail");
    let to_nobody = queued(&store, None, T0 + 1, T0 + 1).await;
    assert_eq!(store.queued_mail().await.expect("queued_mail"), 2);

    assert!(
        store.enqueue_mail(&to_alice).await.is_err(),
        "a mail id that exists is refused"
    );
    let ghost = mail(Some(&UserId::generate().expect("OS randomness")), T0, T0);
    assert!(
        store.enqueue_mail(&ghost).await.is_err(),
        "mail for an account that does not exist is refused"
    );
    assert_eq!(
        store.queued_mail().await.expect("queued_mail"),
        2,
        "refused mail is not queued"
    );

    assert_eq!(
        claim(&store, T0 + 10, 10).await,
        vec![
            claimed_at(&to_alice, T0 + 10),
            claimed_at(&to_nobody, T0 + 10)
        ],
        "claimed mail comes back as queued, leased, with an attempt counted"
    );
    assert_eq!(
        store.queued_mail().await.expect("queued_mail"),
        2,
        "claimed mail still counts as queued"
    );
}

/// A claim takes only mail due by `now`, the longest due first, at most `limit`, and returns
/// what it took oldest (queued first) first; a limit of 0 takes nothing.
pub async fn claim_order<S: MailQueueStore>(store: S) {
    // Queued at T0+1.., due in another order.
    let a = queued(&store, None, T0 + 1, T0 + 30).await;
    let b = queued(&store, None, T0 + 2, T0 + 10).await;
    let c = queued(&store, None, T0 + 3, T0 + 5).await;
    let d = queued(&store, None, T0 + 4, T0 + 20).await;
    // Due before the leases of the claims below end.
    let later = queued(&store, None, T0 + 5, T0 + 1_000).await;

    assert!(
        claim(&store, T0 + 25, 0).await.is_empty(),
        "a limit of 0 takes nothing"
    );
    assert!(
        claim(&store, T0 + 4, 10).await.is_empty(),
        "nothing is due yet"
    );
    assert_eq!(
        ids(&claim(&store, T0 + 25, 2).await),
        vec![&b.id, &c.id],
        "the two longest due (c, then b), returned oldest first"
    );
    assert_eq!(
        ids(&claim(&store, T0 + 30, 10).await),
        vec![&a.id, &d.id],
        "then the rest of what is due by now, `next_attempt_at` included, oldest first"
    );
    assert!(
        claim(&store, T0 + 31, 10).await.is_empty(),
        "mail due later is not taken"
    );
    assert_eq!(
        ids(&claim(&store, T0 + 1_000, 10).await),
        vec![&later.id],
        "until it is due (while the others are still leased)"
    );
}

/// A claimed mail is leased: no claim takes it again before `lease_until`, and one at or after
/// it does (the worker that had it died), counting another attempt.
pub async fn claimed_mail_is_leased<S: MailQueueStore>(store: S) {
    let m = queued(&store, None, T0, T0).await;
    let first = claim(&store, T0, 10).await;
    assert_eq!(first, vec![claimed_at(&m, T0)]);
    assert!(
        claim(&store, T0 + LEASE - 1, 10).await.is_empty(),
        "a leased mail is not claimed again before the lease ends"
    );
    let again = claim(&store, T0 + LEASE, 10).await;
    assert_eq!(
        again,
        vec![claimed_at(&first[0], T0 + LEASE)],
        "when the lease ends it is claimed again, with a second attempt counted"
    );
    assert_eq!(again[0].attempts, 2);
}

/// `retry_mail` reschedules a claimed mail and records why the attempt failed, without counting
/// an attempt of its own (the claim did); the next claim shows both; `false` for a mail that is
/// gone.
pub async fn retry_mail<S: MailQueueStore>(store: S) {
    let m = queued(&store, None, T0, T0).await;
    let other = queued(&store, None, T0 + 1, T0 + 1).await;
    assert_eq!(claim(&store, T0 + 1, 10).await.len(), 2);
    assert!(
        store
            .retry_mail(&m.id, at(T0 + 5_000), "421 4.7.0 try again later")
            .await
            .expect("retry_mail"),
        "retry_mail on a queued mail returns true"
    );
    assert!(
        claim(&store, T0 + 4_999, 10).await.is_empty(),
        "a retried mail waits until its next attempt"
    );
    assert_eq!(
        claim(&store, T0 + 5_000, 10).await,
        vec![QueuedMail {
            attempts: 2,
            next_attempt_at: at(T0 + 5_000 + LEASE),
            last_error: Some("421 4.7.0 try again later".into()),
            ..m.clone()
        }],
        "then it is claimed with the error kept and a second attempt counted; the other mail, \
         still leased, is not"
    );
    assert!(
        store
            .retry_mail(&m.id, at(T0 + 10_000), "timeout")
            .await
            .expect("retry_mail")
    );
    assert_eq!(
        claim(&store, T0 + 10_000, 10)
            .await
            .iter()
            .map(|m| m.last_error.as_deref())
            .collect::<Vec<_>>(),
        vec![Some("timeout")],
        "the last error replaces the one before"
    );
    assert!(store.delete_mail(&other.id).await.expect("delete_mail"));
    assert!(
        !store
            .retry_mail(&other.id, at(T0), "x")
            .await
            .expect("retry_mail"),
        "retry_mail on a mail that is gone returns false"
    );
}

/// `delete_mail` removes one mail, claimed or not, and answers `false` when it is not there.
pub async fn delete_mail<S: MailQueueStore>(store: S) {
    let claimed = queued(&store, None, T0, T0).await;
    let waiting = queued(&store, None, T0 + 1, T0 + HOUR).await;
    let kept = queued(&store, None, T0 + 2, T0 + HOUR).await;
    assert_eq!(claim(&store, T0, 10).await.len(), 1);
    assert!(
        store.delete_mail(&claimed.id).await.expect("delete_mail"),
        "a claimed mail"
    );
    assert!(
        store.delete_mail(&waiting.id).await.expect("delete_mail"),
        "a waiting mail"
    );
    assert!(
        !store.delete_mail(&waiting.id).await.expect("delete_mail"),
        "deleting a mail twice answers false"
    );
    assert_eq!(store.queued_mail().await.expect("queued_mail"), 1);
    assert_eq!(
        ids(&claim(&store, T0 + 2 * HOUR, 10).await),
        vec![&kept.id],
        "deleted mail is never claimed"
    );
}

/// Workers claiming at once never get the same mail, and together they get every due mail
/// exactly once.
pub async fn concurrent_claims<S: MailQueueStore>(store: S) {
    let store = Arc::new(store);
    let total = RACERS * 3;
    let mut queued_ids = HashSet::new();
    for i in 0..total {
        let m = queued(&*store, None, T0 + i as i64, T0).await;
        queued_ids.insert(m.id);
    }
    let mut workers = JoinSet::new();
    for _ in 0..RACERS {
        let store = Arc::clone(&store);
        workers.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let claimed = claim(&*store, T0, 2).await;
                if claimed.is_empty() {
                    break mine;
                }
                mine.extend(claimed.into_iter().map(|m| m.id));
            }
        });
    }
    let mut seen = HashSet::new();
    for id in workers.join_all().await.into_iter().flatten() {
        assert!(seen.insert(id.clone()), "mail {id} was claimed twice");
    }
    assert_eq!(
        seen, queued_ids,
        "every due mail was claimed, by exactly one worker"
    );
}
