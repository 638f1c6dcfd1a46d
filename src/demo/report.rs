//! The demo's results as text: one line per step and the summary.

use super::*;

pub(super) fn mark(ok: bool) -> &'static str {
    if ok { "ok " } else { "BAD" }
}

/// The lines that show one step's result.
pub(super) fn step_text(r: &StepReport) -> String {
    format!(
        "{} step {}: host {}\n      cached reader before: {}   {}\n      after the notification: {}   {}\n      watcher: {}\n      send → event: {}\n",
        mark(r.ok),
        r.step,
        r.host_action,
        r.before,
        if r.stale_before {
            "(stale, as cached)"
        } else {
            "(already fresh: the cache was not in play)"
        },
        r.after,
        if r.fresh_after { "(fresh)" } else { "(STALE)" },
        if r.events.is_empty() {
            "(no events)".to_string()
        } else {
            r.events.join(", ")
        },
        r.latency_ms
            .map(|l| format!("{l:.2} ms"))
            .unwrap_or_else(|| "(missing)".into()),
    )
}

/// The closing table.
pub(super) fn summary(reports: &[StepReport]) -> String {
    use std::fmt::Write as _;
    let mut out = String::from(
        "\n| step | host action | stale before | fresh after | events | send → event |\n",
    );
    out.push_str("| --- | --- | --- | --- | --- | --- |\n");
    for r in reports {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            r.step,
            r.host_action,
            yes(r.stale_before),
            yes(r.fresh_after),
            if r.events_ok {
                "as expected"
            } else {
                "MISSING"
            },
            r.latency_ms
                .map(|l| format!("{l:.2} ms"))
                .unwrap_or_else(|| "-".into())
        );
    }
    let ok = reports.iter().filter(|r| r.ok).count();
    let _ = writeln!(out, "\n{ok} of {} steps behaved as shown.", reports.len());
    out
}

pub(super) fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "NO" }
}
