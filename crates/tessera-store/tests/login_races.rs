//! A login that checked the old password does not outlive a change to the account that completed
//! while it was being made: a password change, disabling, a role change or a forced logout. The
//! race is made deterministic: the login is held right after it read the account (so it checks the
//! old password hash), the change runs to completion, then the login goes on.

mod support;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tessera_core::{
    ClientInfo, CurrentLogin, Error, LoginAttempt, LoginModel, ManualClock, Password, Services,
    ServicesConfig, StoreError, Stores, Timestamp, User, UserId, UserStore, Username,
};
use tessera_store::MemoryStore;
use tokio::sync::{Notify, Semaphore};

const OLD: &str = "correct horse battery staple";
const NEW: &str = "a brand new passphrase here";

/// Users in memory, with a gate: a lookup by username, once armed, reads the account and then
/// waits until the test opens the gate.
struct Gated {
    inner: MemoryStore,
    armed: std::sync::atomic::AtomicBool,
    read: Notify,
    open: Semaphore,
}

#[async_trait]
impl UserStore for Gated {
    async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        self.inner.create_user(user).await
    }

    async fn user_by_id(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        self.inner.user_by_id(id).await
    }

    async fn user_by_username(&self, username: &Username) -> Result<Option<User>, StoreError> {
        let found = self.inner.user_by_username(username).await;
        if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.read.notify_one();
            let _ = self.open.acquire().await.expect("gate").forget();
        }
        found
    }

    async fn set_password_hash(
        &self,
        id: &UserId,
        password_hash: &str,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        self.inner.set_password_hash(id, password_hash, at).await
    }

    async fn list_users(
        &self,
        after: Option<&Username>,
        limit: usize,
    ) -> Result<Vec<User>, StoreError> {
        self.inner.list_users(after, limit).await
    }

    async fn disabled_user_ids(&self) -> Result<Vec<UserId>, StoreError> {
        self.inner.disabled_user_ids().await
    }

    async fn set_user_disabled(
        &self,
        id: &UserId,
        disabled: bool,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        self.inner.set_user_disabled(id, disabled, at).await
    }

    async fn set_user_roles(
        &self,
        id: &UserId,
        roles: &[String],
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        self.inner.set_user_roles(id, roles, at).await
    }

    async fn rehash_password(
        &self,
        id: &UserId,
        old_hash: &str,
        new_hash: &str,
    ) -> Result<bool, StoreError> {
        self.inner.rehash_password(id, old_hash, new_hash).await
    }

    async fn set_user_not_before(&self, id: &UserId, at: Timestamp) -> Result<bool, StoreError> {
        self.inner.set_user_not_before(id, at).await
    }

    async fn delete_user(&self, deletion: &tessera_core::UserDeletion) -> Result<bool, StoreError> {
        self.inner.delete_user(deletion).await
    }

    async fn user_by_email(&self, key: &str) -> Result<Option<User>, StoreError> {
        self.inner.user_by_email(key).await
    }

    async fn set_email(
        &self,
        id: &UserId,
        email: Option<&tessera_core::EmailAddress>,
    ) -> Result<bool, StoreError> {
        self.inner.set_email(id, email).await
    }

    async fn create_code(&self, code: &tessera_core::AccountCode) -> Result<bool, StoreError> {
        self.inner.create_code(code).await
    }

    async fn use_recovery_code(
        &self,
        hash: &tessera_core::TokenHash,
        password_hash: &str,
        now: Timestamp,
    ) -> Result<Option<UserId>, StoreError> {
        self.inner.use_recovery_code(hash, password_hash, now).await
    }

    async fn use_verification_code(
        &self,
        hash: &tessera_core::TokenHash,
        now: Timestamp,
    ) -> Result<Option<tessera_core::CodeVerified>, StoreError> {
        self.inner.use_verification_code(hash, now).await
    }

    async fn delete_expired_codes(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError> {
        self.inner.delete_expired_codes(now, limit).await
    }
}

struct Node {
    services: Services,
    users: Arc<Gated>,
    clock: ManualClock,
    alice: User,
}

async fn node() -> Node {
    let memory = MemoryStore::new();
    let users = Arc::new(Gated {
        inner: memory.clone(),
        armed: false.into(),
        read: Notify::new(),
        open: Semaphore::new(0),
    });
    let stores = Stores {
        users: users.clone(),
        ..Stores::from_one(memory)
    };
    let clock = ManualClock::starting_at_millis(1_700_000_000_000);
    let services = support::services(stores, &clock, ServicesConfig::default()).await;
    services.spawn_follower();
    let alice = services
        .accounts
        .create("alice", &Password::new(OLD), vec![])
        .await
        .unwrap();
    Node {
        services,
        users,
        clock,
        alice,
    }
}

/// Logs alice in with the old password in `model`, and runs `change` while the login is held
/// between reading the account and checking the password. Returns whether the login succeeded.
async fn race(node: &Node, model: LoginModel, change: impl AsyncFnOnce(&Node)) -> bool {
    race_after(node, model, Duration::from_millis(5), change).await
}

/// As [`race`], with the change made `after` the login began on the clock (zero: in the same
/// millisecond).
async fn race_after(
    node: &Node,
    model: LoginModel,
    after: Duration,
    change: impl AsyncFnOnce(&Node),
) -> bool {
    let password = Password::new(OLD);
    let attempt = LoginAttempt {
        username: "alice",
        password: &password,
        ip: None,
        client: ClientInfo::default(),
        device: None,
        dpop_jkt: None,
    };
    node.users
        .armed
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let logins = &node.services.logins;
    let login = async {
        match model {
            LoginModel::Session => logins.login_session(attempt, None).await.map(|_| ()),
            model => logins.login_tokens(attempt, model, None).await.map(|_| ()),
        }
    };
    let meanwhile = async {
        node.users.read.notified().await;
        // The change happens after the login began, on the clock too.
        node.clock.advance(after);
        change(node).await;
        node.users.open.add_permits(1);
    };
    let (outcome, ()) = tokio::join!(login, meanwhile);
    match outcome {
        Ok(()) => true,
        Err(Error::InvalidCredentials) => false,
        Err(e) => panic!("the login failed otherwise: {e}"),
    }
}

