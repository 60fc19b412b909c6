//! The [`RefreshStore`] checks: families, rotation (and its races), revocation and the sweep.

use std::sync::Arc;

use tessera_core::store::{RefreshStore, UserStore};
use tessera_core::{
    ClientInfo, FamilyId, LoginModel, RefreshFamily, RefreshTokenRecord, Rotation, SessionId,
    StoreError, TokenHash, UserId,
};
use tokio::task::JoinSet;

use super::{HOUR, RACERS, T0, at, with_user};

fn fresh_hash() -> TokenHash {
    SessionId::generate().expect("OS randomness").hash()
}

/// A family of `user` created at `created_at`, with the given idle and absolute expiries, and
/// its first token.
fn family(
    user: &UserId,
    created_at: i64,
    expires_at: i64,
    absolute_expires_at: i64,
) -> (RefreshFamily, RefreshTokenRecord) {
    let family = RefreshFamily {
        id: FamilyId::generate().expect("OS randomness"),
        user_id: user.clone(),
        model: LoginModel::Token,
        created_at: at(created_at),
        last_used_at: at(created_at),
        expires_at: at(expires_at),
        absolute_expires_at: at(absolute_expires_at),
        revoked_at: None,
        revoked_reason: None,
        client: ClientInfo::default(),
        generation: 0,
        dpop_jkt: None,
        auth: tessera_core::AuthContext::password(at(created_at)),
    };
    let first = token_of(&family.id, created_at);
    (family, first)
}

/// A new token of `family`'s first generation (the login's).
fn token_of(family: &FamilyId, issued_at: i64) -> RefreshTokenRecord {
    token_in(family, issued_at, 0)
}

/// A new token of `family`, of `generation`.
fn token_in(family: &FamilyId, issued_at: i64, generation: u32) -> RefreshTokenRecord {
    RefreshTokenRecord {
        hash: fresh_hash(),
        family_id: family.clone(),
        issued_at: at(issued_at),
        rotated_at: None,
        generation,
    }
}

async fn with_family<S: RefreshStore>(
    store: &S,
    user: &UserId,
    created_at: i64,
) -> (RefreshFamily, RefreshTokenRecord) {
    let (f, first) = family(user, created_at, created_at + HOUR, created_at + 12 * HOUR);
    store
        .create_family(&f, &first)
        .await
        .expect("create_family");
    (f, first)
}

async fn stored_token<S: RefreshStore>(
    store: &S,
    hash: &TokenHash,
) -> (RefreshTokenRecord, RefreshFamily) {
    store
        .refresh_token(hash)
        .await
        .expect("refresh_token")
        .unwrap_or_else(|| panic!("refresh token {hash:?} should exist"))
}

async fn stored_family<S: RefreshStore>(store: &S, id: &FamilyId) -> RefreshFamily {
    store
        .family(id)
        .await
        .expect("family")
        .unwrap_or_else(|| panic!("family {id} should exist"))
}

/// A refresh family (any login model, with or without client info, even stored already revoked)
/// and its first token read back as written; an unknown token hash or family id finds nothing.
pub async fn families_round_trip<S: UserStore + RefreshStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    let (plain, plain_first) = family(&alice.id, T0, T0 + HOUR, T0 + 12 * HOUR);
    let (described, described_first) = family(&alice.id, T0 + 1, T0 + HOUR, T0 + 12 * HOUR);
    let described = RefreshFamily {
        model: LoginModel::Hybrid,
        client: ClientInfo {
            user_agent: Some("curl/8.5 Ünïcode 🦀".into()),
            ip: Some("2001:db8::7".parse().expect("an IP address")),
        },
        ..described
    };
    // A family may be stored already revoked (an import, say): the store keeps what it is given.
    let (revoked, revoked_first) = family(&alice.id, T0 + 2, T0 + HOUR, T0 + 12 * HOUR);
    let revoked = RefreshFamily {
        model: LoginModel::Session,
        revoked_at: Some(at(T0 + 3)),
        revoked_reason: Some("imported revoked".into()),
        ..revoked
    };
    for (f, first) in [
        (&plain, &plain_first),
        (&described, &described_first),
        (&revoked, &revoked_first),
    ] {
        store.create_family(f, first).await.expect("create_family");
        assert_eq!(
            stored_token(&store, &first.hash).await,
            (first.clone(), f.clone()),
            "a family's first token reads back with its family, as written"
        );
        assert_eq!(
            stored_family(&store, &f.id).await,
            *f,
            "a family reads back as written"
        );
    }
    assert_eq!(
        store
            .refresh_token(&fresh_hash())
            .await
            .expect("refresh_token"),
        None,
        "an unknown token hash finds nothing"
    );
    assert_eq!(
        store
            .family(&FamilyId::generate().expect("OS randomness"))
            .await
            .expect("family"),
        None,
        "an unknown family id finds nothing"
    );
}

