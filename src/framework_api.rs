//! Where a framework's REST API is, for `agora app`, `agora deployments` and
//! `agora job`: `--service` / `--cron` name it as a URL, a bare `host:port`,
//! or `zk://host:2181[,host:2181...]/path` — the framework's `--zk` URL, read
//! to find the instance elected there (every instance answers, standbys by
//! proxying to the leader, but asking the leader saves a hop and works while
//! a standby is down).

use agora_store::{Endpoints, ZkOptions};
use anyhow::{Context, bail};

/// The base URL (`http://host:port`, no trailing slash) of the REST API named
/// by `target`, the value of the flag `flag` (named in errors).
pub async fn base_url(flag: &str, target: &str) -> anyhow::Result<String> {
    let target = target.trim_end_matches('/');
    if !target.starts_with("zk://") {
        let base = if target.contains("://") {
            target.to_owned()
        } else {
            format!("http://{target}")
        };
        reqwest::Url::parse(&base).with_context(|| format!("{flag} {target:?} is not a URL"))?;
        return Ok(base);
    }
    let Endpoints::ZooKeeper(url) = Endpoints::parse(target).with_context(|| format!("{flag} {target:?}"))?
    else {
        bail!("{flag} {target:?} is not a zk:// URL");
    };
    let leader = agora_store::current_leader(&url, ZkOptions::default())
        .await
        .with_context(|| format!("{flag}: cannot read the leading instance from {url}"))?;
    match leader {
        Some(leader) => Ok(format!("http://{}", leader.address)),
        None => bail!("{flag}: no instance leads in {url} right now (is one running with --zk {url}?)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_address_becomes_an_http_base_url() {
        assert_eq!(
            base_url("--service", "127.0.0.1:8080").await.unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            base_url("--service", "http://svc:8080/").await.unwrap(),
            "http://svc:8080"
        );
    }

    #[tokio::test]
    async fn a_malformed_target_names_its_flag() {
        let err = base_url("--cron", "http://[::1").await.unwrap_err();
        assert!(format!("{err:#}").contains("--cron"), "{err:#}");
        let err = base_url("--cron", "zk://h:2181").await.unwrap_err();
        assert!(format!("{err:#}").contains("--cron"), "{err:#}");
    }

    #[tokio::test]
    async fn a_zk_url_leads_to_the_instance_elected_there() {
        use agora_store::{Election, LeaderInfo, ZkElection, ZkUrl};
        let zk = agora_store::zk_server::ZkServer::launch().await.unwrap();
        let root = zk.url("/agora-service");
        let err = base_url("--service", &root).await.unwrap_err();
        assert!(format!("{err:#}").contains("no instance leads"), "{err:#}");
        let election = ZkElection::new(
            &ZkUrl::parse(&root).unwrap().child("leader").unwrap(),
            ZkOptions::default(),
        );
        let _term = election
            .campaign(LeaderInfo::new("127.0.0.1:18080".to_owned()).to_bytes())
            .await
            .unwrap();
        assert_eq!(
            base_url("--service", &root).await.unwrap(),
            "http://127.0.0.1:18080"
        );
    }
}
