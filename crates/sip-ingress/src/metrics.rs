//! The ingress's counters and gauges, exposed as Prometheus text (`GET /metrics`): a registry
//! of the families and their series. What each proxy event counts as is `crate::report`'s.
//!
//! Every label value comes from a bounded set (transports, status codes the ingress sends,
//! socket addresses it listens on, failure kinds), so the number of series is bounded. Refusal
//! reasons come from the policy: they are checked to be labels, and beyond
//! [`MAX_REFUSAL_REASONS`] distinct ones the rest count as `other`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::net::TcpListener;

/// One metric family: its type and help text.
const FAMILIES: [(&str, &str, &str); 19] = [
    (
        "sip_ingress_messages_total",
        "counter",
        "SIP messages received, by transport",
    ),
    (
        "sip_ingress_admission_total",
        "counter",
        "Initial INVITEs by decision and reason",
    ),
    (
        "sip_ingress_answers_total",
        "counter",
        "Responses the ingress sent itself, by status code",
    ),
    (
        "sip_ingress_relayed_total",
        "counter",
        "Requests and responses relayed, by kind",
    ),
    (
        "sip_ingress_responses_absorbed_total",
        "counter",
        "Agents' responses to forwarded INVITEs kept from the caller: 100 Trying (the caller had the ingress's own), final answers other than 2xx after the caller had one, and all but 2xx from an address the INVITE moved on from",
    ),
    (
        "sip_ingress_dropped_total",
        "counter",
        "Messages dropped without an answer",
    ),
    (
        "sip_ingress_invite_timers_total",
        "counter",
        "Forwarded INVITE timers that fired: retransmissions to a silent agent (Timer A), callers answered when it stayed silent (Timer B), agents cancelled for ringing too long (Timer C), CANCELs sent again to an agent that did not answer them (Timer E), callers answered when a cancelled agent gave no final answer (cancel)",
    ),
    (
        "sip_ingress_invite_send_failures_total",
        "counter",
        "Forwarded INVITEs that could not be sent to an agent that had not answered (a TCP connection that could not be opened, a failed send), by the answer the caller got",
    ),
    (
        "sip_ingress_invite_next_address_total",
        "counter",
        "Forwarded INVITEs sent on to the next address of their agent's host name, by what ended the attempt before (a transport error, or the agent's 503)",
    ),
    (
        "sip_ingress_invites_awaiting_name_total",
        "counter",
        "Admitted INVITEs held while their agent's host name was looked up",
    ),
    (
        "sip_ingress_policy_info",
        "gauge",
        "The admission policy module in force, by SHA-256",
    ),
    (
        "sip_ingress_policy_failures_total",
        "counter",
        "Admission decisions that failed closed, by kind",
    ),
    (
        "sip_ingress_policy_reloads_total",
        "counter",
        "Policy and configuration reloads, by result",
    ),
    (
        "sip_ingress_dialogs",
        "gauge",
        "Dialogs held, by listening socket",
    ),
    (
        "sip_ingress_transactions",
        "gauge",
        "INVITE transactions held, by listening socket",
    ),
    (
        "sip_ingress_registrations",
        "gauge",
        "Registration bindings, by lifecycle status and SIP status (none unless running)",
    ),
    (
        "sip_ingress_register_requests_total",
        "counter",
        "REGISTER requests sent to registrars, retransmissions included",
    ),
    (
        "sip_ingress_register_answers_total",
        "counter",
        "Registrars' answers to REGISTER, by status code",
    ),
    (
        "sip_ingress_register_retries_total",
        "counter",
        "Registration attempts made after a failure (no answer, a transport error, rejected credentials, a refusal)",
    ),
];

/// The most distinct refusal reasons counted separately.
pub const MAX_REFUSAL_REASONS: usize = 64;

/// The ingress's series: family -> rendered labels -> value.
#[derive(Default)]
pub struct Metrics {
    series: Mutex<BTreeMap<&'static str, BTreeMap<String, u64>>>,
}