/// A family is refused whole, leaving nothing behind and replacing nothing, when its id or its
/// first token's hash is taken, its user does not exist, or its first token names another
/// family.
pub async fn family_clashes<S: UserStore + RefreshStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    let (original, first) = with_family(&store, &alice.id, T0).await;

    let same_id = RefreshFamily {
        id: original.id.clone(),
        ..family(&alice.id, T0 + 5, T0 + HOUR, T0 + 12 * HOUR).0
    };
    let same_id_first = token_of(&original.id, T0 + 5);
    assert!(
        matches!(
            store.create_family(&same_id, &same_id_first).await,
            Err(StoreError::Conflict(_))
        ),
        "a family id clash is a Conflict"
    );
    assert_eq!(
        store
            .refresh_token(&same_id_first.hash)
            .await
            .expect("refresh_token"),
        None,
        "a refused family leaves no token behind"
    );
    assert_eq!(
        stored_family(&store, &original.id).await,
        original,
        "a refused family does not replace the first one"
    );

    let (other, _) = family(&alice.id, T0 + 6, T0 + HOUR, T0 + 12 * HOUR);
    let same_hash = RefreshTokenRecord {
        hash: first.hash,
        ..token_of(&other.id, T0 + 6)
    };
    assert!(
        matches!(
            store.create_family(&other, &same_hash).await,
            Err(StoreError::Conflict(_))
        ),
        "a token hash clash is a Conflict"
    );
    assert_eq!(
        store.family(&other.id).await.expect("family"),
        None,
        "a family whose first token is refused is not created either"
    );
    assert_eq!(
        stored_token(&store, &first.hash).await,
        (first.clone(), original.clone()),
        "a refused token does not replace the first one"
    );

    let ghost = UserId::generate().expect("OS randomness");
    let (orphan, orphan_first) = family(&ghost, T0, T0 + HOUR, T0 + 12 * HOUR);
    assert!(
        matches!(
            store.create_family(&orphan, &orphan_first).await,
            Err(StoreError::Other(_))
        ),
        "a family of a user that does not exist is refused"
    );
    assert_eq!(store.family(&orphan.id).await.expect("family"), None);
    assert_eq!(
        store
            .refresh_token(&orphan_first.hash)
            .await
            .expect("refresh_token"),
        None
    );

    let (lost, _) = family(&alice.id, T0 + 7, T0 + HOUR, T0 + 12 * HOUR);
    let elsewhere = token_of(&original.id, T0 + 7);
    assert!(
        store.create_family(&lost, &elsewhere).await.is_err(),
        "a first token that names another family is refused"
    );
    assert_eq!(store.family(&lost.id).await.expect("family"), None);
    assert_eq!(
        store
            .refresh_token(&elsewhere.hash)
            .await
            .expect("refresh_token"),
        None
    );
    assert_eq!(
        store
            .families_of_user(&alice.id)
            .await
            .expect("families_of_user"),
        vec![original],
        "refused families are not listed"
    );
}

