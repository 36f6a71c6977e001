//! Facts about task states that every component needs.

use crate::v1::TaskState;

/// Whether a task in this state will never change state again.
pub fn is_terminal(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::Finished
            | TaskState::Failed
            | TaskState::Killed
            | TaskState::Error
            | TaskState::Lost
            | TaskState::Dropped
            | TaskState::Gone
            | TaskState::Unknown
    )
}

/// The Mesos name of a state, e.g. `TASK_RUNNING`, as shown in JSON and logs.
pub fn mesos_name(state: TaskState) -> &'static str {
    match state {
        TaskState::Unspecified => "TASK_UNSPECIFIED",
        TaskState::Staging => "TASK_STAGING",
        TaskState::Starting => "TASK_STARTING",
        TaskState::Running => "TASK_RUNNING",
        TaskState::Killing => "TASK_KILLING",
        TaskState::Finished => "TASK_FINISHED",
        TaskState::Failed => "TASK_FAILED",
        TaskState::Killed => "TASK_KILLED",
        TaskState::Error => "TASK_ERROR",
        TaskState::Lost => "TASK_LOST",
        TaskState::Dropped => "TASK_DROPPED",
        TaskState::Unreachable => "TASK_UNREACHABLE",
        TaskState::Gone => "TASK_GONE",
        TaskState::Unknown => "TASK_UNKNOWN",
    }
}

/// Parses a Mesos state name (`TASK_RUNNING`).
pub fn from_mesos_name(name: &str) -> Option<TaskState> {
    TaskState::from_str_name(&name.replacen("TASK_", "TASK_STATE_", 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesos_names_round_trip() {
        for v in 0..=13 {
            let s = TaskState::try_from(v).expect("valid state");
            assert_eq!(from_mesos_name(mesos_name(s)), Some(s));
        }
    }

    #[test]
    fn running_is_not_terminal_but_finished_is() {
        assert!(!is_terminal(TaskState::Running));
        assert!(!is_terminal(TaskState::Unreachable));
        assert!(is_terminal(TaskState::Finished));
    }
}
