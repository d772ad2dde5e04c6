//! One registration binding, without sockets: what the ingress sends its registrar and when,
//! and what the registrar's answers mean (RFC 3261 section 10.2).
//!
//! * A REGISTER names the address of record (`sip:user@domain`) in To and From, the domain in
//!   the Request-URI, the binding's one Call-ID with an increasing CSeq, the ingress's Contact
//!   and the Expires it asks for.
//! * 401 and 407 are answered with digest credentials (RFC 7616, RFC 8760; `policy::digest`):
//!   a fresh nonce count and client nonce each time. Credentials challenged again, unless the
//!   challenge says the nonce was only stale, are rejected: an error, and a retry later.
//! * 423 Interval Too Brief: again at once with the registrar's Min-Expires (section 10.2.8).
//! * 2xx: the binding is online for the interval granted (the expires of our Contact in the
//!   answer, else its Expires, else what was asked) and is refreshed after half of it, so a
//!   short grant never lapses.
//! * Over UDP the REGISTER is retransmitted after T1, 2xT1... at most T2 apart (Timer E), and an
//!   attempt with no final answer after 64xT1 fails (Timer F); over TCP only Timer F runs.
//! * A failure (no answer, a transport error, rejected credentials, any other final answer) is
//!   recorded with its code and retried after a backoff with jitter: within 30 s the first time,
//!   doubling to at most 30 min.
//! * Responses that do not carry the attempt's branch and the binding's Call-ID are ignored.
//!
//! The status is evidence: [`SipStatus::Online`] only after a 2xx, back to `Registering` as
//! soon as an attempt fails. Randomness (branches, tags, client nonces, jitter) and the wall
//! clock are the caller's, passed in, so every path is a plain function of its inputs.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use policy::Secret;
use policy::digest::{self, Challenge};

use crate::sip::check::{BRANCH_COOKIE, Response};
use crate::sip::{Transport, uri, via};

/// The first retry after a failure comes within this, and each later one waits twice as long.
const FIRST_BACKOFF: Duration = Duration::from_secs(30);
/// The longest wait between two attempts after failures.
const MOST_BACKOFF: Duration = Duration::from_secs(30 * 60);
/// The most errors a binding keeps, newest first.
pub const MOST_ERRORS: usize = 50;
/// The code of an attempt no answer came to (Timer F): 408 Request Timeout.
pub const TIMED_OUT: u16 = 408;
/// The code of an attempt that could not be sent: 503 Service Unavailable.
pub const TRANSPORT_ERROR: u16 = 503;
/// RFC 3261's T2: the longest interval between retransmissions of a non-INVITE request.
const T2: Duration = Duration::from_secs(4);

/// What a binding registers, and with which credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The user part of the address of record (the extension).
    pub user: String,
    /// The registrar's domain: the Request-URI and the address of record's host.
    pub domain: String,
    /// The user name digest authentication uses, when not `user`.
    pub auth_username: Option<String>,
    /// The password; never logged, never in an error.
    pub password: Secret,
    /// How REGISTERs leave (and so whether Timer E runs).
    pub transport: Transport,
}

/// Where a binding stands with its registrar, in seed 002's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SipStatus {
    /// No REGISTER has been accepted yet, or the last attempt failed.
    Registering,
    /// The registrar accepted the last REGISTER (a 2xx), and the grant has not ended.
    Online,
    /// The binding was removed at the registrar (Expires: 0 accepted, or given up).
    Unregistered,
}

/// One recorded failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationError {
    /// The wall-clock time it happened, in unix seconds.
    pub unix: u64,
    /// What happened, in words (never the password).
    pub message: String,
    /// The registrar's status code, or the one RFC 3261 section 8.1.3.1 has a client take
    /// when there was none: [`TIMED_OUT`] when no answer came, [`TRANSPORT_ERROR`] when the
    /// request could not be sent (seed 002 gives every error a code).
    pub code: u16,
}

/// The randomness a binding draws on: a new value each call.
pub type Random<'a> = &'a mut dyn FnMut() -> u64;

