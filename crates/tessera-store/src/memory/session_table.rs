//! The memory store's sessions: each held once, in a slot of one vector, and found by secret hash,
//! handle, user and expiry through indexes of slot numbers. Keying maps by handle instead would
//! copy the handle into every index and leave hash tables half empty of 250-byte entries; here
//! a session costs its own size and a few bytes in each index.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;
use serde_json::Value;
use tessera_core::{
    AuthContext, Session, SessionData, SessionHandle, Timestamp, TokenHash, UserId,
};

/// A slot's number: four bytes in each index rather than a copy of the handle.
type SlotId = u32;

struct Slot {
    session: Session,
    /// Where the slot's number sits in its user's list, so that it can be taken out at once.
    user_position: u32,
}

/// Why a session was not added.
pub(super) enum Refused {
    HandleTaken,
    SecretTaken,
    Full,
}

#[derive(Default)]
pub(super) struct SessionTable {
    slots: Vec<Option<Slot>>,
    /// Empty slots, reused before the vector grows.
    free: Vec<SlotId>,
    /// Slot numbers placed by the hash of their session's secret hash.
    by_secret: HashTable<SlotId>,
    /// Slot numbers placed by the hash of their session's handle.
    by_handle: HashTable<SlotId>,
    /// Each user's slots, in no order: listing a user's sessions (rare) sorts them.
    by_user: HashMap<UserId, Vec<SlotId>>,
    /// `(expires_at, slot)` of every session: the sweep walks only the expired prefix.
    by_expiry: BTreeSet<(Timestamp, SlotId)>,
    hasher: RandomState,
}

fn occupant(slots: &[Option<Slot>], id: SlotId) -> Option<&Session> {
    slots
        .get(id as usize)
        .and_then(Option::as_ref)
        .map(|slot| &slot.session)
}

impl SessionTable {
    fn secret_hash(&self, hash: &TokenHash) -> u64 {
        self.hasher.hash_one(hash)
    }

    fn handle_hash(&self, handle: &SessionHandle) -> u64 {
        self.hasher.hash_one(handle)
    }

    fn slot_by_secret(&self, hash: &TokenHash) -> Option<SlotId> {
        self.by_secret
            .find(self.secret_hash(hash), |&id| {
                occupant(&self.slots, id).is_some_and(|s| s.secret_hash == *hash)
            })
            .copied()
    }

    fn slot_by_handle(&self, handle: &SessionHandle) -> Option<SlotId> {
        self.by_handle
            .find(self.handle_hash(handle), |&id| {
                occupant(&self.slots, id).is_some_and(|s| s.handle == *handle)
            })
            .copied()
    }

    fn session_mut(&mut self, id: SlotId) -> Option<&mut Session> {
        self.slots
            .get_mut(id as usize)
            .and_then(Option::as_mut)
            .map(|slot| &mut slot.session)
    }

    pub(super) fn insert(&mut self, session: Session) -> Result<(), Refused> {
        if self.slot_by_handle(&session.handle).is_some() {
            return Err(Refused::HandleTaken);
        }
        if self.slot_by_secret(&session.secret_hash).is_some() {
            return Err(Refused::SecretTaken);
        }
        let id = match self.free.pop() {
            Some(id) => id,
            None => SlotId::try_from(self.slots.len()).map_err(|_| Refused::Full)?,
        };
        let of_user = self.by_user.entry(session.user_id.clone()).or_default();
        let user_position = u32::try_from(of_user.len()).map_err(|_| Refused::Full)?;
        of_user.push(id);
        self.by_expiry.insert((session.expires_at, id));
        let secret_hash = self.secret_hash(&session.secret_hash);
        let handle_hash = self.handle_hash(&session.handle);
        let slot = Slot {
            session,
            user_position,
        };
        match self.slots.get_mut(id as usize) {
            Some(free) => *free = Some(slot),
            None => self.slots.push(Some(slot)),
        }
        // Growing a table moves its entries, placed again by their session's hash: every slot
        // they name is filled, this one included.
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.by_secret.insert_unique(secret_hash, id, |&other| {
            occupant(slots, other).map_or(0, |s| hasher.hash_one(s.secret_hash))
        });
        self.by_handle.insert_unique(handle_hash, id, |&other| {
            occupant(slots, other).map_or(0, |s| hasher.hash_one(&s.handle))
        });
        Ok(())
    }