/// Rotation marks the old token rotated at `now`, stores the new one in the same family, moves
/// the family to the new token's generation and its activity and idle expiry; a rotated token
/// does not rotate again (and says when it was rotated), an unknown one is `Unknown`, and a
/// revoked family's token does not rotate (`Revoked`, nothing stored).
pub async fn rotation<S: UserStore + RefreshStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    let (f, first) = with_family(&store, &alice.id, T0).await;
    let (bystander, bystander_first) = with_family(&store, &alice.id, T0 + 1).await;

    let second = token_in(&f.id, T0 + 60_000, 1);
    assert_eq!(
        store
            .rotate_refresh_token(&first.hash, &second, at(T0 + 60_000), at(T0 + 2 * HOUR))
            .await
            .expect("rotate_refresh_token"),
        Rotation::Rotated,
        "a live token rotates"
    );
    let moved = RefreshFamily {
        last_used_at: at(T0 + 60_000),
        expires_at: at(T0 + 2 * HOUR),
        generation: 1,
        dpop_jkt: None,
        ..f.clone()
    };
    assert_eq!(
        stored_token(&store, &first.hash).await,
        (
            RefreshTokenRecord {
                rotated_at: Some(at(T0 + 60_000)),
                ..first.clone()
            },
            moved.clone()
        ),
        "the old token is marked rotated at `now`; the family's generation, activity and expiry move"
    );
    assert_eq!(
        stored_token(&store, &second.hash).await,
        (second.clone(), moved.clone()),
        "the new token is stored in the same family"
    );
    assert_eq!(
        stored_token(&store, &bystander_first.hash).await,
        (bystander_first.clone(), bystander.clone()),
        "other families are untouched"
    );

    assert_eq!(
        store
            .rotate_refresh_token(
                &first.hash,
                &token_in(&f.id, T0 + 120_000, 1),
                at(T0 + 120_000),
                at(T0 + 3 * HOUR)
            )
            .await
            .expect("rotate_refresh_token"),
        Rotation::AlreadyRotated {
            at: at(T0 + 60_000)
        },
        "a rotated token does not rotate again, and says when it was rotated"
    );
    assert_eq!(
        stored_family(&store, &f.id).await,
        moved,
        "a refused rotation does not move the family"
    );
    assert_eq!(
        store
            .rotate_refresh_token(
                &fresh_hash(),
                &token_in(&f.id, T0 + 120_000, 1),
                at(T0 + 120_000),
                at(T0 + 3 * HOUR)
            )
            .await
            .expect("rotate_refresh_token"),
        Rotation::Unknown,
        "a token that does not exist is Unknown"
    );

    // The chain goes on: the new token rotates in turn.
    let third = token_in(&f.id, T0 + 180_000, 2);
    assert_eq!(
        store
            .rotate_refresh_token(&second.hash, &third, at(T0 + 180_000), at(T0 + 4 * HOUR))
            .await
            .expect("rotate_refresh_token"),
        Rotation::Rotated
    );
    let (_, after) = stored_token(&store, &third.hash).await;
    assert_eq!((after.expires_at, after.generation), (at(T0 + 4 * HOUR), 2));

    // A revoked family's live token does not rotate: a refresh racing a revocation loses.
    assert!(
        store
            .revoke_family(&f.id, at(T0 + 200_000), "logout")
            .await
            .expect("revoke_family")
    );
    let revoked = stored_family(&store, &f.id).await;
    let fourth = token_in(&f.id, T0 + 240_000, 3);
    assert_eq!(
        store
            .rotate_refresh_token(&third.hash, &fourth, at(T0 + 240_000), at(T0 + 5 * HOUR))
            .await
            .expect("rotate_refresh_token"),
        Rotation::Revoked,
        "rotation refuses a revoked family"
    );
    assert_eq!(
        store
            .refresh_token(&fourth.hash)
            .await
            .expect("refresh_token"),
        None,
        "a refused rotation stores no token"
    );
    assert_eq!(
        stored_token(&store, &third.hash).await,
        (third.clone(), revoked.clone()),
        "a refused rotation leaves the token unrotated and the family as it was"
    );
    assert_eq!(
        (revoked.revoked_at, revoked.revoked_reason.as_deref()),
        (Some(at(T0 + 200_000)), Some("logout")),
    );
}

