//! The router over HTTP on loopback, against a real framework with no
//! master (`Service::start_detached`): state, deployments and events are
//! real; no offers arrive, so deployments never finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::runtime::Service;
use crate::state::KvStateStore;

struct TestApi {
    base: String,
    client: reqwest::Client,
    service: Option<Service>,
    server: tokio::task::JoinHandle<()>,
}

impl TestApi {
    async fn start() -> Self {
        let store = Arc::new(KvStateStore::new(Arc::new(agora_store::MemoryStore::new())));
        let service = Service::start_detached(store).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = super::router(service.handle());
        let server = tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await;
        });
        Self {
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            service: Some(service),
            server,
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, value)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (status, _, value) = self.call(Method::GET, path, None).await;
        (status, value)
    }

    async fn create(&self, app: Value) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        self.call(Method::POST, "/v2/apps", Some(app)).await
    }

    async fn stop(mut self) {
        self.server.abort();
        if let Some(service) = self.service.take() {
            service.stop().await.unwrap();
        }
    }
}

fn sleeper(id: &str) -> Value {
    json!({"id": id, "cmd": "sleep 1000", "cpus": 0.1, "mem": 32, "instances": 1})
}

#[tokio::test]
async fn ping_answers_pong() {
    let api = TestApi::start().await;
    let (status, body) = api.get("/ping").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, Value::String("pong".into()));
    api.stop().await;
}

#[tokio::test]
async fn creating_an_app_answers_201_with_location_and_deployment_id() {
    let api = TestApi::start().await;
    let (status, headers, body) = api.create(sleeper("/shop/web")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(headers["location"], "/v2/apps/shop/web");
    let deployment = headers["marathon-deployment-id"].to_str().unwrap().to_owned();
    assert_eq!(body["id"], "/shop/web");
    assert_eq!(body["deployments"], json!([{"id": deployment}]));
    assert_eq!(body["tasksRunning"], 0);
    assert!(body["version"].as_str().unwrap().ends_with('Z'));
    api.stop().await;
}

#[tokio::test]
async fn a_duplicate_id_is_409() {
    let api = TestApi::start().await;
    assert_eq!(api.create(sleeper("/web")).await.0, StatusCode::CREATED);
    let (status, _, body) = api.create(sleeper("/web")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["message"].is_string());
    api.stop().await;
}

#[tokio::test]
async fn an_invalid_app_is_422_with_details_and_nothing_is_stored() {
    let api = TestApi::start().await;
    let mut app = sleeper("/web");
    app["cpus"] = json!(-1);
    let (status, _, body) = api.create(app).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["details"][0]["path"], "/cpus");
    assert!(body["message"].is_string());
    let (_, list) = api.get("/v2/apps").await;
    assert_eq!(list, json!({"apps": []}));
    api.stop().await;
}

#[tokio::test]
async fn a_body_that_is_not_json_is_400() {
    let api = TestApi::start().await;
    let response = api
        .client
        .post(format!("{}/v2/apps", api.base))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"], "Invalid JSON");
    api.stop().await;
}

