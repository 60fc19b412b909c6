//! The memory store's mail queue, with the indexes `mail_queue` has in SQL: by due time (the
//! claim order) and by account.

use std::collections::{BTreeSet, HashMap, HashSet};

use tessera_core::{MailId, QueuedMail, Timestamp, UserId};

#[derive(Default)]
pub(super) struct MailQueue {
    mails: HashMap<MailId, QueuedMail>,
    /// `(next_attempt_at, created_at, id)`: the claim order, due ones first.
    by_due: BTreeSet<(Timestamp, Timestamp, MailId)>,
    by_user: HashMap<UserId, HashSet<MailId>>,
}

fn due_key(mail: &QueuedMail) -> (Timestamp, Timestamp, MailId) {
    (mail.next_attempt_at, mail.created_at, mail.id.clone())
}

impl MailQueue {
    pub(super) fn contains(&self, id: &MailId) -> bool {
        self.mails.contains_key(id)
    }

    pub(super) fn len(&self) -> usize {
        self.mails.len()
    }

    /// Adds a mail whose id is not in the queue yet.
    pub(super) fn insert(&mut self, mail: QueuedMail) {
        if let Some(user) = &mail.user_id {
            self.by_user
                .entry(user.clone())
                .or_default()
                .insert(mail.id.clone());
        }
        self.by_due.insert(due_key(&mail));
        self.mails.insert(mail.id.clone(), mail);
    }

    pub(super) fn remove(&mut self, id: &MailId) -> Option<QueuedMail> {
        let mail = self.mails.remove(id)?;
        self.by_due.remove(&due_key(&mail));
        if let Some(user) = &mail.user_id
            && let Some(ids) = self.by_user.get_mut(user)
        {
            ids.remove(id);
            if ids.is_empty() {
                self.by_user.remove(user);
            }
        }
        Some(mail)
    }

    pub(super) fn remove_of_user(&mut self, user: &UserId) {
        for id in self.by_user.remove(user).unwrap_or_default() {
            self.remove(&id);
        }
    }

    /// Changes a mail's `next_attempt_at` (and whatever else `change` does), keeping the due
    /// index in step; `None` when there is no such mail.
    fn reschedule(
        &mut self,
        id: &MailId,
        next_attempt_at: Timestamp,
        change: impl FnOnce(&mut QueuedMail),
    ) -> Option<&QueuedMail> {
        let mail = self.mails.get_mut(id)?;
        self.by_due.remove(&due_key(mail));
        mail.next_attempt_at = next_attempt_at;
        change(mail);
        self.by_due.insert(due_key(mail));
        Some(mail)
    }

    /// Leases up to `limit` mails due by `now` until `lease_until`, counting an attempt each;
    /// returns them as updated, oldest first.
    pub(super) fn claim(
        &mut self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> Vec<QueuedMail> {
        let due: Vec<MailId> = self
            .by_due
            .iter()
            .take_while(|(next_attempt_at, _, _)| *next_attempt_at <= now)
            .take(limit)
            .map(|(_, _, id)| id.clone())
            .collect();
        let mut claimed: Vec<QueuedMail> = due
            .iter()
            .filter_map(|id| {
                self.reschedule(id, lease_until, |mail| {
                    mail.attempts = mail.attempts.saturating_add(1);
                })
                .cloned()
            })
            .collect();
        claimed.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        claimed
    }

    /// Puts a mail back for an attempt at `next_attempt_at`; `false` when it is gone.
    pub(super) fn retry(
        &mut self,
        id: &MailId,
        next_attempt_at: Timestamp,
        last_error: &str,
    ) -> bool {
        self.reschedule(id, next_attempt_at, |mail| {
            mail.last_error = Some(last_error.to_owned());
        })
        .is_some()
    }
}
