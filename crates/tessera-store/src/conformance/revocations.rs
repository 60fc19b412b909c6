//! The [`RevocationStore`] checks: the denylist, the allowlist and purging what expired.

use tessera_core::store::RevocationStore;
use tessera_core::{AllowedToken, FamilyId, RevocationEntry, Revoked, UserId};

use super::{HOUR, T0, at};

fn revocation(revoked: Revoked, expires_at: i64) -> RevocationEntry {
    RevocationEntry {
        revoked,
        expires_at: at(expires_at),
    }
}

/// The listing order is not part of the contract: compare sorted.
async fn live_revocations<S: RevocationStore>(store: &S, now: i64) -> Vec<RevocationEntry> {
    let mut entries = store.revocations(at(now)).await.expect("revocations");
    entries.sort_by_key(|e| (format!("{:?}", e.revoked), e.expires_at));
    entries
}

fn sorted(mut entries: Vec<RevocationEntry>) -> Vec<RevocationEntry> {
    entries.sort_by_key(|e| (format!("{:?}", e.revoked), e.expires_at));
    entries
}

/// Denylist entries of every kind read back as written, and are listed only while they expire
/// after `now`; entries for one user with different cut-offs, and look-alike ids of different
/// kinds, stay distinct.
pub async fn denylist<S: RevocationStore>(store: S) {
    assert_eq!(live_revocations(&store, T0).await, Vec::new());
    let user = UserId::generate().expect("OS randomness");
    let token = revocation(
        Revoked::Token {
            jti: "jti-1 ünï".into(),
        },
        T0 + HOUR,
    );
    let family = revocation(
        Revoked::Family {
            id: FamilyId::generate().expect("OS randomness"),
        },
        T0 + 2 * HOUR,
    );
    let earlier = revocation(
        Revoked::UserBefore {
            user: user.clone(),
            before: at(T0),
        },
        T0 + HOUR,
    );
    let later = revocation(
        Revoked::UserBefore {
            user: user.clone(),
            before: at(T0 + 60_000),
        },
        T0 + 3 * HOUR,
    );
    // A jti that looks like a family id and a family id that looks like a user id are still
    // different entries.
    let lookalike = revocation(
        Revoked::Token {
            jti: user.as_str().into(),
        },
        T0 + HOUR,
    );
    let expired = revocation(
        Revoked::Token {
            jti: "jti-expired".into(),
        },
        T0 + 100,
    );
    for entry in [&token, &family, &earlier, &later, &lookalike, &expired] {
        store.add_revocation(entry).await.expect("add_revocation");
    }
    assert_eq!(
        live_revocations(&store, T0).await,
        sorted(vec![
            token.clone(),
            family.clone(),
            earlier.clone(),
            later.clone(),
            lookalike.clone(),
            expired.clone()
        ]),
        "every entry reads back as written; a user's entries with different `before`s are kept"
    );
    assert_eq!(
        live_revocations(&store, T0 + 100).await,
        sorted(vec![
            token.clone(),
            family.clone(),
            earlier.clone(),
            later.clone(),
            lookalike.clone()
        ]),
        "an entry expiring exactly now is not listed"
    );
    assert_eq!(
        live_revocations(&store, T0 + 2 * HOUR).await,
        vec![later],
        "only entries expiring after now are listed"
    );
}

/// Recording an entry again is not an error and lists it once, lasting until the later of its
/// expiries: it is never cut short.
pub async fn denylist_twice<S: RevocationStore>(store: S) {
    let entry = revocation(
        Revoked::Family {
            id: FamilyId::generate().expect("OS randomness"),
        },
        T0 + HOUR,
    );
    store.add_revocation(&entry).await.expect("add_revocation");
    store
        .add_revocation(&entry)
        .await
        .expect("recording an entry twice is not an error");
    assert_eq!(
        live_revocations(&store, T0).await,
        vec![entry.clone()],
        "an entry recorded twice is listed once"
    );
    let longer = RevocationEntry {
        expires_at: at(T0 + 2 * HOUR),
        ..entry.clone()
    };
    store.add_revocation(&longer).await.expect("add_revocation");
    assert_eq!(
        live_revocations(&store, T0).await,
        vec![longer.clone()],
        "recorded again with a later expiry, an entry lasts until the later one"
    );
    store.add_revocation(&entry).await.expect("add_revocation");
    assert_eq!(
        live_revocations(&store, T0).await,
        vec![longer],
        "recorded again with an earlier expiry, an entry is not cut short"
    );
}

fn allowed(jti: &str, family: &FamilyId, user: &UserId, expires_at: i64) -> AllowedToken {
    AllowedToken {
        jti: jti.into(),
        family_id: family.clone(),
        user_id: user.clone(),
        expires_at: at(expires_at),
    }
}

async fn live_allowed<S: RevocationStore>(store: &S, now: i64) -> Vec<AllowedToken> {
    let mut tokens = store.allowed_tokens(at(now)).await.expect("allowed_tokens");
    tokens.sort_by(|a, b| a.jti.cmp(&b.jti));
    tokens
}

