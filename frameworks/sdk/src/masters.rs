//! Finding the leading master: `agora_store::LeaderFinder` picks the
//! address; this reads the leader a standby names when it answers
//! UNAVAILABLE with `agora-leader` metadata.

use agora_store::LEADER_METADATA;

/// The leader's address a standby put in an UNAVAILABLE status, if any.
pub(crate) fn redirect_of(status: &tonic::Status) -> Option<String> {
    if status.code() != tonic::Code::Unavailable {
        return None;
    }
    let leader = status.metadata().get(LEADER_METADATA)?.to_str().ok()?.trim();
    (!leader.is_empty()).then(|| leader.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable_from_standby(leader: &str) -> tonic::Status {
        let mut status = tonic::Status::unavailable(format!("not the leader; the leader is at {leader}"));
        status
            .metadata_mut()
            .insert(LEADER_METADATA, leader.parse().expect("ascii"));
        status
    }

    #[test]
    fn a_standby_status_names_the_leader() {
        assert_eq!(
            redirect_of(&unavailable_from_standby("10.0.0.2:5050")),
            Some("10.0.0.2:5050".to_owned())
        );
        assert_eq!(redirect_of(&tonic::Status::unavailable("no leader yet")), None);
        let mut other = tonic::Status::internal("x");
        other
            .metadata_mut()
            .insert(LEADER_METADATA, "h:1".parse().expect("ascii"));
        assert_eq!(redirect_of(&other), None, "only UNAVAILABLE redirects");
    }
}