/// A REGISTER in flight.
#[derive(Debug)]
struct Attempt {
    branch: String,
    /// The request as sent, for retransmissions.
    sent: Vec<u8>,
    /// When Timer E fires next (UDP only), and its current interval.
    retransmit_at: Option<Instant>,
    interval: Duration,
    /// Timer F.
    give_up_at: Instant,
    /// Whether this attempt carried credentials: a challenge in answer means they are wrong.
    with_credentials: bool,
    /// Whether it removes the binding (Expires: 0).
    removal: bool,
}

#[derive(Debug)]
enum State {
    /// The next REGISTER is due at this time.
    Waiting(Instant),
    /// A REGISTER is in flight.
    Sending(Attempt),
    /// Removed; nothing more is sent.
    Removed,
}

/// The challenge being answered, and how many requests have used its nonce.
#[derive(Debug)]
struct Answering {
    challenge: Challenge,
    /// `Proxy-Authorization` (for a 407), else `Authorization`.
    proxy: bool,
    nc: u32,
}

/// One registration binding.
#[derive(Debug)]
pub struct Binding {
    account: Account,
    /// Our Contact URI (`<...>` not included).
    contact: String,
    local: SocketAddr,
    call_id: String,
    from_tag: String,
    cseq: u32,
    /// The interval asked for, in seconds.
    expires: u32,
    t1: Duration,
    state: State,
    status: SipStatus,
    answering: Option<Answering>,
    /// Failures since the last 2xx, for the backoff.
    failures: u32,
    last_refreshed: Option<u64>,
    errors: VecDeque<RegistrationError>,
}

/// The lower-case hex of `value`, as many digits as it takes.
fn token(value: u64) -> String {
    format!("{value:016x}")
}

impl Binding {
    /// A binding of `account` whose Contact is `contact` (a URI at the ingress's `local`
    /// address whose user part names this binding alone), asking for `expires` seconds, with
    /// RFC 3261's `t1`. Its first REGISTER is due at `now`.
    pub fn new(
        account: Account,
        contact: String,
        local: SocketAddr,
        expires: u32,
        t1: Duration,
        now: Instant,
        random: Random<'_>,
    ) -> Self {
        Self {
            account,
            contact,
            local,
            call_id: format!("{}{}", token(random()), token(random())),
            from_tag: token(random()),
            cseq: 0,
            expires,
            t1,
            state: State::Waiting(now),
            status: SipStatus::Registering,
            answering: None,
            failures: 0,
            last_refreshed: None,
            errors: VecDeque::new(),
        }
    }

    /// Where the binding stands.
    pub fn status(&self) -> SipStatus {
        self.status
    }

    /// How many attempts failed since the last 2xx.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Whether the binding waits for its next REGISTER (none is in flight).
    pub fn is_waiting(&self) -> bool {
        matches!(self.state, State::Waiting(_))
    }

    /// The unix time of the last 2xx, if any.
    pub fn last_refreshed(&self) -> Option<u64> {
        self.last_refreshed
    }

    /// The recorded failures, newest first, at most [`MOST_ERRORS`].
    pub fn errors(&self) -> impl Iterator<Item = &RegistrationError> {
        self.errors.iter()
    }

