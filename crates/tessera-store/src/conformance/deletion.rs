//! The [`UserStore::delete_user`] checks, on a backend that holds the account and what hangs off
//! it (sessions, refresh families, live access tokens, mailed codes, queued mail, the audit log):
//! everything of the user goes at once, the audit log keeps the user id but not the username, a repeat finishes an
//! interrupted erasure, and the freed username starts a new account from nothing.

use serde_json::{Value, json};
use tessera_core::store::{EventStore, RefreshStore, RevocationStore, SessionStore, UserStore};
use tessera_core::{
    AccountCode, AllowedToken, ClientInfo, CodePurpose, CsrfToken, EmailAddress, EventKind,
    FamilyId, LoginModel, MailId, MailStore, NewEvent, QueuedMail, RefreshFamily,
    RefreshTokenRecord, SecurityEvent, Session, SessionData, SessionHandle, SessionId, TokenHash,
    User, UserDeletion, UserId,
};

use super::{HOUR, T0, at, with_user};

/// What a backend that erases accounts holds.
pub trait ErasingStore:
    UserStore + SessionStore + RefreshStore + RevocationStore + EventStore + MailStore
{
}

impl<S> ErasingStore for S where
    S: UserStore + SessionStore + RefreshStore + RevocationStore + EventStore + MailStore
{
}

/// What one user holds: a session with data, a refresh family with its token, a live token, a
/// code of each purpose and a queued mail.
struct Holdings {
    session: Session,
    family: RefreshFamily,
    token: RefreshTokenRecord,
    jti: String,
    recovery: TokenHash,
    verify: TokenHash,
    mail: MailId,
}

async fn code<S: ErasingStore>(store: &S, user: &UserId, purpose: CodePurpose) -> TokenHash {
    let code = AccountCode {
        hash: SessionId::generate().expect("OS randomness").hash(),
        user_id: user.clone(),
        purpose,
        email_key: format!("{user}@example.org").to_lowercase(),
        created_at: at(T0),
        expires_at: at(T0 + HOUR),
    };
    assert!(store.create_code(&code).await.expect("create_code"));
    code.hash
}

fn mail_for(user: Option<&UserId>) -> QueuedMail {
    QueuedMail {
        id: MailId::generate().expect("OS randomness"),
        user_id: user.cloned(),
        sealed: b"sealed".to_vec(),
        created_at: at(T0),
        not_after: at(T0 + HOUR),
        attempts: 0,
        next_attempt_at: at(T0),
        last_error: None,
    }
}

async fn holdings<S: ErasingStore>(store: &S, user: &UserId) -> Holdings {
    let secret = SessionId::generate().expect("OS randomness");
    let session = Session {
        handle: SessionHandle::generate().expect("OS randomness"),
        user_id: user.clone(),
        secret_hash: secret.hash(),
        csrf_token: CsrfToken::generate().expect("OS randomness"),
        created_at: at(T0),
        last_seen_at: at(T0),
        expires_at: at(T0 + HOUR),
        absolute_expires_at: at(T0 + 12 * HOUR),
        client: ClientInfo::default(),
        data: SessionData::new(json!({"cart": [1, 2]})),
        data_version: 0,
        auth: tessera_core::AuthContext::password(at(T0)),
    };
    store
        .create_session(&session)
        .await
        .expect("create_session");
    let family = RefreshFamily {
        id: FamilyId::generate().expect("OS randomness"),
        user_id: user.clone(),
        model: LoginModel::Token,
        created_at: at(T0),
        last_used_at: at(T0),
        expires_at: at(T0 + HOUR),
        absolute_expires_at: at(T0 + 12 * HOUR),
        revoked_at: None,
        revoked_reason: None,
        client: ClientInfo::default(),
        generation: 0,
        dpop_jkt: None,
        auth: tessera_core::AuthContext::password(at(T0)),
    };
    let token = RefreshTokenRecord {
        hash: SessionId::generate().expect("OS randomness").hash(),
        family_id: family.id.clone(),
        issued_at: at(T0),
        rotated_at: None,
        generation: 0,
    };
    store
        .create_family(&family, &token)
        .await
        .expect("create_family");
    let jti = format!("jti-{user}");
    store
        .allow_token(&AllowedToken {
            jti: jti.clone(),
            family_id: family.id.clone(),
            user_id: user.clone(),
            expires_at: at(T0 + HOUR),
        })
        .await
        .expect("allow_token");
    let recovery = code(store, user, CodePurpose::Recovery).await;
    let verify = code(store, user, CodePurpose::VerifyEmail).await;
    let mail = mail_for(Some(user));
    store.enqueue_mail(&mail).await.expect("enqueue_mail");
    Holdings {
        session,
        family,
        token,
        jti,
        recovery,
        verify,
        mail: mail.id,
    }
}

