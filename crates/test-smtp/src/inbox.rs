//! Where the server puts what it accepts.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::Message;

/// The messages a server accepted, oldest first. A clonable handle: clones share one inbox, and
/// a server restarted with the same inbox (see [`crate::SmtpOptions::inbox`]) adds to it.
#[derive(Clone, Debug)]
pub struct Inbox {
    messages: Arc<watch::Sender<Vec<Message>>>,
}

impl Default for Inbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Inbox {
    /// An empty inbox.
    pub fn new() -> Self {
        Self {
            messages: Arc::new(watch::Sender::new(Vec::new())),
        }
    }

    /// A copy of the messages received so far.
    pub fn messages(&self) -> Vec<Message> {
        self.messages.borrow().clone()
    }

    /// How many messages were received.
    pub fn len(&self) -> usize {
        self.messages.borrow().len()
    }

    /// Whether no message was received.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets the messages received so far.
    pub fn clear(&self) {
        self.messages.send_modify(Vec::clear);
    }

    /// The first message (oldest first) for which `matches` holds, waiting up to `timeout` for
    /// one to arrive; `None` if none did.
    pub async fn wait_for(
        &self,
        mut matches: impl FnMut(&Message) -> bool,
        timeout: Duration,
    ) -> Option<Message> {
        let mut receiver = self.messages.subscribe();
        let found = tokio::time::timeout(
            timeout,
            receiver.wait_for(|messages| messages.iter().any(&mut matches)),
        )
        .await
        .ok()?
        // The sender lives as long as `self`: the channel cannot close while we wait.
        .ok()?;
        found.iter().find(|m| matches(m)).cloned()
    }

    pub(crate) fn push(&self, message: Message) {
        self.messages.send_modify(|messages| messages.push(message));
    }
}
