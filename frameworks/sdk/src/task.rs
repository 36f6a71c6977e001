//! Building `TaskInfo`s without spelling out every protobuf field.

use agora_proto::v1;
use agora_proto::{Resources, TaskId};

/// Builds a [`v1::TaskInfo`].
///
/// ```
/// use agora_sdk::TaskBuilder;
/// use agora_proto::{Resources, TaskId};
/// let task = TaskBuilder::new(TaskId::new_unchecked("hello-1"), "hello")
///     .shell("echo hello")
///     .resources(&Resources::new().scalar("cpus", 0.1).scalar("mem", 32.0))
///     .env("GREETING", "hi")
///     .build();
/// assert_eq!(task.task_id, "hello-1");
/// ```
#[derive(Debug, Clone)]
pub struct TaskBuilder {
    info: v1::TaskInfo,
}

impl TaskBuilder {
    /// A task with the given id and name, no command and no resources yet.
    pub fn new(id: TaskId, name: impl Into<String>) -> Self {
        Self {
            info: v1::TaskInfo {
                name: name.into(),
                task_id: id.into_string(),
                ..Default::default()
            },
        }
    }

    /// Runs `command` with `/bin/sh -c`.
    pub fn shell(mut self, command: impl Into<String>) -> Self {
        self.command().command = Some(v1::command_info::Command::Shell(command.into()));
        self
    }

    /// Runs an argv vector (argv[0] looked up on PATH).
    pub fn argv(mut self, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.command().command = Some(v1::command_info::Command::Argv(v1::Argv {
            args: args.into_iter().map(Into::into).collect(),
        }));
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.command().environment.push(v1::EnvironmentVariable {
            name: name.into(),
            value: value.into(),
        });
        self
    }

    /// The resources the task uses (replacing any set before).
    pub fn resources(mut self, resources: &Resources) -> Self {
        self.info.resources = resources.to_proto();
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.info.labels.push(v1::Label {
            key: key.into(),
            value: value.into(),
        });
        self
    }

    /// Runs the task in a container.
    pub fn container(mut self, container: v1::ContainerInfo) -> Self {
        self.info.container = Some(container);
        self
    }

    /// Time between SIGTERM and SIGKILL when the task is killed.
    pub fn kill_grace_period(mut self, grace: std::time::Duration) -> Self {
        self.info.kill_policy = Some(v1::KillPolicy {
            grace_period_seconds: Some(grace.as_secs_f64()),
        });
        self
    }

    /// The finished `TaskInfo` (agent id left empty: the master fills it in).
    pub fn build(self) -> v1::TaskInfo {
        self.info
    }

    fn command(&mut self) -> &mut v1::CommandInfo {
        self.info.command.get_or_insert_with(Default::default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_task_carries_command_and_resources() {
        let r = Resources::new().scalar("cpus", 0.5).scalar("mem", 64.0);
        let t = TaskBuilder::new(TaskId::new_unchecked("t1"), "job")
            .shell("true")
            .resources(&r)
            .build();
        assert_eq!(t.name, "job");
        assert_eq!(
            t.command.and_then(|c| c.command),
            Some(v1::command_info::Command::Shell("true".into()))
        );
        assert_eq!(Resources::from_proto(&t.resources), Ok(r));
    }

    #[test]
    fn environment_and_labels_accumulate() {
        let t = TaskBuilder::new(TaskId::new_unchecked("t1"), "job")
            .argv(["sleep", "1"])
            .env("A", "1")
            .env("B", "2")
            .label("k", "v")
            .build();
        assert_eq!(t.command.map(|c| c.environment.len()), Some(2));
        assert_eq!(t.labels.len(), 1);
    }
}