async fn record<S: EventStore>(store: &S, kind: EventKind, user: Option<&UserId>, detail: Value) {
    store
        .record_event(&NewEvent {
            at: at(T0),
            kind,
            user_id: user.cloned(),
            detail,
        })
        .await
        .expect("record_event");
}

fn deletion(user: &User, by: &UserId) -> UserDeletion {
    UserDeletion {
        user: user.id.clone(),
        username: user.username.clone(),
        event: NewEvent {
            at: at(T0 + 1),
            kind: EventKind::AccountDeleted,
            user_id: Some(user.id.clone()),
            detail: json!({"by": by}),
        },
    }
}

async fn all_events<S: EventStore>(store: &S) -> Vec<SecurityEvent> {
    let mut events = store.events(None, 1000).await.expect("events");
    events.reverse();
    events
}

async fn holds_nothing<S: ErasingStore>(store: &S, user: &User, held: &Holdings) {
    assert_eq!(
        store.user_by_id(&user.id).await.expect("user_by_id"),
        None,
        "the user row is gone"
    );
    assert_eq!(
        store
            .user_by_username(&user.username)
            .await
            .expect("user_by_username"),
        None,
        "the username no longer names an account"
    );
    assert_eq!(
        store
            .session_by_secret(&held.session.secret_hash)
            .await
            .expect("session_by_secret"),
        None,
        "the user's session is gone"
    );
    assert!(
        store
            .sessions_of_user(&user.id)
            .await
            .expect("sessions_of_user")
            .is_empty(),
        "no session is indexed under the user"
    );
    assert!(
        !store
            .replace_session_data(&held.session.handle, 0, &json!({}))
            .await
            .expect("replace_session_data"),
        "the session's data is gone with it"
    );
    assert_eq!(
        store
            .refresh_token(&held.token.hash)
            .await
            .expect("refresh_token"),
        None,
        "the user's refresh token is gone"
    );
    assert_eq!(
        store.family(&held.family.id).await.expect("family"),
        None,
        "the user's refresh family is gone"
    );
    assert!(
        store
            .families_of_user(&user.id)
            .await
            .expect("families_of_user")
            .is_empty(),
        "no family is indexed under the user"
    );
    assert!(
        !store
            .allowed_tokens(at(T0))
            .await
            .expect("allowed_tokens")
            .iter()
            .any(|t| t.user_id == user.id || t.jti == held.jti),
        "the user's live access token is gone"
    );
    assert_eq!(
        store
            .use_recovery_code(&held.recovery, "$argon2id$x", at(T0))
            .await
            .expect("use_recovery_code"),
        None,
        "the user's recovery code is gone"
    );
    assert_eq!(
        store
            .use_verification_code(&held.verify, at(T0))
            .await
            .expect("use_verification_code"),
        None,
        "the user's verification code is gone"
    );
    assert!(
        !store
            .retry_mail(&held.mail, at(T0), "x")
            .await
            .expect("retry_mail"),
        "the user's queued mail is gone"
    );
}

