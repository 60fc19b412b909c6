//! Every store passes the same suite.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tessera_core::{AllStores, Stores, Timestamp, User, UserId, UserStore, Username};
use tessera_store::{MemoryStore, SqliteStore};

/// A fresh directory under the system temp dir, removed on drop (also when a test fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!(
            "tessera-store-{}-{nanos}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        // `create_dir`, not `create_dir_all`: fails rather than share a directory.
        std::fs::create_dir(&path).unwrap();
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Either store backs a whole server on its own.
#[tokio::test]
async fn each_store_holds_everything() {
    fn holds_everything<S: AllStores>(store: S) -> Stores {
        Stores::from_one(store)
    }
    let stores = [
        holds_everything(MemoryStore::new()),
        holds_everything(SqliteStore::open_in_memory().await.unwrap()),
    ];
    for stores in stores {
        stores.health.ping().await.unwrap();
        assert!(stores.keys.keys().await.unwrap().is_empty());
    }
}

mod memory {
    tessera_store::conformance_tests!(tessera_store::MemoryStore::new());
}

mod sqlite_in_memory {
    tessera_store::conformance_tests!(tessera_store::SqliteStore::open_in_memory().await.unwrap());
}

mod sqlite_file {
    use super::{SqliteStore, TempDir};

    tessera_store::conformance_tests!(|check| {
        let dir = TempDir::new();
        check(
            SqliteStore::open(&dir.path().join("tessera.db"))
                .await
                .unwrap(),
        )
        .await;
    });
}

fn alice() -> User {
    User {
        id: UserId::generate().unwrap(),
        username: Username::parse("alice").unwrap(),
        password_hash: "$argon2id$x".into(),
        roles: vec!["admin".into()],
        disabled: false,
        created_at: Timestamp::from_unix_millis(1_700_000_000_000),
        updated_at: Timestamp::from_unix_millis(1_700_000_000_000),
        not_before: Timestamp::from_unix_millis(1_700_000_000_000),
        email: None,
    }
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
#[tokio::test]
async fn a_new_database_file_is_private() {
    let dir = TempDir::new();
    let path = dir.path().join("tessera.db");
    let store = SqliteStore::open(&path).await.unwrap();
    store.create_user(&alice()).await.unwrap();
    assert_eq!(mode(&path), 0o600);
    // SQLite gives its WAL the main file's mode.
    let wal = dir.path().join("tessera.db-wal");
    if wal.exists() {
        assert_eq!(mode(&wal) & 0o077, 0, "the WAL is readable by others");
    }
    store.close().await;
}

#[cfg(unix)]
#[tokio::test]
async fn an_existing_file_keeps_its_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new();
    let path = dir.path().join("tessera.db");
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let store = SqliteStore::open(&path).await.unwrap();
    store.close().await;
    assert_eq!(mode(&path), 0o640);
}

#[tokio::test]
async fn reopening_keeps_the_data() {
    let dir = TempDir::new();
    let path = dir.path().join("tessera.db");
    let alice = alice();

    let store = SqliteStore::open(&path).await.unwrap();
    store.create_user(&alice).await.unwrap();
    store.close().await;

    // Twice: applying migrations to an up-to-date database changes nothing.
    for _ in 0..2 {
        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(
            store.user_by_id(&alice.id).await.unwrap(),
            Some(alice.clone())
        );
        store.close().await;
    }
}

#[tokio::test]
async fn a_missing_directory_is_an_error_not_a_panic() {
    let dir = TempDir::new();
    let path = dir.path().join("no/such/dir/tessera.db");
    assert!(SqliteStore::open(&path).await.is_err());
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_an_error_not_a_panic() {
    let dir = TempDir::new();
    let path = dir.path().join("tessera.db");
    std::fs::write(&path, vec![0x42_u8; 8192]).unwrap();
    assert!(SqliteStore::open(&path).await.is_err());
}