/// A family goes on along one branch: of two tokens of the same generation (the second added in
/// the grace of a concurrent refresh), the first to rotate moves the family on, and the other is
/// `Superseded` from then on and stores nothing. A new token must be of the next generation.
pub async fn one_branch<S: UserStore + RefreshStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    let (f, first) = with_family(&store, &alice.id, T0).await;
    let sibling = token_of(&f.id, T0 + 1_000);
    assert!(
        store
            .add_refresh_token(&sibling, at(T0 + 1_000), at(T0 + HOUR))
            .await
            .expect("add_refresh_token")
    );
    assert!(
        store
            .rotate_refresh_token(
                &first.hash,
                &token_in(&f.id, T0 + 2_000, 0),
                at(T0 + 2_000),
                at(T0 + HOUR)
            )
            .await
            .is_err(),
        "a new token must be of the next generation"
    );
    let next = token_in(&f.id, T0 + 3_000, 1);
    assert_eq!(
        store
            .rotate_refresh_token(&sibling.hash, &next, at(T0 + 3_000), at(T0 + 2 * HOUR))
            .await
            .expect("rotate_refresh_token"),
        Rotation::Rotated,
        "the first of the generation to rotate goes on"
    );
    let family = stored_family(&store, &f.id).await;
    assert_eq!(family.generation, 1);
    let branch = token_in(&f.id, T0 + 4_000, 1);
    assert_eq!(
        store
            .rotate_refresh_token(&first.hash, &branch, at(T0 + 4_000), at(T0 + 3 * HOUR))
            .await
            .expect("rotate_refresh_token"),
        Rotation::Superseded,
        "the other token of that generation no longer rotates"
    );
    assert_eq!(
        store
            .refresh_token(&branch.hash)
            .await
            .expect("refresh_token"),
        None,
        "a superseded rotation stores no token"
    );
    assert_eq!(
        stored_token(&store, &first.hash).await,
        (first.clone(), family.clone()),
        "a superseded token stays unrotated, and the family as it was"
    );
    assert!(
        !store
            .add_refresh_token(
                &token_of(&f.id, T0 + 5_000),
                at(T0 + 5_000),
                at(T0 + 3 * HOUR)
            )
            .await
            .expect("add_refresh_token"),
        "no token joins a generation the family has left"
    );
    assert!(
        store
            .add_refresh_token(
                &token_in(&f.id, T0 + 5_000, 1),
                at(T0 + 5_000),
                at(T0 + 3 * HOUR)
            )
            .await
            .expect("add_refresh_token"),
        "a token joins the current generation"
    );
}

/// Of many tokens of one generation rotating at once, exactly one moves the family on; every
/// other is `Superseded` and stores nothing.
pub async fn concurrent_branches<S: UserStore + RefreshStore>(store: S) {
    let store = Arc::new(store);
    let alice = with_user(&*store, "alice").await;
    let (f, first) = with_family(&*store, &alice.id, T0).await;
    let mut tokens = vec![first];
    for i in 1..RACERS {
        let sibling = token_of(&f.id, T0 + i as i64);
        assert!(
            store
                .add_refresh_token(&sibling, at(T0 + i as i64), at(T0 + HOUR))
                .await
                .expect("add_refresh_token")
        );
        tokens.push(sibling);
    }
    let mut racers = JoinSet::new();
    for (racer, token) in tokens.into_iter().enumerate() {
        let store = Arc::clone(&store);
        let new = token_in(&f.id, T0 + 1_000, 1);
        racers.spawn(async move {
            let outcome = store
                .rotate_refresh_token(&token.hash, &new, at(T0 + 1_000), at(T0 + 2 * HOUR))
                .await
                .expect("rotate_refresh_token");
            (racer, new, outcome)
        });
    }
    let outcomes = racers.join_all().await;
    let winners = outcomes
        .iter()
        .filter(|(_, _, outcome)| *outcome == Rotation::Rotated)
        .count();
    assert_eq!(winners, 1, "exactly one of {RACERS} siblings goes on");
    for (_, new, outcome) in &outcomes {
        if *outcome != Rotation::Rotated {
            assert_eq!(*outcome, Rotation::Superseded);
            assert_eq!(
                store.refresh_token(&new.hash).await.expect("refresh_token"),
                None,
                "a superseded rotation stores no token"
            );
        }
    }
    assert_eq!(stored_family(&*store, &f.id).await.generation, 1);
}