/// Deleting a user erases the row and everything of it the backend holds, and nothing of anyone
/// else; the audit log keeps the user's events by id with the username taken out (also from
/// failed logins that attempted it, under any spelling a login reads as the same account) and
/// gains the deletion event; a repeat finds nothing to do; the freed name starts afresh.
pub async fn delete_user<S: ErasingStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    let address = EmailAddress::parse("Alice@Example.org").expect("valid address");
    assert!(
        store
            .set_email(&alice.id, Some(&address))
            .await
            .expect("set_email")
    );
    let bob = with_user(&store, "bob").await;
    let admin = with_user(&store, "admin").await;
    let held = holdings(&store, &alice.id).await;
    let bobs = holdings(&store, &bob.id).await;
    let to_nobody = mail_for(None);
    store.enqueue_mail(&to_nobody).await.expect("enqueue_mail");
    record(
        &store,
        EventKind::LoginSucceeded,
        Some(&alice.id),
        json!({"model": "session", "ip": "127.0.0.1"}),
    )
    .await;
    record(
        &store,
        EventKind::PasswordChanged,
        Some(&alice.id),
        json!({"username": "alice"}),
    )
    .await;
    for attempted in ["alice", "ALICE", "Ａｌｉｃｅ", "alicia", "bob"] {
        record(
            &store,
            EventKind::LoginFailed,
            None,
            json!({"model": "token", "username": attempted, "ip": "127.0.0.1"}),
        )
        .await;
    }
    record(
        &store,
        EventKind::LoginSucceeded,
        Some(&bob.id),
        json!({"model": "token", "username": "alice"}),
    )
    .await;

    assert!(
        store
            .delete_user(&deletion(&alice, &admin.id))
            .await
            .expect("delete_user"),
        "deleting an existing user answers true"
    );
    holds_nothing(&store, &alice, &held).await;

    // Bob's things are untouched.
    assert!(
        store
            .user_by_id(&bob.id)
            .await
            .expect("user_by_id")
            .is_some()
    );
    assert!(
        store
            .session_by_secret(&bobs.session.secret_hash)
            .await
            .expect("session_by_secret")
            .is_some(),
        "another user's session stays"
    );
    assert!(
        store
            .refresh_token(&bobs.token.hash)
            .await
            .expect("refresh_token")
            .is_some(),
        "another user's refresh token stays"
    );
    assert!(
        store
            .allowed_tokens(at(T0))
            .await
            .expect("allowed_tokens")
            .iter()
            .any(|t| t.jti == bobs.jti),
        "another user's live token stays"
    );
    assert_eq!(
        store
            .user_by_email(address.key())
            .await
            .expect("user_by_email"),
        None,
        "the address no longer names an account"
    );
    let mut left: Vec<MailId> = store
        .claim_mail(at(T0), at(T0 + HOUR), 100)
        .await
        .expect("claim_mail")
        .into_iter()
        .map(|m| m.id)
        .collect();
    left.sort();
    let mut expected = vec![bobs.mail.clone(), to_nobody.id.clone()];
    expected.sort();
    assert_eq!(
        left, expected,
        "another user's mail and mail of no account stay; the user's went"
    );

    let events = all_events(&store).await;
    assert_eq!(events.len(), 9, "one event more: the deletion's");
    let last = events.last().expect("an event");
    assert_eq!(last.kind, EventKind::AccountDeleted);
    assert_eq!(last.user_id.as_ref(), Some(&alice.id));
    assert_eq!(last.detail, json!({"by": admin.id}));
    let alices: Vec<&SecurityEvent> = events
        .iter()
        .filter(|e| e.user_id.as_ref() == Some(&alice.id))
        .collect();
    assert_eq!(alices.len(), 3, "the user's events stay, by id");
    for event in &alices {
        assert!(
            event.detail.get("username").is_none(),
            "no username in the user's events: {event:?}"
        );
    }
    assert_eq!(
        alices[0].detail,
        json!({"model": "session", "ip": "127.0.0.1"}),
        "what is not the username stays"
    );
    let failed: Vec<&Value> = events
        .iter()
        .filter(|e| e.kind == EventKind::LoginFailed)
        .map(|e| &e.detail)
        .collect();
    for erased in &failed[..3] {
        assert_eq!(
            **erased,
            json!({"model": "token", "ip": "127.0.0.1", "username_erased": true}),
            "a failed login that named the account loses the name"
        );
    }
    assert_eq!(failed[3]["username"], "alicia", "other names stay");
    assert_eq!(failed[4]["username"], "bob", "other names stay");
    let bobs_event = events
        .iter()
        .find(|e| e.user_id.as_ref() == Some(&bob.id))
        .expect("bob's event");
    assert_eq!(
        bobs_event.detail["username"], "alice",
        "another user's events are not rewritten"
    );
    let text = serde_json::to_string(
        &events
            .iter()
            .filter(|e| e.user_id.as_ref() != Some(&bob.id))
            .map(|e| &e.detail)
            .collect::<Vec<_>>(),
    )
    .expect("JSON");
    assert!(
        !text.to_lowercase().contains("\"alice\""),
        "the username appears nowhere: {text}"
    );

    // A repeat: nothing left to do, no second event.
    assert!(
        !store
            .delete_user(&deletion(&alice, &admin.id))
            .await
            .expect("delete_user again"),
        "deleting a user that is gone answers false"
    );
    assert_eq!(
        all_events(&store).await.len(),
        9,
        "a repeat records nothing"
    );

    // The name and the address are free, and the new account has nothing of the old one.
    let again = with_user(&store, "alice").await;
    assert!(
        store
            .set_email(&again.id, Some(&address))
            .await
            .expect("set_email"),
        "the address of a deleted account is free again"
    );
    assert_ne!(again.id, alice.id);
    assert!(
        store
            .sessions_of_user(&again.id)
            .await
            .expect("sessions_of_user")
            .is_empty()
    );
    assert!(
        store
            .families_of_user(&again.id)
            .await
            .expect("families_of_user")
            .is_empty()
    );
    assert_eq!(
        store
            .delete_expired_codes(at(T0 + 2 * HOUR), 100)
            .await
            .expect("delete_expired_codes"),
        2,
        "of the codes, only the other user's two are left"
    );
}