/// Allowed tokens read back while live; disallowing one, a family's or a user's counts what went
/// and touches nothing else, and a jti recorded again replaces its old record in every index.
pub async fn allowlist<S: RevocationStore>(store: S) {
    let alice = UserId::generate().expect("OS randomness");
    let bob = UserId::generate().expect("OS randomness");
    let f1 = FamilyId::generate().expect("OS randomness");
    let f2 = FamilyId::generate().expect("OS randomness");
    let f3 = FamilyId::generate().expect("OS randomness");
    let a = allowed("a", &f1, &alice, T0 + HOUR);
    let b = allowed("b", &f1, &alice, T0 + 2 * HOUR);
    let c = allowed("c", &f2, &alice, T0 + HOUR);
    let d = allowed("d", &f3, &bob, T0 + HOUR);
    let e = allowed("e", &f3, &bob, T0 + 100);
    for t in [&a, &b, &c, &d, &e] {
        store.allow_token(t).await.expect("allow_token");
    }
    assert_eq!(
        live_allowed(&store, T0).await,
        vec![a.clone(), b.clone(), c.clone(), d.clone(), e.clone()],
        "live tokens read back as written"
    );
    assert_eq!(
        live_allowed(&store, T0 + 100).await,
        vec![a.clone(), b.clone(), c.clone(), d.clone()],
        "a token expiring exactly now is not listed"
    );

    store
        .allow_token(&a)
        .await
        .expect("recording a token twice is not an error");
    assert_eq!(live_allowed(&store, T0).await.len(), 5, "listed once");

    assert!(
        store.disallow_token("e").await.expect("disallow_token"),
        "disallowing a live token returns true"
    );
    assert!(
        !store.disallow_token("e").await.expect("disallow_token"),
        "disallowing it again returns false"
    );
    assert!(
        !store.disallow_token("nope").await.expect("disallow_token"),
        "disallowing an unknown jti returns false"
    );
    assert_eq!(
        store.disallow_family(&f1).await.expect("disallow_family"),
        2,
        "disallowing a family counts its tokens"
    );
    assert_eq!(
        live_allowed(&store, T0).await,
        vec![c.clone(), d.clone()],
        "only that family's tokens went"
    );
    assert_eq!(
        store.disallow_family(&f1).await.expect("disallow_family"),
        0,
        "nothing is left of that family"
    );
    assert_eq!(
        store.disallow_user(&bob).await.expect("disallow_user"),
        1,
        "disallowing a user counts their tokens"
    );
    assert_eq!(
        live_allowed(&store, T0).await,
        vec![c.clone()],
        "only that user's tokens went"
    );
    assert_eq!(store.disallow_user(&bob).await.expect("disallow_user"), 0);

    // A jti recorded again takes the new record's place, in every index.
    let moved = allowed("c", &f3, &bob, T0 + 3 * HOUR);
    store.allow_token(&moved).await.expect("allow_token");
    assert_eq!(live_allowed(&store, T0).await, vec![moved.clone()]);
    assert_eq!(
        store.disallow_user(&alice).await.expect("disallow_user"),
        0,
        "the replaced record no longer counts for its old user"
    );
    assert_eq!(
        store.disallow_family(&f2).await.expect("disallow_family"),
        0,
        "nor for its old family"
    );
    assert_eq!(
        store.disallow_family(&f3).await.expect("disallow_family"),
        1
    );
    assert_eq!(live_allowed(&store, T0).await, Vec::new());
}

/// `purge_expired` removes and counts exactly the denylist entries and allowed tokens expired by
/// `now` (those expiring at `now` included), and keeps the rest.
pub async fn purge<S: RevocationStore>(store: S) {
    let user = UserId::generate().expect("OS randomness");
    let family = FamilyId::generate().expect("OS randomness");
    let expired_entries = [
        revocation(Revoked::Token { jti: "old".into() }, T0 + 100),
        revocation(
            Revoked::UserBefore {
                user: user.clone(),
                before: at(T0),
            },
            T0 + 200,
        ),
    ];
    let live_entries = [
        revocation(Revoked::Token { jti: "new".into() }, T0 + 201),
        revocation(
            Revoked::UserBefore {
                user: user.clone(),
                before: at(T0 + 1),
            },
            T0 + HOUR,
        ),
    ];
    for entry in expired_entries.iter().chain(&live_entries) {
        store.add_revocation(entry).await.expect("add_revocation");
    }
    let expired_tokens = [
        allowed("x1", &family, &user, T0 + 150),
        allowed("x2", &family, &user, T0 + 200),
    ];
    let live_token = allowed("y", &family, &user, T0 + 250);
    for t in expired_tokens.iter().chain([&live_token]) {
        store.allow_token(t).await.expect("allow_token");
    }

    assert_eq!(
        store
            .purge_expired(at(T0 + 200))
            .await
            .expect("purge_expired"),
        4,
        "purge counts the expired entries and tokens, those expiring exactly now included"
    );
    // Listing as of long ago shows what is still stored, expired or not.
    assert_eq!(
        live_revocations(&store, 0).await,
        sorted(live_entries.to_vec()),
        "purge removes only expired entries"
    );
    assert_eq!(
        live_allowed(&store, 0).await,
        vec![live_token],
        "purge removes only expired tokens"
    );
    assert_eq!(
        store
            .purge_expired(at(T0 + 200))
            .await
            .expect("purge_expired"),
        0,
        "nothing is left to purge"
    );
    assert!(
        !store.disallow_token("x1").await.expect("disallow_token"),
        "a purged token is gone"
    );
}