async fn live_logins(node: &Node) -> usize {
    node.services
        .logins
        .list(&node.alice.id, &CurrentLogin::None)
        .await
        .unwrap()
        .len()
}

const MODELS: [LoginModel; 3] = [LoginModel::Session, LoginModel::Token, LoginModel::Hybrid];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_racing_a_password_change_does_not_outlive_it() {
    for model in MODELS {
        let node = node().await;
        let succeeded = race(&node, model, async |node| {
            node.services
                .logins
                .change_password(
                    &node.alice,
                    &Password::new(OLD),
                    &Password::new(NEW),
                    &CurrentLogin::None,
                    None,
                    None,
                )
                .await
                .unwrap();
        })
        .await;
        assert!(
            !succeeded,
            "{model:?}: the old password logged in after the change"
        );
        assert_eq!(live_logins(&node).await, 0, "{model:?}: a login survived");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_racing_a_disable_does_not_outlive_it() {
    for model in MODELS {
        let node = node().await;
        let succeeded = race(&node, model, async |node| {
            node.services
                .logins
                .set_disabled(&node.alice.id, true, None)
                .await
                .unwrap();
        })
        .await;
        assert!(!succeeded, "{model:?}");
        assert_eq!(live_logins(&node).await, 0, "{model:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_racing_a_role_change_does_not_outlive_it() {
    for model in MODELS {
        let node = node().await;
        let succeeded = race(&node, model, async |node| {
            node.services
                .logins
                .set_roles(&node.alice.id, &["admin".to_owned()], None)
                .await
                .unwrap();
        })
        .await;
        assert!(
            !succeeded,
            "{model:?}: a login made with the old roles outlived the change"
        );
        assert_eq!(live_logins(&node).await, 0, "{model:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_racing_a_forced_logout_does_not_outlive_it() {
    for model in MODELS {
        let node = node().await;
        let succeeded = race(&node, model, async |node| {
            node.services
                .logins
                .force_logout(&node.alice.id, None)
                .await
                .unwrap();
        })
        .await;
        assert!(!succeeded, "{model:?}");
        assert_eq!(live_logins(&node).await, 0, "{model:?}");
    }
}

/// Without a change, the held login goes through: the gate itself refuses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_login_with_nothing_changed_goes_through() {
    for model in MODELS {
        let node = node().await;
        assert!(race(&node, model, async |_| {}).await, "{model:?}");
        assert_eq!(live_logins(&node).await, 1, "{model:?}");
    }
}

/// A change made in the very millisecond the login began, but after the login read the account
/// (so it checked the old password), still voids the login. The clock's millisecond cannot order
/// the two; the login must not survive on a tie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_racing_a_password_change_in_the_same_millisecond_does_not_outlive_it() {
    for model in MODELS {
        let node = node().await;
        // Alice's account was made a while ago: only the change and the login share a millisecond.
        node.clock.advance(Duration::from_secs(60));
        let succeeded = race_after(&node, model, Duration::ZERO, async |node| {
            node.services
                .logins
                .change_password(
                    &node.alice,
                    &Password::new(OLD),
                    &Password::new(NEW),
                    &CurrentLogin::None,
                    None,
                    None,
                )
                .await
                .unwrap();
        })
        .await;
        assert!(
            !succeeded,
            "{model:?}: the old password logged in after the change"
        );
        assert_eq!(live_logins(&node).await, 0, "{model:?}: a login survived");
    }
}

/// The same for a forced logout in the login's millisecond.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_racing_a_forced_logout_in_the_same_millisecond_does_not_outlive_it() {
    for model in MODELS {
        let node = node().await;
        node.clock.advance(Duration::from_secs(60));
        let succeeded = race_after(&node, model, Duration::ZERO, async |node| {
            node.services
                .logins
                .force_logout(&node.alice.id, None)
                .await
                .unwrap();
        })
        .await;
        assert!(!succeeded, "{model:?}");
        assert_eq!(live_logins(&node).await, 0, "{model:?}");
    }
}

/// The hardest tie: the account changed in some millisecond, a login began in that very
/// millisecond (so it read the account as the first change left it), and a second change lands
/// in the same millisecond while the login checks the password. The second change still moves
/// the account's not-before (a millisecond on), so the login sees it moved and is void.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_between_two_changes_in_one_millisecond_does_not_outlive_the_second() {
    for model in MODELS {
        let node = node().await;
        node.clock.advance(Duration::from_secs(60));
        let force_logout = async |node: &Node| {
            node.services
                .logins
                .force_logout(&node.alice.id, None)
                .await
                .unwrap();
        };
        force_logout(&node).await;
        let succeeded = race_after(&node, model, Duration::ZERO, force_logout).await;
        assert!(
            !succeeded,
            "{model:?}: the login outlived the second change"
        );
        assert_eq!(live_logins(&node).await, 0, "{model:?}");
        // Time moves on: a login after both changes goes through.
        node.clock.advance(Duration::from_millis(2));
        assert!(
            race(&node, model, async |_| {}).await,
            "{model:?}: a later login"
        );
    }
}