/// A deletion interrupted after the user row went (or one that raced a login writing after it)
/// is finished by a repeat: whatever of the user is left goes, and nothing else does.
pub async fn delete_user_finishes_the_job<S: ErasingStore>(store: S) {
    let alice = with_user(&store, "alice").await;
    let admin = with_user(&store, "admin").await;
    let first = deletion(&alice, &admin.id);
    // Live tokens need no account row: one written after the row went is still erased.
    assert!(store.delete_user(&first).await.expect("delete_user"));
    store
        .allow_token(&AllowedToken {
            jti: "late".into(),
            family_id: FamilyId::generate().expect("OS randomness"),
            user_id: alice.id.clone(),
            expires_at: at(T0 + HOUR),
        })
        .await
        .expect("allow_token");
    record(
        &store,
        EventKind::LoginFailed,
        None,
        json!({"username": "alice"}),
    )
    .await;
    assert!(
        !store
            .create_code(&AccountCode {
                hash: SessionId::generate().expect("OS randomness").hash(),
                user_id: alice.id.clone(),
                purpose: CodePurpose::Recovery,
                email_key: "alice@example.org".into(),
                created_at: at(T0),
                expires_at: at(T0 + HOUR),
            })
            .await
            .expect("create_code"),
        "no code is stored for an account that is gone"
    );
    assert!(
        store
            .enqueue_mail(&mail_for(Some(&alice.id)))
            .await
            .is_err(),
        "no mail is queued for an account that is gone"
    );
    assert!(!store.delete_user(&first).await.expect("delete_user again"));
    assert!(
        store
            .allowed_tokens(at(T0))
            .await
            .expect("allowed_tokens")
            .is_empty(),
        "a repeat erases what was left"
    );
    let events = all_events(&store).await;
    assert_eq!(
        events.last().map(|e| e.detail.clone()),
        Some(json!({"username_erased": true})),
        "a repeat scrubs the log again"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind == EventKind::AccountDeleted)
            .count(),
        1,
        "the deletion is recorded once"
    );
    assert!(
        store
            .user_by_id(&admin.id)
            .await
            .expect("user_by_id")
            .is_some(),
        "nobody else is touched"
    );
}