    /// The binding's Call-ID, which every REGISTER and answer of it carries.
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// When [`Binding::on_timer`] next has something to do; never once removed.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.state {
            State::Waiting(at) => Some(*at),
            State::Sending(attempt) => Some(
                attempt
                    .retransmit_at
                    .map_or(attempt.give_up_at, |at| at.min(attempt.give_up_at)),
            ),
            State::Removed => None,
        }
    }

    /// Runs what is due as of `now` (`unix` on the wall clock): the next REGISTER, a
    /// retransmission (Timer E), or the end of an unanswered attempt (Timer F, a failure).
    /// Returns the request to send, if any.
    pub fn on_timer(&mut self, now: Instant, unix: u64, random: Random<'_>) -> Option<Vec<u8>> {
        match &mut self.state {
            State::Waiting(at) if *at <= now => Some(self.send(false, now, random)),
            State::Sending(attempt) if attempt.give_up_at <= now => {
                let removal = attempt.removal;
                self.fail(
                    now,
                    unix,
                    "the registrar did not answer",
                    TIMED_OUT,
                    removal,
                    random,
                );
                None
            }
            State::Sending(attempt) => {
                let at = attempt.retransmit_at.filter(|at| *at <= now)?;
                attempt.interval = (attempt.interval * 2).min(T2.max(self.t1));
                attempt.retransmit_at = Some(at + attempt.interval);
                Some(attempt.sent.clone())
            }
            State::Waiting(_) | State::Removed => None,
        }
    }

    /// Removes the binding at the registrar: a REGISTER with Expires: 0 for our Contact, to
    /// send now. None when it was never accepted or is already removed.
    pub fn remove(&mut self, now: Instant, random: Random<'_>) -> Option<Vec<u8>> {
        if matches!(self.state, State::Removed) || self.last_refreshed.is_none() {
            self.state = State::Removed;
            self.status = SipStatus::Unregistered;
            return None;
        }
        Some(self.send(true, now, random))
    }

    /// Records that the attempt in flight could not be sent (a refused connection, a failed
    /// lookup): a failure, retried after the backoff.
    pub fn on_transport_error(&mut self, now: Instant, unix: u64, why: &str, random: Random<'_>) {
        if let State::Sending(attempt) = &self.state {
            let removal = attempt.removal;
            self.fail(now, unix, why, TRANSPORT_ERROR, removal, random);
        }
    }

    /// Handles a response from the registrar (`unix` on the wall clock). Returns the next
    /// request of the registration to send at once (credentials for a challenge, a longer
    /// interval for a 423), if any. A response of another transaction changes nothing.
    pub fn on_response(
        &mut self,
        response: &Response,
        now: Instant,
        unix: u64,
        random: Random<'_>,
    ) -> Option<Vec<u8>> {
        let State::Sending(attempt) = &mut self.state else {
            return None;
        };
        let head = &response.head;
        let ours = uri::param(&head.top_via(), "branch") == Some(attempt.branch.as_str())
            && head.value("Call-ID") == self.call_id
            && head.cseq_method() == "REGISTER";
        if !ours {
            return None;
        }
        let removal = attempt.removal;
        match response.code {
            100..=199 => {
                // The registrar has it: no more retransmissions, Timer F still runs.
                attempt.retransmit_at = None;
                None
            }
            200..=299 if removal => {
                self.state = State::Removed;
                self.status = SipStatus::Unregistered;
                None
            }
            200..=299 => {
                let granted = self.granted(response).max(1);
                self.status = SipStatus::Online;
                self.failures = 0;
                self.last_refreshed = Some(unix);
                let refresh = Duration::from_secs(u64::from(granted)) / 2;
                self.state = State::Waiting(now + refresh.max(Duration::from_secs(1)));
                None
            }
            401 | 407 => self.on_challenge(response, removal, now, unix, random),
            423 => {
                let least = head
                    .value("Min-Expires")
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|least| *least > self.expires && !removal);
                match least {
                    Some(least) => {
                        self.expires = least;
                        Some(self.send(false, now, random))
                    }
                    None => {
                        let message = "423 Interval Too Brief without a longer Min-Expires";
                        self.fail(now, unix, message, 423, removal, random);
                        None
                    }
                }
            }
            code => {
                let message = format!("the registrar answered {code} {}", reason(response));
                self.fail(now, unix, &message, code, removal, random);
                None
            }
        }
    }

    /// A 401 or 407: answered with credentials, unless the last attempt carried them and the
    /// nonce was not merely stale.
    fn on_challenge(
        &mut self,
        response: &Response,
        removal: bool,
        now: Instant,
        unix: u64,
        random: Random<'_>,
    ) -> Option<Vec<u8>> {
        let proxy = response.code == 407;
        let name = if proxy {
            "Proxy-Authenticate"
        } else {
            "WWW-Authenticate"
        };
        // RFC 8760 section 2.4: the first challenge of an algorithm the client supports.
        let parsed: Vec<_> = response
            .head
            .all(name)
            .map(|f| Challenge::parse(&f.value))
            .collect();
        let Some(challenge) = parsed.iter().find_map(|c| c.as_ref().ok()).cloned() else {
            let why = match parsed.first() {
                Some(Err(e)) => format!("cannot answer the {} challenge: {e}", response.code),
                _ => format!("a {} without a {name}", response.code),
            };
            self.fail(now, unix, &why, response.code, removal, random);
            return None;
        };
        let with_credentials = matches!(&self.state, State::Sending(a) if a.with_credentials);
        if with_credentials && !challenge.stale {
            let message = format!(
                "the registrar refused the credentials ({} again after answering one)",
                response.code
            );
            self.fail(now, unix, &message, response.code, removal, random);
            return None;
        }
        self.answering = Some(Answering {
            challenge,
            proxy,
            nc: 0,
        });
        Some(self.send(removal, now, random))
    }

    /// The interval the registrar granted: our Contact's `expires`, else the Expires field,
    /// else what was asked.
    fn granted(&self, response: &Response) -> u32 {
        let ours = response
            .head
            .all("Contact")
            .flat_map(|f| crate::sip::head::split_list(&f.value))
            .find(|contact| uri::uri_of(contact) == self.contact);
        ours.and_then(|contact| uri::param(&contact, "expires").and_then(|e| e.parse().ok()))
            .or_else(|| response.head.value("Expires").trim().parse().ok())
            .unwrap_or(self.expires)
    }

    /// Records a failure and waits for the backoff before the next attempt; a removal that
    /// fails is given up.
    fn fail(
        &mut self,
        now: Instant,
        unix: u64,
        message: &str,
        code: u16,
        removal: bool,
        random: Random<'_>,
    ) {
        self.errors.push_front(RegistrationError {
            unix,
            message: message.to_owned(),
            code,
        });
        self.errors.truncate(MOST_ERRORS);
        self.answering = None;
        if removal {
            self.state = State::Removed;
            self.status = SipStatus::Unregistered;
            return;
        }
        self.status = SipStatus::Registering;
        self.failures = self.failures.saturating_add(1);
        self.state = State::Waiting(now + backoff(self.failures, random()));
    }

    /// Builds and records the next REGISTER (a removal when `removal`), with credentials when a
    /// challenge is being answered.
    fn send(&mut self, removal: bool, now: Instant, random: Random<'_>) -> Vec<u8> {
        self.cseq += 1;
        let branch = format!("{BRANCH_COOKIE}{}", token(random()));
        let request_uri = format!("sip:{}", self.account.domain);
        let aor = format!("<sip:{}@{}>", self.account.user, self.account.domain);
        let expires = if removal { 0 } else { self.expires };
        let mut request = format!(
            "REGISTER {request_uri} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: {aor};tag={}\r\n\
             To: {aor}\r\nCall-ID: {}\r\nCSeq: {} REGISTER\r\nContact: <{}>\r\nExpires: {expires}\r\n",
            via::ours(self.local, self.account.transport, &branch),
            self.from_tag,
            self.call_id,
            self.cseq,
            self.contact,
        );
        let with_credentials = self.answering.is_some();
        if let Some(answering) = &mut self.answering {
            answering.nc += 1;
            let username = self
                .account
                .auth_username
                .as_deref()
                .unwrap_or(&self.account.user);
            let credentials = digest::authorization(
                &answering.challenge,
                username,
                self.account.password.expose(),
                "REGISTER",
                &request_uri,
                answering.nc,
                &token(random()),
            );
            let name = if answering.proxy {
                "Proxy-Authorization"
            } else {
                "Authorization"
            };
            request.push_str(&format!("{name}: {credentials}\r\n"));
        }
        request.push_str("Content-Length: 0\r\n\r\n");
        let sent = request.into_bytes();
        let udp = self.account.transport == Transport::Udp;
        self.state = State::Sending(Attempt {
            branch,
            sent: sent.clone(),
            retransmit_at: udp.then(|| now + self.t1),
            interval: self.t1,
            give_up_at: now + self.t1 * 64,
            with_credentials,
            removal,
        });
        sent
    }
}

/// The reason phrase of a response, for an error message.
fn reason(response: &Response) -> &str {
    response
        .head
        .start_line
        .splitn(3, ' ')
        .nth(2)
        .unwrap_or_default()
}

/// How long to wait before the attempt after `failures` failures (from 1): a random part of a
/// window that starts at [`FIRST_BACKOFF`] and doubles up to [`MOST_BACKOFF`], never less than
/// half the window, so retries spread out without ever coming back at once.
pub fn backoff(failures: u32, random: u64) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    let window = (FIRST_BACKOFF * 2u32.pow(doublings)).min(MOST_BACKOFF);
    let half = window.as_millis() as u64 / 2;
    Duration::from_millis(half + random % (half + 1))
}

#[cfg(test)]
mod tests;