    pub(super) fn by_secret(&self, hash: &TokenHash) -> Option<&Session> {
        self.slot_by_secret(hash)
            .and_then(|id| occupant(&self.slots, id))
    }

    /// Records activity; `false` when there is no such session.
    pub(super) fn touch(
        &mut self,
        handle: &SessionHandle,
        last_seen_at: Timestamp,
        expires_at: Timestamp,
    ) -> bool {
        let Some(id) = self.slot_by_handle(handle) else {
            return false;
        };
        let Some(session) = self.session_mut(id) else {
            return false;
        };
        let old_expiry = std::mem::replace(&mut session.expires_at, expires_at);
        session.last_seen_at = last_seen_at;
        self.by_expiry.remove(&(old_expiry, id));
        self.by_expiry.insert((expires_at, id));
        true
    }

    /// Replaces the data if it is still at `expected_version`; `false` otherwise.
    pub(super) fn replace_data(
        &mut self,
        handle: &SessionHandle,
        expected_version: i64,
        data: &Value,
    ) -> bool {
        let Some(id) = self.slot_by_handle(handle) else {
            return false;
        };
        match self.session_mut(id) {
            Some(session) if session.data_version == expected_version => {
                session.data = SessionData::new(data.clone());
                session.data_version += 1;
                true
            }
            _ => false,
        }
    }

    /// Replaces how the session was authenticated; `false` when there is no such session.
    pub(super) fn set_auth(&mut self, handle: &SessionHandle, auth: &AuthContext) -> bool {
        let Some(id) = self.slot_by_handle(handle) else {
            return false;
        };
        match self.session_mut(id) {
            Some(session) => {
                session.auth = *auth;
                true
            }
            None => false,
        }
    }

    pub(super) fn by_handle(&self, handle: &SessionHandle) -> Option<&Session> {
        occupant(&self.slots, self.slot_by_handle(handle)?)
    }

    pub(super) fn remove(&mut self, handle: &SessionHandle) -> Option<Session> {
        let id = self.slot_by_handle(handle)?;
        self.remove_slot(id)
    }

    /// Empties a slot and takes its number out of every index.
    fn remove_slot(&mut self, id: SlotId) -> Option<Session> {
        let Slot {
            session,
            user_position,
        } = self.slots.get_mut(id as usize)?.take()?;
        if let Ok(entry) = self
            .by_secret
            .find_entry(self.hasher.hash_one(session.secret_hash), |&x| x == id)
        {
            entry.remove();
        }
        if let Ok(entry) = self
            .by_handle
            .find_entry(self.hasher.hash_one(&session.handle), |&x| x == id)
        {
            entry.remove();
        }
        self.by_expiry.remove(&(session.expires_at, id));
        if let Some(of_user) = self.by_user.get_mut(&session.user_id) {
            let position = user_position as usize;
            of_user.swap_remove(position);
            // The last of the list moved into the gap: tell its slot.
            if let Some(&moved) = of_user.get(position)
                && let Some(Some(slot)) = self.slots.get_mut(moved as usize)
            {
                slot.user_position = user_position;
            }
            if of_user.is_empty() {
                self.by_user.remove(&session.user_id);
            }
        }
        self.free.push(id);
        Some(session)
    }

    /// A user's sessions, oldest first (ties by handle, as every store orders them).
    pub(super) fn of_user(&self, user: &UserId) -> Vec<Session> {
        let mut sessions: Vec<Session> = self
            .by_user
            .get(user)
            .into_iter()
            .flatten()
            .filter_map(|&id| occupant(&self.slots, id))
            .cloned()
            .collect();
        sessions.sort_by(|a, b| (a.created_at, &a.handle).cmp(&(b.created_at, &b.handle)));
        sessions
    }

    /// Deletes a user's sessions but `keep`; returns how many went.
    pub(super) fn remove_of_user(&mut self, user: &UserId, keep: Option<&SessionHandle>) -> usize {
        let doomed: Vec<SlotId> = self
            .by_user
            .get(user)
            .into_iter()
            .flatten()
            .copied()
            .filter(|&id| occupant(&self.slots, id).is_some_and(|s| Some(&s.handle) != keep))
            .collect();
        doomed
            .into_iter()
            .filter(|&id| self.remove_slot(id).is_some())
            .count()
    }