/// Of many rotations of one token racing each other, exactly one wins, and only the winner moves
/// the family.
pub async fn concurrent_rotation<S: UserStore + RefreshStore>(store: S) {
    let store = Arc::new(store);
    let alice = with_user(&*store, "alice").await;
    let (f, first) = with_family(&*store, &alice.id, T0).await;

    let mut racers = JoinSet::new();
    for racer in 0..RACERS {
        let store = Arc::clone(&store);
        let old = first.hash;
        let new = token_in(&f.id, T0 + 1_000 + racer as i64, 1);
        racers.spawn(async move {
            let now = at(T0 + 1_000 + racer as i64);
            let outcome = store
                .rotate_refresh_token(&old, &new, now, at(T0 + HOUR + racer as i64))
                .await
                .expect("rotate_refresh_token");
            (racer, new, outcome)
        });
    }
    let outcomes = racers.join_all().await;
    let winners: Vec<&(usize, RefreshTokenRecord, Rotation)> = outcomes
        .iter()
        .filter(|(_, _, outcome)| *outcome == Rotation::Rotated)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one of {RACERS} concurrent rotations of a token wins"
    );
    let (winner, winning_token, _) = winners[0];
    let rotated_at = at(T0 + 1_000 + *winner as i64);
    for (racer, new, outcome) in &outcomes {
        if racer == winner {
            continue;
        }
        assert_eq!(
            *outcome,
            Rotation::AlreadyRotated { at: rotated_at },
            "every loser sees the winner's rotation time"
        );
        assert_eq!(
            store.refresh_token(&new.hash).await.expect("refresh_token"),
            None,
            "a losing rotation stores no token"
        );
    }
    let (old, family) = stored_token(&*store, &first.hash).await;
    assert_eq!(old.rotated_at, Some(rotated_at));
    assert_eq!(
        (family.last_used_at, family.expires_at),
        (rotated_at, at(T0 + HOUR + *winner as i64)),
        "the family moved by the winner, and only by it"
    );
    assert_eq!(
        stored_token(&*store, &winning_token.hash).await.0,
        winning_token.clone()
    );
}

/// A rotation whose new token hash is taken, or that names another family, is refused and changes
/// nothing: the old token stays live and still rotates afterwards.
pub async fn rotation_refusals<S: UserStore + RefreshStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    let (f, first) = with_family(&store, &alice.id, T0).await;
    let (other, other_first) = with_family(&store, &alice.id, T0 + 1).await;

    let clash = RefreshTokenRecord {
        hash: other_first.hash,
        ..token_in(&f.id, T0 + 60_000, 1)
    };
    assert!(
        matches!(
            store
                .rotate_refresh_token(&first.hash, &clash, at(T0 + 60_000), at(T0 + 2 * HOUR))
                .await,
            Err(StoreError::Conflict(_))
        ),
        "a new token whose hash exists is a Conflict"
    );
    let elsewhere = token_in(&other.id, T0 + 60_000, 1);
    assert!(
        store
            .rotate_refresh_token(&first.hash, &elsewhere, at(T0 + 60_000), at(T0 + 2 * HOUR))
            .await
            .is_err(),
        "a token cannot rotate into another family"
    );
    assert_eq!(
        store
            .refresh_token(&elsewhere.hash)
            .await
            .expect("refresh_token"),
        None
    );
    assert_eq!(
        stored_token(&store, &first.hash).await,
        (first.clone(), f.clone()),
        "a failed rotation leaves the old token live and the family as it was"
    );
    assert_eq!(
        stored_token(&store, &other_first.hash).await,
        (other_first.clone(), other.clone()),
        "a failed rotation leaves the clashing token alone"
    );
    assert_eq!(
        store
            .rotate_refresh_token(
                &first.hash,
                &token_in(&f.id, T0 + 60_000, 1),
                at(T0 + 60_000),
                at(T0 + 2 * HOUR)
            )
            .await
            .expect("rotate_refresh_token"),
        Rotation::Rotated,
        "after a failed rotation the token still rotates"
    );
}

