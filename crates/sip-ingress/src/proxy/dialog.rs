//! The dialogs the ingress admitted (RFC 3261 section 12): who the two ends are and how each is
//! reached, so an in-dialog request goes the way its tags say, and nothing else passes.
//!
//! A dialog whose INVITE named a registration binding's contact is a call through that
//! binding: once the agent's 2xx is relayed it is counted on the registration client's
//! [`Board`] (the binding is `calling`), and uncounted at the first BYE or when the dialog is
//! forgotten, whichever comes first, so a call is counted once and ended once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::register::status::Board;
use crate::sip::Transport;
use crate::sip::head::Head;
use crate::sip::uri;

/// How long a dialog is remembered without a BYE.
pub(super) const DIALOG_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// A dialog the ingress admitted, by its INVITE.
#[derive(Debug)]
pub(super) struct Dialog {
    /// The From tag of the caller's INVITE: the caller's tag in the dialog's id (RFC 3261
    /// section 12), which says who sent an in-dialog request. None for an RFC 2543 caller.
    pub caller_tag: Option<String>,
    pub caller: SocketAddr,
    /// How the caller reached us, and so how requests to it leave.
    pub caller_transport: Transport,
    pub callee: SocketAddr,
    pub callee_transport: Transport,
    pub since: Instant,
    /// The Request-URI user of the INVITE, which names a binding's contact when the call came
    /// through a registration.
    pub called_user: String,
}

impl Dialog {
    /// Whether an in-dialog request came from the caller (else from the agent), by its tags:
    /// the caller's tag is its From tag on the caller's requests and its To tag on the agent's.
    /// None when neither carries it: the request is not of this dialog. Without a caller tag,
    /// by the address it came from.
    pub fn sent_by_caller(&self, head: &Head, source: SocketAddr) -> Option<bool> {
        let Some(caller_tag) = self.caller_tag.as_deref() else {
            return Some(source != self.callee);
        };
        if uri::tag(head.value("From")) == Some(caller_tag) {
            Some(true)
        } else if uri::tag(head.value("To")) == Some(caller_tag) {
            Some(false)
        } else {
            None
        }
    }
}

/// A dialog and whether it is counted as a call up through a binding.
#[derive(Debug)]
struct Entry {
    dialog: Dialog,
    counted: bool,
}

/// The admitted dialogs by Call-ID, counting the calls through bindings on `board`.
#[derive(Debug, Default)]
pub(super) struct Dialogs {
    by_call_id: HashMap<String, Entry>,
    board: Board,
}

impl Dialogs {
    /// No dialogs, counting calls through bindings on `board`.
    pub fn new(board: Board) -> Self {
        Self {
            by_call_id: HashMap::new(),
            board,
        }
    }

    /// The number of dialogs held.
    pub fn len(&self) -> usize {
        self.by_call_id.len()
    }

    /// Whether the dialog of `call_id` is held.
    pub fn contains(&self, call_id: &str) -> bool {
        self.by_call_id.contains_key(call_id)
    }

    /// The dialog of `call_id`.
    pub fn get(&self, call_id: &str) -> Option<&Dialog> {
        self.by_call_id.get(call_id).map(|entry| &entry.dialog)
    }

    /// The dialog of `call_id`, to change where its agent is.
    pub fn get_mut(&mut self, call_id: &str) -> Option<&mut Dialog> {
        self.by_call_id
            .get_mut(call_id)
            .map(|entry| &mut entry.dialog)
    }

    /// Holds `dialog` for `call_id`, not yet answered. A dialog it replaces ends.
    pub fn insert(&mut self, call_id: String, dialog: Dialog) {
        let entry = Entry {
            dialog,
            counted: false,
        };
        if let Some(old) = self.by_call_id.insert(call_id, entry) {
            self.uncount(old);
        }
    }

    /// The agent's 2xx to the INVITE of `call_id` was relayed: a call through a binding is up.
    /// Retransmitted 2xx count nothing more.
    pub fn answered(&mut self, call_id: &str) {
        if let Some(entry) = self.by_call_id.get_mut(call_id)
            && !entry.counted
        {
            entry.counted = self.board.call_answered(&entry.dialog.called_user);
        }
    }

    /// A BYE of `call_id` was relayed: the call is over, though the dialog is kept until the
    /// BYE is answered.
    pub fn bye(&mut self, call_id: &str) {
        if let Some(entry) = self.by_call_id.get_mut(call_id)
            && std::mem::take(&mut entry.counted)
        {
            self.board.call_ended(&entry.dialog.called_user);
        }
    }

    /// Forgets the dialog of `call_id`.
    pub fn remove(&mut self, call_id: &str) {
        if let Some(entry) = self.by_call_id.remove(call_id) {
            self.uncount(entry);
        }
    }

    /// Forgets the dialogs older than [`DIALOG_LIFETIME`].
    pub fn expire(&mut self, now: Instant) {
        let board = &self.board;
        self.by_call_id.retain(|_, entry| {
            let keep = now.duration_since(entry.dialog.since) < DIALOG_LIFETIME;
            if !keep && entry.counted {
                board.call_ended(&entry.dialog.called_user);
            }
            keep
        });
    }

    fn uncount(&self, entry: Entry) {
        if entry.counted {
            self.board.call_ended(&entry.dialog.called_user);
        }
    }
}