    /// Deletes up to `limit` sessions expired at `now`, soonest expired first; returns how many
    /// went.
    pub(super) fn remove_expired(&mut self, now: Timestamp, limit: usize) -> usize {
        let expired: Vec<SlotId> = self
            .by_expiry
            .iter()
            .take_while(|(expires_at, _)| *expires_at <= now)
            .take(limit)
            .map(|&(_, id)| id)
            .collect();
        expired
            .into_iter()
            .filter(|&id| self.remove_slot(id).is_some())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::{ClientInfo, CsrfToken, SessionId};

    fn session(user: &UserId, created: i64, expires: i64) -> Session {
        Session {
            handle: SessionHandle::generate().unwrap(),
            user_id: user.clone(),
            secret_hash: SessionId::generate().unwrap().hash(),
            csrf_token: CsrfToken::generate().unwrap(),
            created_at: Timestamp::from_unix_millis(created),
            last_seen_at: Timestamp::from_unix_millis(created),
            expires_at: Timestamp::from_unix_millis(expires),
            absolute_expires_at: Timestamp::from_unix_millis(expires),
            client: ClientInfo::default(),
            data: SessionData::default(),
            data_version: 0,
            auth: tessera_core::AuthContext::password(Timestamp::from_unix_millis(created)),
        }
    }

    /// Every index agrees with a plain list of the sessions through inserts, removals (which
    /// move the last of a user's list into the gap) and reused slots.
    #[test]
    fn indexes_agree_with_a_plain_list() {
        let users: Vec<UserId> = (0..3).map(|_| UserId::generate().unwrap()).collect();
        let mut table = SessionTable::default();
        let mut model: Vec<Session> = Vec::new();
        for round in 0..400i64 {
            let user = &users[(round % 3) as usize];
            let s = session(user, round % 7, 1000 + round % 11);
            assert!(table.insert(s.clone()).is_ok());
            model.push(s);
            // Remove one in three, from the front, the back and the middle in turn.
            if round % 3 == 2 {
                let victim = match round % 9 {
                    2 => 0,
                    5 => model.len() - 1,
                    _ => model.len() / 2,
                };
                let gone = model.remove(victim);
                assert_eq!(table.remove(&gone.handle), Some(gone.clone()));
                assert_eq!(table.remove(&gone.handle), None);
                assert!(table.by_secret(&gone.secret_hash).is_none());
            }
        }
        for user in &users {
            let mut expected: Vec<Session> = model
                .iter()
                .filter(|s| s.user_id == *user)
                .cloned()
                .collect();
            expected.sort_by(|a, b| (a.created_at, &a.handle).cmp(&(b.created_at, &b.handle)));
            assert_eq!(table.of_user(user), expected);
        }
        for s in &model {
            assert_eq!(table.by_secret(&s.secret_hash), Some(s));
        }
        assert!(table.slots.len() < 400, "emptied slots were reused");

        // The sweep takes the soonest expired first, and only those.
        let now = Timestamp::from_unix_millis(1005);
        let expired = model.iter().filter(|s| s.expires_at <= now).count();
        assert_eq!(table.remove_expired(now, 3), 3);
        assert_eq!(table.remove_expired(now, usize::MAX), expired - 3);
        model.retain(|s| s.expires_at > now);
        for s in &model {
            assert_eq!(table.by_secret(&s.secret_hash), Some(s));
        }
        let kept = model
            .iter()
            .find(|s| s.user_id == users[0])
            .map(|s| s.handle.clone());
        let of_first = model.iter().filter(|s| s.user_id == users[0]).count();
        assert_eq!(table.remove_of_user(&users[0], kept.as_ref()), of_first - 1);
        assert_eq!(table.of_user(&users[0]).len(), 1);
    }

    #[test]
    fn an_empty_slot_costs_no_more_than_a_full_one() {
        // The slot vector holds `Option<Slot>`: the option must fit in a niche of the session.
        assert_eq!(size_of::<Option<Slot>>(), size_of::<Slot>());
    }
}