/// A token added to a live family is stored and moves the family without rotating anything; a
/// taken hash, a missing family or a revoked one is refused and changes nothing.
pub async fn add_token<S: UserStore + RefreshStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    let (f, first) = with_family(&store, &alice.id, T0).await;

    let extra = token_of(&f.id, T0 + 60_000);
    assert!(
        store
            .add_refresh_token(&extra, at(T0 + 60_000), at(T0 + 2 * HOUR))
            .await
            .expect("add_refresh_token"),
        "a token joins a live family"
    );
    let moved = RefreshFamily {
        last_used_at: at(T0 + 60_000),
        expires_at: at(T0 + 2 * HOUR),
        ..f.clone()
    };
    assert_eq!(
        stored_token(&store, &extra.hash).await,
        (extra.clone(), moved.clone()),
        "the added token is stored and the family moves"
    );
    assert_eq!(
        stored_token(&store, &first.hash).await,
        (first.clone(), moved.clone()),
        "adding rotates nothing"
    );

    let clash = RefreshTokenRecord {
        hash: first.hash,
        ..token_of(&f.id, T0 + 90_000)
    };
    assert!(
        matches!(
            store
                .add_refresh_token(&clash, at(T0 + 90_000), at(T0 + 3 * HOUR))
                .await,
            Err(StoreError::Conflict(_))
        ),
        "a token hash clash is a Conflict"
    );
    assert_eq!(
        stored_family(&store, &f.id).await,
        moved,
        "a refused token does not move the family"
    );

    let ghost = token_of(&FamilyId::generate().expect("OS randomness"), T0);
    assert!(
        !store
            .add_refresh_token(&ghost, at(T0 + 60_000), at(T0 + 2 * HOUR))
            .await
            .expect("add_refresh_token"),
        "a token of a missing family is refused"
    );
    assert_eq!(
        store
            .refresh_token(&ghost.hash)
            .await
            .expect("refresh_token"),
        None
    );

    assert!(
        store
            .revoke_family(&f.id, at(T0 + 100_000), "reuse")
            .await
            .expect("revoke_family")
    );
    let late = token_of(&f.id, T0 + 120_000);
    assert!(
        !store
            .add_refresh_token(&late, at(T0 + 120_000), at(T0 + 4 * HOUR))
            .await
            .expect("add_refresh_token"),
        "a token of a revoked family is refused"
    );
    assert_eq!(
        store
            .refresh_token(&late.hash)
            .await
            .expect("refresh_token"),
        None,
        "a refused token is not stored"
    );
    let after = stored_family(&store, &f.id).await;
    assert_eq!(
        (after.last_used_at, after.expires_at),
        (moved.last_used_at, moved.expires_at),
        "a refused token does not move the family"
    );
}

/// Revoking a live family sets only `revoked_at` and the reason, once: a second revocation keeps
/// the first's, and a missing family is not revoked. Its tokens are still found.
pub async fn revoke_family<S: UserStore + RefreshStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    let (f, first) = with_family(&store, &alice.id, T0).await;
    let (other, _) = with_family(&store, &alice.id, T0 + 1).await;

    assert!(
        store
            .revoke_family(&f.id, at(T0 + HOUR), "reuse detected")
            .await
            .expect("revoke_family"),
        "a live family is revoked"
    );
    let revoked = RefreshFamily {
        revoked_at: Some(at(T0 + HOUR)),
        revoked_reason: Some("reuse detected".into()),
        ..f.clone()
    };
    assert_eq!(
        stored_family(&store, &f.id).await,
        revoked,
        "revocation sets revoked_at and the reason, nothing else"
    );
    assert_eq!(
        stored_token(&store, &first.hash).await,
        (first.clone(), revoked.clone()),
        "a revoked family's tokens are still found (the service decides)"
    );
    assert!(
        !store
            .revoke_family(&f.id, at(T0 + 2 * HOUR), "logout")
            .await
            .expect("revoke_family"),
        "a revoked family is not revoked again"
    );
    assert_eq!(
        stored_family(&store, &f.id).await,
        revoked,
        "the first revocation's time and reason stay"
    );
    assert!(
        !store
            .revoke_family(
                &FamilyId::generate().expect("OS randomness"),
                at(T0),
                "logout"
            )
            .await
            .expect("revoke_family"),
        "a missing family is not revoked"
    );
    assert_eq!(
        stored_family(&store, &other.id).await,
        other,
        "other families are untouched"
    );
}

