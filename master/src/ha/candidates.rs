//! How many masters take part in the ZooKeeper election, for `--quorum`:
//! each candidate holds one latch node (`…-latch-NNNN`, Curator's
//! LeaderLatch) in the election directory for as long as its session lives.

use std::time::Duration;

use agora_store::{ZkOptions, ZkUrl};
use tokio::sync::watch;
use zookeeper_client as zk;

/// Curator's LeaderLatch node names contain this.
const LATCH: &str = "latch-";
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The number of candidates in the election at `url`, kept up to date in
/// the background until every receiver is dropped. Starts at 0; while
/// ZooKeeper is unreachable it keeps the last count seen. Needs a tokio
/// runtime.
pub fn count(url: &ZkUrl, options: ZkOptions) -> watch::Receiver<usize> {
    let (tx, rx) = watch::channel(0);
    let hosts = url.connect_string();
    let dir = url.path.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = tx.closed() => {}
            () = keep_counting(&hosts, &dir, &options, &tx) => {}
        }
    });
    rx
}

/// Counts the latch nodes among `children`.
pub fn latches(children: &[String]) -> usize {
    children.iter().filter(|c| c.contains(LATCH)).count()
}

async fn keep_counting(hosts: &str, dir: &str, options: &ZkOptions, tx: &watch::Sender<usize>) {
    let mut backoff = MIN_BACKOFF;
    let mut client: Option<zk::Client> = None;
    loop {
        let session = match client.take() {
            Some(c) if !c.state().is_terminated() => c,
            _ => match zk::Client::connector()
                .with_session_timeout(options.session_timeout)
                .connect(hosts)
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(%hosts, error = %e, "cannot reach ZooKeeper to count masters; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            },
        };
        match count_once(&session, dir, tx).await {
            Ok(()) => backoff = MIN_BACKOFF,
            Err(e) => {
                tracing::debug!(%dir, error = %e, "counting masters failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        client = Some(session);
    }
}

fn publish(tx: &watch::Sender<usize>, now: usize) {
    tx.send_if_modified(|n| {
        let changed = *n != now;
        *n = now;
        changed
    });
}

/// Publishes the current count and waits for the next change.
async fn count_once(client: &zk::Client, dir: &str, tx: &watch::Sender<usize>) -> Result<(), zk::Error> {
    let watcher = match client.list_and_watch_children(dir).await {
        Ok((children, watcher)) => {
            publish(tx, latches(&children));
            watcher
        }
        Err(zk::Error::NoNode) => {
            publish(tx, 0);
            let (stat, watcher) = client.check_and_watch_stat(dir).await?;
            if stat.is_some() {
                return Ok(());
            }
            watcher
        }
        Err(e) => return Err(e),
    };
    let event = watcher.changed().await;
    if event.event_type == zk::EventType::Session && event.session_state.is_terminated() {
        return Err(zk::Error::SessionExpired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_latch_nodes_count_as_candidates() {
        let children = vec![
            "_c_4b1e-latch-0000000001".to_owned(),
            "_c_9f00-latch-0000000003".to_owned(),
            "something-else".to_owned(),
        ];
        assert_eq!(latches(&children), 2);
    }
}
