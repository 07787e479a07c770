//! The state of one rule's alert, as Prometheus keeps it
//! (`rules/alerting.go`): `inactive` → `pending` when the condition starts
//! to hold, `pending` → `firing` once it has held for the rule's `for`,
//! and back to `inactive` when it stops holding (from `firing` that is
//! a resolved alert, and a notification). This state, with the
//! notifications not yet delivered, is what [`super::Alerts`] keeps on
//! disk, so a restart neither fires again nor forgets.

use serde::{Deserialize, Serialize};

/// An alert's state (Prometheus's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// The condition does not hold.
    #[default]
    Inactive,
    /// It holds, for less than the rule's `for` so far.
    Pending,
    /// It has held for `for` or longer.
    Firing,
}

impl AlertState {
    /// The name, as `/api/v1/alerts` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

/// What an evaluation changed that receivers are told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing to tell.
    None,
    /// The alert started firing.
    Fired,
    /// A firing alert stopped holding.
    Resolved,
}

/// One rule's alert state; what is persisted (times are Unix ns).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RuleState {
    /// The state.
    pub state: AlertState,
    /// Since when the condition has held (pending or firing), Unix ns.
    pub active_at_ns: Option<u64>,
    /// When the alert started firing (the notifications' `startsAt`).
    pub fired_at_ns: Option<u64>,
    /// The last value computed (`None`: no data, or not evaluated yet).
    pub value: Option<f64>,
    /// When the rule was last evaluated.
    pub last_evaluation_ns: Option<u64>,
    /// The last evaluation's error, if it failed.
    pub last_error: Option<String>,
}

impl RuleState {
    /// Moves the state for an evaluation at `now_ns` whose condition
    /// `holds`, under the rule's `for_ns`; a `for` of 0 fires at once.
    pub fn step(&mut self, holds: bool, now_ns: u64, for_ns: u64) -> Transition {
        self.last_evaluation_ns = Some(now_ns);
        self.last_error = None;
        if !holds {
            let was = self.state;
            self.state = AlertState::Inactive;
            self.active_at_ns = None;
            return if was == AlertState::Firing { Transition::Resolved } else { Transition::None };
        }
        match self.state {
            AlertState::Firing => Transition::None,
            AlertState::Inactive | AlertState::Pending => {
                let since = *self.active_at_ns.get_or_insert(now_ns);
                if now_ns.saturating_sub(since) >= for_ns {
                    self.state = AlertState::Firing;
                    self.fired_at_ns = Some(now_ns);
                    Transition::Fired
                } else {
                    self.state = AlertState::Pending;
                    Transition::None
                }
            }
        }
    }

    /// Records a failed evaluation: the state stays as it was (Prometheus
    /// keeps its alerts when a rule's query fails), the error is shown.
    pub fn failed(&mut self, now_ns: u64, error: String) {
        self.last_evaluation_ns = Some(now_ns);
        self.last_error = Some(error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn pending_then_firing_after_for_then_resolved() {
        let mut s = RuleState::default();
        assert_eq!(s.step(false, S, 10 * S), Transition::None);
        assert_eq!(s.state, AlertState::Inactive);
        assert_eq!(s.step(true, 2 * S, 10 * S), Transition::None);
        assert_eq!((s.state, s.active_at_ns), (AlertState::Pending, Some(2 * S)));
        assert_eq!(s.step(true, 11 * S, 10 * S), Transition::None, "9 s of a 10 s `for`");
        assert_eq!(s.step(true, 12 * S, 10 * S), Transition::Fired);
        assert_eq!((s.state, s.active_at_ns, s.fired_at_ns), (AlertState::Firing, Some(2 * S), Some(12 * S)));
        assert_eq!(s.step(true, 13 * S, 10 * S), Transition::None, "fires once");
        // A failed evaluation keeps the state.
        s.failed(14 * S, "deadline".into());
        assert_eq!(s.state, AlertState::Firing);
        assert_eq!(s.step(false, 15 * S, 10 * S), Transition::Resolved);
        assert_eq!((s.state, s.active_at_ns), (AlertState::Inactive, None));
        assert_eq!(s.step(false, 16 * S, 10 * S), Transition::None);
    }

    #[test]
    fn pending_that_stops_holding_is_forgotten_silently() {
        let mut s = RuleState::default();
        s.step(true, S, 10 * S);
        assert_eq!(s.step(false, 2 * S, 10 * S), Transition::None);
        assert_eq!(s.step(true, 3 * S, 10 * S), Transition::None);
        assert_eq!(s.active_at_ns, Some(3 * S), "the `for` starts again");
        // `for` = 0 fires at the first evaluation that holds.
        let mut s = RuleState::default();
        assert_eq!(s.step(true, S, 0), Transition::Fired);
    }
}
