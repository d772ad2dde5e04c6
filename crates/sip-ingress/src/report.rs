//! What the proxy core did, reported: each [`Event`] counted in the metrics registry and
//! logged, with the address it concerns.

use std::net::SocketAddr;

use crate::metrics::Metrics;
use crate::proxy::Event;

/// Counts and logs `event`, about a message from or to `peer`.
pub fn event(metrics: &Metrics, event: &Event, peer: SocketAddr) {
    count(metrics, event);
    match event {
        Event::Admitted => tracing::info!(source = %peer, "invite admitted"),
        Event::Refused(reason) => {
            tracing::info!(source = %peer, reason = %reason, "invite refused")
        }
        Event::Answered(code) => tracing::debug!(source = %peer, code, "answered"),
        Event::Undeliverable(code) => {
            tracing::info!(agent = %peer, code, "invite could not be sent to its agent");
        }
        Event::NextAddress(after) => {
            let after = after.label();
            tracing::info!(agent = %peer, after, "invite sent on to its agent's next address");
        }
        other => tracing::debug!(source = %peer, event = ?other, "handled"),
    }
}

/// Counts and logs `event`, which happened when the agent host name `name` was looked up.
pub fn resolved_event(metrics: &Metrics, event: &Event, name: &str) {
    count(metrics, event);
    match event {
        Event::Admitted => tracing::info!(agent_host = name, "invite admitted"),
        Event::Refused(reason) => {
            tracing::info!(agent_host = name, reason = %reason, "invite refused");
        }
        other => tracing::debug!(agent_host = name, event = ?other, "handled"),
    }
}

/// Counts what the proxy did.
pub fn count(metrics: &Metrics, event: &Event) {
    match event {
        Event::Admitted => metrics.count(
            "sip_ingress_admission_total",
            "decision=\"forward\",reason=\"admitted\"".to_owned(),
        ),
        Event::Refused(reason) => metrics.count_refusal(reason.as_str()),
        Event::Answered(code) => {
            metrics.count("sip_ingress_answers_total", format!("code=\"{code}\""));
        }
        Event::Retransmission => {
            metrics.count(
                "sip_ingress_relayed_total",
                "kind=\"retransmission\"".to_owned(),
            );
        }
        Event::Relayed => metrics.count("sip_ingress_relayed_total", "kind=\"request\"".to_owned()),
        Event::ResponseRelayed => {
            metrics.count("sip_ingress_relayed_total", "kind=\"response\"".to_owned());
        }
        Event::ResponseAbsorbed => {
            metrics.count("sip_ingress_responses_absorbed_total", String::new());
        }
        Event::Dropped => metrics.count("sip_ingress_dropped_total", String::new()),
        // The registration client counts its answers itself.
        Event::OwnResponse => {}
        Event::AwaitingName => {
            metrics.count("sip_ingress_invites_awaiting_name_total", String::new())
        }
        Event::Retransmitted => metrics.count(
            "sip_ingress_invite_timers_total",
            "timer=\"A\",action=\"retransmitted\"".to_owned(),
        ),
        Event::TimedOut(code) => metrics.count(
            "sip_ingress_invite_timers_total",
            format!("timer=\"B\",action=\"answered_{code}\""),
        ),
        Event::CancelRetransmitted => metrics.count(
            "sip_ingress_invite_timers_total",
            "timer=\"E\",action=\"cancel_retransmitted\"".to_owned(),
        ),
        Event::RangTooLong => metrics.count(
            "sip_ingress_invite_timers_total",
            "timer=\"C\",action=\"cancelled\"".to_owned(),
        ),
        Event::CancelUnanswered(code) => metrics.count(
            "sip_ingress_invite_timers_total",
            format!("timer=\"cancel\",action=\"answered_{code}\""),
        ),
        Event::Undeliverable(code) => metrics.count(
            "sip_ingress_invite_send_failures_total",
            format!("action=\"answered_{code}\""),
        ),
        Event::NextAddress(after) => metrics.count(
            "sip_ingress_invite_next_address_total",
            format!("after=\"{}\"", after.label()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::Failover;

    #[test]
    fn events_become_labelled_series() {
        let metrics = Metrics::default();
        for event in [
            Event::Admitted,
            Event::Refused("from_not_e164".into()),
            Event::Answered(404),
            Event::Dropped,
            Event::ResponseAbsorbed,
            Event::Retransmitted,
            Event::TimedOut(408),
            Event::RangTooLong,
            Event::CancelRetransmitted,
            Event::CancelUnanswered(487),
            Event::Undeliverable(500),
            Event::NextAddress(Failover::TransportError),
            Event::NextAddress(Failover::Unavailable),
            Event::AwaitingName,
        ] {
            count(&metrics, &event);
        }
        let text = metrics.render();
        for line in [
            "sip_ingress_admission_total{decision=\"forward\",reason=\"admitted\"} 1",
            "sip_ingress_admission_total{decision=\"refuse\",reason=\"from_not_e164\"} 1",
            "sip_ingress_invite_timers_total{timer=\"A\",action=\"retransmitted\"} 1",
            "sip_ingress_invite_timers_total{timer=\"B\",action=\"answered_408\"} 1",
            "sip_ingress_invite_timers_total{timer=\"C\",action=\"cancelled\"} 1",
            "sip_ingress_invite_timers_total{timer=\"E\",action=\"cancel_retransmitted\"} 1",
            "sip_ingress_invite_timers_total{timer=\"cancel\",action=\"answered_487\"} 1",
            "sip_ingress_invite_send_failures_total{action=\"answered_500\"} 1",
            "sip_ingress_invite_next_address_total{after=\"transport_error\"} 1",
            "sip_ingress_invite_next_address_total{after=\"503\"} 1",
            "sip_ingress_invites_awaiting_name_total 1",
            "sip_ingress_answers_total{code=\"404\"} 1",
            "sip_ingress_dropped_total 1",
            "sip_ingress_responses_absorbed_total 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }
}
