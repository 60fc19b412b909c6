//! The [`EventStore`] checks: security events round-trip and page newest first.

use serde_json::{Value, json};
use tessera_core::store::EventStore;
use tessera_core::{EventKind, NewEvent, SecurityEvent, UserId};

use super::{HOUR, T0, at};

const EVENT_KINDS: [EventKind; 9] = [
    EventKind::LoginSucceeded,
    EventKind::LoginFailed,
    EventKind::Logout,
    EventKind::TokenIssued,
    EventKind::TokenRefreshed,
    EventKind::RefreshReuseDetected,
    EventKind::TokenRevoked,
    EventKind::KeyRotated,
    EventKind::KeyRetired,
];

fn event(at_ms: i64, kind: EventKind, user_id: Option<UserId>, detail: Value) -> NewEvent {
    NewEvent {
        at: at(at_ms),
        kind,
        user_id,
        detail,
    }
}

fn recorded(id: i64, event: &NewEvent) -> SecurityEvent {
    SecurityEvent {
        id,
        at: event.at,
        kind: event.kind,
        user_id: event.user_id.clone(),
        detail: event.detail.clone(),
    }
}

/// Every event reads back as written (kind, user, time, and a detail with awkward JSON), listed
/// newest first with strictly increasing ids, in the order recorded whatever its timestamps.
pub async fn events_round_trip<S: EventStore>(store: S) {
    assert_eq!(
        store.events(None, 100).await.expect("events"),
        Vec::new(),
        "a fresh store has no events"
    );
    let user = UserId::generate().expect("OS randomness");
    let mut written = Vec::new();
    for (i, kind) in EVENT_KINDS.into_iter().enumerate() {
        let who = (i % 2 == 0).then(|| user.clone());
        let detail = json!({"i": i, "kind": kind.as_str()});
        written.push(event(T0 + i as i64, kind, who, detail));
    }
    written.push(event(
        T0 + 100,
        EventKind::RefreshReuseDetected,
        None,
        json!({
            "family": "fam_x",
            "ip": "2001:db8::1",
            "reason": "Grüß Gott, Zoë! 🦀 \"quoted\" \\ \n",
            "nested": {"list": [1, 2.5, null, true, {"deep": []}]},
            "big": u64::MAX,
            "small": i64::MIN,
        }),
    ));
    // Events are recorded as given, in the order given, whatever their timestamps.
    written.push(event(T0 - HOUR, EventKind::Logout, None, json!({})));
    for e in &written {
        store.record_event(e).await.expect("record_event");
    }

    let listed = store.events(None, 100).await.expect("events");
    assert_eq!(listed.len(), written.len(), "every event is listed");
    assert!(
        listed.windows(2).all(|w| w[0].id > w[1].id),
        "newest first, ids strictly increasing with every event: {:?}",
        listed.iter().map(|e| e.id).collect::<Vec<_>>()
    );
    let oldest_first: Vec<SecurityEvent> = listed.into_iter().rev().collect();
    for (stored, written) in oldest_first.iter().zip(&written) {
        assert_eq!(
            *stored,
            recorded(stored.id, written),
            "an event reads back as written: kind, user, time and detail"
        );
    }
}

/// Paging by `before` goes from the newest event down without gaps or repeats, honours the limit
/// (0 lists nothing), and a page stays put when newer events arrive.
pub async fn event_paging<S: EventStore>(store: S) {
    for i in 0..7 {
        store
            .record_event(&event(
                T0 + i,
                EventKind::TokenIssued,
                None,
                json!({"n": i}),
            ))
            .await
            .expect("record_event");
    }
    let all = store.events(None, usize::MAX).await.expect("events");
    assert_eq!(all.len(), 7, "an unbounded limit lists everything");
    let numbers = |events: &[SecurityEvent]| -> Vec<i64> {
        events
            .iter()
            .map(|e| e.detail["n"].as_i64().expect("n"))
            .collect()
    };
    assert_eq!(numbers(&all), vec![6, 5, 4, 3, 2, 1, 0], "newest first");

    let first = store.events(None, 3).await.expect("events");
    assert_eq!(numbers(&first), vec![6, 5, 4], "the limit keeps the newest");
    let second = store.events(Some(first[2].id), 3).await.expect("events");
    assert_eq!(
        numbers(&second),
        vec![3, 2, 1],
        "`before` continues below the last id seen"
    );
    let third = store.events(Some(second[2].id), 3).await.expect("events");
    assert_eq!(numbers(&third), vec![0], "the last page is short");
    assert_eq!(
        store.events(Some(third[0].id), 3).await.expect("events"),
        Vec::new(),
        "nothing is below the oldest event"
    );
    assert_eq!(
        store.events(None, 0).await.expect("events"),
        Vec::new(),
        "a limit of 0 lists nothing"
    );
    assert_eq!(
        numbers(
            &store
                .events(Some(all[0].id + 1_000), 2)
                .await
                .expect("events")
        ),
        vec![6, 5],
        "a cursor above every id starts at the newest"
    );
    store
        .record_event(&event(T0 + 7, EventKind::Logout, None, json!({"n": 7})))
        .await
        .expect("record_event");
    assert_eq!(
        numbers(&store.events(Some(first[2].id), 3).await.expect("events")),
        vec![3, 2, 1],
        "a page does not shift when newer events arrive"
    );
}