impl Metrics {
    fn series(&self) -> MutexGuard<'_, BTreeMap<&'static str, BTreeMap<String, u64>>> {
        self.series
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds one to the series of `family` with `labels` (rendered, `name="value",...`).
    pub fn count(&self, family: &'static str, labels: String) {
        *self
            .series()
            .entry(family)
            .or_default()
            .entry(labels)
            .or_default() += 1;
    }

    fn set(&self, family: &'static str, labels: String, value: u64) {
        self.series()
            .entry(family)
            .or_default()
            .insert(labels, value);
    }

    /// Counts one received message.
    pub fn message(&self, transport: &'static str) {
        self.count(
            "sip_ingress_messages_total",
            format!("transport=\"{transport}\""),
        );
    }

    /// Counts an initial INVITE refused for `reason`: beyond [`MAX_REFUSAL_REASONS`] distinct
    /// reasons, the rest count as `other`.
    pub fn count_refusal(&self, reason: &str) {
        let mut series = self.series();
        let refusals = series.entry("sip_ingress_admission_total").or_default();
        let labels = format!("decision=\"refuse\",reason=\"{reason}\"");
        let labels = if refusals.contains_key(&labels) || refusals.len() < MAX_REFUSAL_REASONS {
            labels
        } else {
            "decision=\"refuse\",reason=\"other\"".to_owned()
        };
        *refusals.entry(labels).or_default() += 1;
    }

    /// Records the policy module in force (replacing the previous one).
    pub fn policy_in_force(&self, sha256: &str) {
        let mut series = self.series();
        let info = series.entry("sip_ingress_policy_info").or_default();
        info.clear();
        info.insert(format!("sha256=\"{sha256}\""), 1);
    }

    /// Counts a decision that failed closed.
    pub fn policy_failure(&self, kind: &'static str) {
        self.count(
            "sip_ingress_policy_failures_total",
            format!("kind=\"{kind}\""),
        );
    }

    /// Counts a reload, applied or refused.
    pub fn policy_reload(&self, applied: bool) {
        let result = if applied { "applied" } else { "refused" };
        self.count(
            "sip_ingress_policy_reloads_total",
            format!("result=\"{result}\""),
        );
    }

    /// Records the live state of the proxy serving `socket`.
    pub fn live(&self, socket: &str, (dialogs, transactions): (usize, usize)) {
        let labels = format!("socket=\"{socket}\"");
        self.set("sip_ingress_dialogs", labels.clone(), dialogs as u64);
        self.set("sip_ingress_transactions", labels, transactions as u64);
    }

    /// Adds `n` to the unlabelled counter `family`.
    fn add(&self, family: &'static str, n: u64) {
        if n > 0 {
            *self
                .series()
                .entry(family)
                .or_default()
                .entry(String::new())
                .or_default() += n;
        }
    }

    /// Counts `sent` REGISTERs sent to registrars.
    pub fn register_requests(&self, sent: u64) {
        self.add("sip_ingress_register_requests_total", sent);
    }

    /// Counts `retries` registration attempts made after a failure.
    pub fn register_retries(&self, retries: u64) {
        self.add("sip_ingress_register_retries_total", retries);
    }

    /// Counts a registrar's answer `code` to a REGISTER.
    pub fn register_answer(&self, code: u16) {
        self.count(
            "sip_ingress_register_answers_total",
            format!("code=\"{code}\""),
        );
    }

    /// Records how many bindings stand where (replacing the previous counts): by lifecycle
    /// status and SIP status, both in seed 002's words.
    pub fn registrations(
        &self,
        counts: impl IntoIterator<Item = (&'static str, &'static str, usize)>,
    ) {
        let mut series = self.series();
        let gauge = series.entry("sip_ingress_registrations").or_default();
        gauge.clear();
        for (lifecycle, sip, count) in counts {
            gauge.insert(
                format!("lifecycle=\"{lifecycle}\",sip_status=\"{sip}\""),
                count as u64,
            );
        }
    }

    /// The Prometheus text exposition (version 0.0.4).
    pub fn render(&self) -> String {
        let series = self.series();
        let mut out = String::new();
        for (family, kind, help) in FAMILIES {
            let _ = writeln!(out, "# HELP {family} {help}\n# TYPE {family} {kind}");
            for (labels, value) in series.get(family).into_iter().flatten() {
                if labels.is_empty() {
                    let _ = writeln!(out, "{family} {value}");
                } else {
                    let _ = writeln!(out, "{family}{{{labels}}} {value}");
                }
            }
        }
        out
    }
}

/// `GET /metrics`: Prometheus text.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = Arc::clone(&metrics);
            async move {
                (
                    [("content-type", "text/plain; version=0.0.4")],
                    metrics.render(),
                )
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("metrics server stopped: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_render_with_their_family_and_only_the_policy_in_force() {
        let metrics = Metrics::default();
        metrics.message("udp");
        metrics.message("udp");
        metrics.count("sip_ingress_dropped_total", String::new());
        metrics.policy_in_force("ab12");
        metrics.policy_in_force("cd34");
        metrics.policy_failure("deadline");
        metrics.live("127.0.0.1:5060", (3, 1));
        let text = metrics.render();
        for line in [
            "# TYPE sip_ingress_messages_total counter",
            "sip_ingress_messages_total{transport=\"udp\"} 2",
            "sip_ingress_dropped_total 1",
            "sip_ingress_policy_info{sha256=\"cd34\"} 1",
            "sip_ingress_policy_failures_total{kind=\"deadline\"} 1",
            "sip_ingress_dialogs{socket=\"127.0.0.1:5060\"} 3",
            "sip_ingress_transactions{socket=\"127.0.0.1:5060\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        assert!(!text.contains("ab12"), "only the module in force: {text}");
    }

    #[test]
    fn refusal_reasons_are_bounded() {
        let metrics = Metrics::default();
        for n in 0..MAX_REFUSAL_REASONS + 10 {
            metrics.count_refusal(&format!("reason_{n}"));
        }
        let text = metrics.render();
        let series = text
            .lines()
            .filter(|l| l.starts_with("sip_ingress_admission_total{"))
            .count();
        assert_eq!(series, MAX_REFUSAL_REASONS + 1, "{text}");
        assert!(text.contains("reason=\"other\"} 10"), "{text}");
    }
}