/// `families_of_user` lists a user's families, and only theirs, oldest first, revoked and expired
/// ones included until swept.
pub async fn families_of_user<S: UserStore + RefreshStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    let bob = with_user(&store, "bob").await;
    let carol = with_user(&store, "carol").await;
    let (newest, newest_first) = family(&alice.id, T0 + 300, T0 + HOUR, T0 + 12 * HOUR);
    let (oldest, oldest_first) = family(&alice.id, T0 + 100, T0 + HOUR, T0 + 12 * HOUR);
    // Expired families are listed until swept.
    let (middle, middle_first) = family(&alice.id, T0 + 200, T0 + 250, T0 + 12 * HOUR);
    let (bobs, bobs_first) = family(&bob.id, T0 + 150, T0 + HOUR, T0 + 12 * HOUR);
    for (f, first) in [
        (&newest, &newest_first),
        (&oldest, &oldest_first),
        (&bobs, &bobs_first),
        (&middle, &middle_first),
    ] {
        store.create_family(f, first).await.expect("create_family");
    }
    // Revoked families are listed too.
    assert!(
        store
            .revoke_family(&newest.id, at(T0 + 400), "logout")
            .await
            .expect("revoke_family")
    );
    let newest = stored_family(&store, &newest.id).await;
    assert_eq!(
        store
            .families_of_user(&alice.id)
            .await
            .expect("families_of_user"),
        vec![oldest, middle, newest],
        "a user's families, and only theirs, oldest first"
    );
    assert_eq!(
        store
            .families_of_user(&bob.id)
            .await
            .expect("families_of_user"),
        vec![bobs]
    );
    assert_eq!(
        store
            .families_of_user(&carol.id)
            .await
            .expect("families_of_user"),
        Vec::new(),
        "a user without families has none"
    );
    assert_eq!(
        store
            .families_of_user(&UserId::generate().expect("OS randomness"))
            .await
            .expect("families_of_user"),
        Vec::new()
    );
}

/// The sweep deletes families past their idle or absolute expiry (or expiring at `now`) up to its
/// limit, with all their tokens, counts them, and keeps live families and their tokens.
pub async fn family_sweep<S: UserStore + RefreshStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    let bob = with_user(&store, "bob").await;
    let now = T0 + 300;
    // (idle expiry, absolute expiry): expired by idleness, by age, exactly now, or live.
    let shapes = [
        (T0 + 500, T0 + 600),
        (T0 + 100, T0 + 600),
        (T0 + 500, T0 + 200),
        (T0 + 400, T0 + 700),
        (now, T0 + 600),
        (T0 + 600, now),
    ];
    let mut families = Vec::new();
    for (i, (expires_at, absolute)) in shapes.into_iter().enumerate() {
        let owner = if i % 2 == 0 { &alice.id } else { &bob.id };
        let (f, first) = family(owner, T0 + i as i64, expires_at, absolute);
        store
            .create_family(&f, &first)
            .await
            .expect("create_family");
        // A second token per family: the sweep takes every token of a family with it.
        let second = token_of(&f.id, T0 + 10 + i as i64);
        assert!(
            store
                .add_refresh_token(&second, f.last_used_at, f.expires_at)
                .await
                .expect("add_refresh_token")
        );
        families.push((f, [first, second]));
    }
    let is_expired =
        |f: &RefreshFamily| f.expires_at <= at(now) || f.absolute_expires_at <= at(now);

    assert_eq!(
        store
            .delete_expired_families(at(now), 0)
            .await
            .expect("delete_expired_families"),
        0,
        "a limit of 0 deletes nothing"
    );
    assert_eq!(
        store
            .delete_expired_families(at(now), 3)
            .await
            .expect("delete_expired_families"),
        3,
        "the sweep respects its limit"
    );
    assert_eq!(
        store
            .delete_expired_families(at(now), 10)
            .await
            .expect("delete_expired_families"),
        1,
        "families past either expiry, or expiring exactly now, are expired"
    );
    assert_eq!(
        store
            .delete_expired_families(at(now), 10)
            .await
            .expect("delete_expired_families"),
        0,
        "nothing is left to sweep"
    );

    for (f, tokens) in &families {
        let found = store.family(&f.id).await.expect("family");
        if is_expired(f) {
            assert_eq!(found, None, "an expired family is swept");
            for token in tokens {
                assert_eq!(
                    store
                        .refresh_token(&token.hash)
                        .await
                        .expect("refresh_token"),
                    None,
                    "a swept family's tokens go with it"
                );
            }
        } else {
            assert_eq!(found.as_ref(), Some(f), "a live family survives the sweep");
            for token in tokens {
                assert_eq!(
                    stored_token(&store, &token.hash).await,
                    (token.clone(), f.clone()),
                    "a live family keeps its tokens"
                );
            }
        }
    }
    for user in [&alice.id, &bob.id] {
        let expected: Vec<RefreshFamily> = families
            .iter()
            .map(|(f, _)| f)
            .filter(|f| &f.user_id == user && !is_expired(f))
            .cloned()
            .collect();
        assert_eq!(
            store
                .families_of_user(user)
                .await
                .expect("families_of_user"),
            expected,
            "swept families leave the per-user listing"
        );
    }
    assert_eq!(
        store
            .delete_expired_families(at(T0 + HOUR), usize::MAX)
            .await
            .expect("delete_expired_families"),
        2,
        "an unbounded limit sweeps everything expired"
    );
}