#[tokio::test]
async fn an_unknown_app_is_404_with_marathons_message_even_with_a_doubled_slash() {
    let api = TestApi::start().await;
    for path in [
        "/v2/apps/nope",
        "/v2/apps//nope",
        "/v2/apps//nope/tasks",
        "/v2/apps/nope/versions",
    ] {
        let (status, body) = api.get(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body, json!({"message": "App '/nope' does not exist"}), "{path}");
    }
    let (status, _, body) = api.call(Method::DELETE, "/v2/apps//nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"message": "App '/nope' does not exist"}));
    api.stop().await;
}

#[tokio::test]
async fn one_app_embeds_tasks_counts_and_deployments() {
    let api = TestApi::start().await;
    api.create(sleeper("/web")).await;
    let (status, body) = api.get("/v2/apps//web").await;
    assert_eq!(status, StatusCode::OK);
    let app = &body["app"];
    assert_eq!(app["id"], "/web");
    assert_eq!(app["tasks"], json!([]));
    assert_eq!(app["tasksRunning"], 0);
    assert_eq!(app["deployments"].as_array().unwrap().len(), 1);
    let (_, list) = api.get("/v2/apps").await;
    let listed = &list["apps"][0];
    assert!(listed.get("tasks").is_none(), "tasks only on request: {listed}");
    assert!(listed.get("deployments").is_some());
    let (_, list) = api.get("/v2/apps?embed=apps.tasks&embed=apps.taskStats").await;
    assert_eq!(list["apps"][0]["tasks"], json!([]));
    assert!(list["apps"][0]["taskStats"].is_object());
    api.stop().await;
}

#[tokio::test]
async fn the_app_list_filters_by_id_cmd_and_label() {
    let api = TestApi::start().await;
    let mut web = sleeper("/shop/web");
    web["labels"] = json!({"tier": "front"});
    api.create(web).await;
    let mut db = sleeper("/shop/db");
    db["cmd"] = json!("postgres -D /data");
    api.create(db).await;
    let ids = |body: &Value| -> Vec<String> {
        body["apps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&api.get("/v2/apps?id=WEB").await.1), ["/shop/web"]);
    assert_eq!(ids(&api.get("/v2/apps?cmd=Postgres").await.1), ["/shop/db"]);
    assert_eq!(ids(&api.get("/v2/apps?label=tier==front").await.1), ["/shop/web"]);
    let (status, body) = api.get("/v2/apps?label=a%20b").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    api.stop().await;
}

#[tokio::test]
async fn a_change_during_a_deployment_is_409_unless_forced_with_any_case() {
    let api = TestApi::start().await;
    let (_, headers, _) = api.create(sleeper("/web")).await;
    let first = headers["marathon-deployment-id"].to_str().unwrap().to_owned();
    let (status, _, body) = api
        .call(Method::PUT, "/v2/apps/web", Some(json!({"instances": 2})))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["deployments"], json!([{"id": first}]));
    let (status, headers, body) = api
        .call(
            Method::PUT,
            "/v2/apps/web?force=True",
            Some(json!({"instances": 2})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        headers["marathon-deployment-id"].to_str().unwrap(),
        body["deploymentId"].as_str().unwrap()
    );
    assert!(body["version"].is_string());
    let (_, app) = api.get("/v2/apps/web").await;
    assert_eq!(app["app"]["instances"], 2);
    api.stop().await;
}

#[tokio::test]
async fn a_bad_boolean_is_400_naming_the_parameter() {
    let api = TestApi::start().await;
    api.create(sleeper("/web")).await;
    let (status, _, body) = api
        .call(
            Method::PUT,
            "/v2/apps/web?force=maybe",
            Some(json!({"instances": 2})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["message"].as_str().unwrap().contains("force"), "{body}");
    api.stop().await;
}

#[tokio::test]
async fn versions_are_listed_and_put_version_rolls_back() {
    let api = TestApi::start().await;
    api.create(sleeper("/web")).await;
    let (status, _, body) = api
        .call(
            Method::PUT,
            "/v2/apps/web?force=true",
            Some(json!({"cmd": "sleep 2000"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, versions) = api.get("/v2/apps/web/versions").await;
    let versions = versions["versions"].as_array().unwrap().clone();
    assert_eq!(versions.len(), 2, "{versions:?}");
    let oldest = versions
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .min()
        .unwrap();
    let (status, old) = api.get(&format!("/v2/apps/web/versions/{oldest}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(old["cmd"], "sleep 1000");
    let (status, _, body) = api
        .call(
            Method::PUT,
            "/v2/apps/web?force=true",
            Some(json!({"version": oldest})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, app) = api.get("/v2/apps/web").await;
    assert_eq!(app["app"]["cmd"], "sleep 1000");
    let (status, body) = api.get("/v2/apps/web/versions/2001-01-01T00:00:00.000Z").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    api.stop().await;
}

#[tokio::test]
async fn put_creates_a_missing_app_with_201() {
    let api = TestApi::start().await;
    let (status, headers, body) = api
        .call(
            Method::PUT,
            "/v2/apps/fresh",
            Some(json!({"cmd": "sleep 1", "mem": 32})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(headers["location"], "/v2/apps/fresh");
    assert!(body["deploymentId"].is_string());
    let (status, _) = api.get("/v2/apps/fresh").await;
    assert_eq!(status, StatusCode::OK);
    api.stop().await;
}

#[tokio::test]
async fn deployments_are_listed_and_a_forced_cancel_is_202() {
    let api = TestApi::start().await;
    let (_, headers, _) = api.create(sleeper("/web")).await;
    let id = headers["marathon-deployment-id"].to_str().unwrap().to_owned();
    let (status, list) = api.get("/v2/deployments").await;
    assert_eq!(status, StatusCode::OK);
    let deployment = list
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == id)
        .cloned()
        .unwrap();
    assert_eq!(deployment["affectedApps"], json!(["/web"]));
    assert!(deployment["steps"][0]["actions"].is_array());
    let (status, _, _) = api
        .call(Method::DELETE, &format!("/v2/deployments/{id}?force=true"), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _, body) = api.call(Method::DELETE, "/v2/deployments/no-such", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "DeploymentPlan no-such does not exist");
    api.stop().await;
}

#[tokio::test]
async fn groups_are_derived_from_app_ids_and_deleted_as_one() {
    let api = TestApi::start().await;
    let (status, headers, body) = api
        .call(
            Method::POST,
            "/v2/groups",
            Some(json!({"id": "/shop", "apps": [sleeper("web"), sleeper("/shop/db")]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(headers["location"], "/v2/groups/shop");
    let (_, root) = api.get("/v2/groups").await;
    assert_eq!(root["groups"][0]["id"], "/shop");
    assert_eq!(root["groups"][0]["apps"].as_array().unwrap().len(), 2);
    let (status, shop) = api.get("/v2/groups//shop").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shop["id"], "/shop");
    let (status, _, _) = api
        .call(
            Method::POST,
            "/v2/groups",
            Some(json!({"id": "shop", "apps": [sleeper("x")]})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _, body) = api.call(Method::DELETE, "/v2/groups/shop?force=true", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["deploymentId"].is_string());
    let (status, body) = api.get("/v2/groups/nothing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "Group '/nothing' does not exist");
    api.stop().await;
}

#[tokio::test]
async fn info_leader_queue_and_metrics_answer() {
    let api = TestApi::start().await;
    api.create(sleeper("/web")).await;
    let (status, info) = api.get("/v2/info").await;
    assert_eq!(status, StatusCode::OK);
    assert!(info["marathon_config"].is_object() && info["http_config"].is_object());
    let (status, queue) = api.get("/v2/queue").await;
    assert_eq!(status, StatusCode::OK);
    assert!(queue["queue"].is_array());
    let (status, metrics) = api.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let text = metrics.as_str().unwrap();
    assert!(text.lines().any(|l| l == "agora_service_apps 1"), "{text}");
    let response = api
        .client
        .get(format!("{}/metrics", api.base))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    let json: Value = response.json().await.unwrap();
    assert_eq!(json["gauges"]["agora.service.apps"]["value"], 1);
    api.stop().await;
}

#[tokio::test]
async fn an_unknown_uri_is_404() {
    let api = TestApi::start().await;
    let (status, body) = api.get("/v2/nothing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "URI not found");
    api.stop().await;
}

/// Reads SSE `data:` payloads from a response until `until` matches one.
async fn read_events_until(
    stream: &mut reqwest::Response,
    buffer: &mut String,
    seen: &mut Vec<Value>,
    until: impl Fn(&Value) -> bool,
) {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            while let Some(end) = buffer.find("\n\n") {
                let frame: String = buffer.drain(..end + 2).collect();
                for line in frame.lines() {
                    if let Some(data) = line.strip_prefix("data:") {
                        let value: Value = serde_json::from_str(data.trim()).unwrap();
                        let done = until(&value);
                        seen.push(value);
                        if done {
                            return;
                        }
                    }
                }
            }
            let chunk = stream.chunk().await.unwrap().expect("stream ended");
            buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    })
    .await
    .unwrap_or_else(|_| panic!("event not seen; got {seen:?}"));
}

#[tokio::test]
async fn the_event_stream_starts_attached_and_carries_api_and_deployment_events() {
    let api = TestApi::start().await;
    let response = api
        .client
        .get(format!("{}/v2/events", api.base))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut stream = response;
    let (mut buffer, mut seen) = (String::new(), Vec::new());
    read_events_until(&mut stream, &mut buffer, &mut seen, |e| {
        e["eventType"] == "event_stream_attached"
    })
    .await;
    assert_eq!(seen[0]["remoteAddress"], "127.0.0.1");
    api.create(sleeper("/web")).await;
    read_events_until(&mut stream, &mut buffer, &mut seen, |e| {
        e["eventType"] == "api_post_event"
    })
    .await;
    let post = seen.last().unwrap().clone();
    assert_eq!(post["uri"], "/v2/apps");
    assert_eq!(post["appDefinition"]["id"], "/web");
    assert!(
        post["appDefinition"]["version"].is_string(),
        "the stored version: {post}"
    );
    if !seen.iter().any(|e| e["eventType"] == "deployment_info") {
        read_events_until(&mut stream, &mut buffer, &mut seen, |e| {
            e["eventType"] == "deployment_info"
        })
        .await;
    }
    let info = seen.iter().find(|e| e["eventType"] == "deployment_info").unwrap();
    assert!(info["plan"]["steps"].is_array());
    api.stop().await;
}

#[tokio::test]
async fn the_event_stream_keeps_only_the_asked_types() {
    let api = TestApi::start().await;
    let response = api
        .client
        .get(format!("{}/v2/events?event_type=deployment_info", api.base))
        .send()
        .await
        .unwrap();
    let mut stream = response;
    api.create(sleeper("/web")).await;
    let (mut buffer, mut seen) = (String::new(), Vec::new());
    read_events_until(&mut stream, &mut buffer, &mut seen, |e| {
        e["eventType"] == "deployment_info"
    })
    .await;
    assert!(
        seen.iter().all(|e| e["eventType"] == "deployment_info"),
        "{seen:?}"
    );
    api.stop().await;
}