/// The sweep goes by the latest idle expiry, as moved by rotation and by added tokens.
pub async fn family_sweep_follows_refresh<S: UserStore + RefreshStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    let (rotated, rotated_first) = family(&alice.id, T0, T0 + 100, T0 + HOUR);
    let (added, _) = family(&alice.id, T0 + 1, T0 + 100, T0 + HOUR);
    let (shortened, shortened_first) = family(&alice.id, T0 + 2, T0 + HOUR, T0 + 2 * HOUR);
    let (capped, capped_first) = family(&alice.id, T0 + 3, T0 + 100, T0 + 150);
    for (f, first) in [
        (&rotated, &rotated_first),
        (&added, &token_of(&added.id, T0 + 1)),
        (&shortened, &shortened_first),
        (&capped, &capped_first),
    ] {
        store.create_family(f, first).await.expect("create_family");
    }
    assert_eq!(
        store
            .rotate_refresh_token(
                &rotated_first.hash,
                &token_in(&rotated.id, T0 + 50, 1),
                at(T0 + 50),
                at(T0 + HOUR)
            )
            .await
            .expect("rotate_refresh_token"),
        Rotation::Rotated
    );
    assert!(
        store
            .add_refresh_token(&token_of(&added.id, T0 + 50), at(T0 + 50), at(T0 + HOUR))
            .await
            .expect("add_refresh_token")
    );
    assert_eq!(
        store
            .rotate_refresh_token(
                &shortened_first.hash,
                &token_in(&shortened.id, T0 + 50, 1),
                at(T0 + 50),
                at(T0 + 100)
            )
            .await
            .expect("rotate_refresh_token"),
        Rotation::Rotated
    );
    // Moving the idle expiry past the absolute one does not keep a family alive.
    assert_eq!(
        store
            .rotate_refresh_token(
                &capped_first.hash,
                &token_in(&capped.id, T0 + 50, 1),
                at(T0 + 50),
                at(T0 + HOUR)
            )
            .await
            .expect("rotate_refresh_token"),
        Rotation::Rotated
    );

    assert_eq!(
        store
            .delete_expired_families(at(T0 + 200), 10)
            .await
            .expect("delete_expired_families"),
        2
    );
    for (f, survives) in [
        (&rotated, true),
        (&added, true),
        (&shortened, false),
        (&capped, false),
    ] {
        assert_eq!(
            store.family(&f.id).await.expect("family").is_some(),
            survives,
            "the sweep follows the family's current expiries"
        );
    }
}

/// How a family's login was authenticated round-trips (through the family and its tokens), a
/// step-up replaces it, and a revoked family takes none.
pub async fn family_auth<S: UserStore + RefreshStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    let (family, first) = family(&alice.id, T0, T0 + HOUR, T0 + 2 * HOUR);
    store
        .create_family(&family, &first)
        .await
        .expect("create_family");
    let read = store
        .family(&family.id)
        .await
        .expect("family")
        .expect("a family");
    assert_eq!(read.auth, family.auth);
    let stepped = family
        .auth
        .with_second_factor(tessera_core::SecondFactorMethod::RecoveryCode, at(T0 + 5));
    assert!(
        store
            .set_family_auth(&family.id, &stepped)
            .await
            .expect("set_family_auth")
    );
    let (_, through_token) = store
        .refresh_token(&first.hash)
        .await
        .expect("refresh_token")
        .expect("the token");
    assert_eq!(through_token.auth, stepped);
    store
        .revoke_family(&family.id, at(T0 + 6), "logout")
        .await
        .expect("revoke_family");
    assert!(
        !store
            .set_family_auth(&family.id, &family.auth)
            .await
            .expect("set_family_auth"),
        "a revoked family"
    );
}
