//! The stand-in API server in-process: TokenReview, SubjectAccessReview (RBAC), SelfSubjectAccess
//! Review with impersonation, RBAC and Node reads, discovery, records and every fault switch.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;
use std::time::Duration;

use kubelet_authz_standins::apiserver::{ApiServer, ApiServerConfig, Fault, FaultKind};
use kubelet_authz_standins::client::{Client, ClientError};
use kubelet_authz_standins::pki::{ClientSubject, Pki};
use serde_json::{json, Value};

const TR: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
const SAR: &str = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
const SSAR: &str = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

/// The RBAC fixture: the shared seed roles when present, plus the stand-ins' own fixture.
fn config(dir: &std::path::Path) -> ApiServerConfig {
    ApiServerConfig::new(dir.join("pki"))
        .tokens_file(&testdata("tokens.csv"))
        .unwrap()
        .rbac_file(&testdata("rbac.yaml"))
        .unwrap()
        .rbac_file(
            &PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../authz/tests/fixtures/rbac/seed-roles.yaml"),
        )
        .unwrap()
        .nodes_file(&testdata("nodes.yaml"))
        .unwrap()
}

async fn start() -> (tempfile::TempDir, ApiServer, Client) {
    let dir = tempfile::tempdir().unwrap();
    let server = ApiServer::start(config(dir.path())).await.unwrap();
    let client = Client::new(server.ca_cert(), None).unwrap();
    (dir, server, client)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn sar(user: &str, groups: &[&str], verb: &str, subresource: &str) -> Value {
    json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "resourceAttributes": {"verb": verb, "version": "v1", "resource": "nodes",
                                   "subresource": subresource, "name": "worker-1"},
            "user": user,
            "groups": groups,
        }
    })
}

fn token_review(token: &str) -> Value {
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}})
}

#[tokio::test]
async fn token_review_valid_and_invalid() {
    let (_dir, server, client) = start().await;
    let auth = bearer("kubelet-authz-proxy-token");
    let h = [("authorization", auth.as_str())];
    let url = format!("{}{TR}", server.url());

    let resp = client
        .post_json(&url, &h, &token_review("alice-token"))
        .await
        .unwrap();
    assert_eq!(resp.status, 201);
    let body = resp.json();
    assert_eq!(body["kind"], "TokenReview");
    assert_eq!(body["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(body["spec"]["token"], "alice-token");
    assert_eq!(body["status"]["authenticated"], true);
    assert_eq!(body["status"]["user"]["username"], "alice");
    assert_eq!(body["status"]["user"]["uid"], "uid-alice");
    assert_eq!(
        body["status"]["user"]["groups"],
        json!(["dev", "monitoring", "system:authenticated"])
    );

    let resp = client
        .post_json(&url, &h, &token_review("nope"))
        .await
        .unwrap();
    assert_eq!(resp.status, 201);
    let body = resp.json();
    // `authenticated: false` is left out (Go's `omitempty`), the empty user is kept, as
    // kube-apiserver writes them (kubelet_authz::identity::token_review_status).
    assert!(body["status"].get("authenticated").is_none(), "{body}");
    assert_eq!(body["status"]["user"], json!({}));
    assert!(body["status"].get("error").is_none());

    // The caller itself must authenticate.
    let resp = client
        .post_json(&url, &[], &token_review("alice-token"))
        .await
        .unwrap();
    assert_eq!(resp.status, 401);
    let resp = client
        .post_json(
            &url,
            &[("authorization", "Bearer wrong")],
            &token_review("alice-token"),
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 401);

    let records = server.records();
    assert_eq!(
        records.len(),
        2,
        "unauthenticated calls are not reviews: {records:?}"
    );
    assert_eq!(records[0].kind, "TokenReview");
    assert_eq!(records[0].request["spec"]["token"], "alice-token");
    assert_eq!(
        records[0].caller,
        "system:serviceaccount:kube-system:kubelet-authz"
    );
    assert_eq!(
        records[1].response.as_ref().unwrap()["status"],
        json!({"user": {}})
    );
    server.shutdown().await;
}

#[tokio::test]
async fn subject_access_review_from_rbac() {
    let (_dir, server, client) = start().await;
    let auth = bearer("kubelet-authz-proxy-token");
    let h = [("authorization", auth.as_str())];
    let url = format!("{}{SAR}", server.url());

    let allow = client
        .post_json(&url, &h, &sar("alice", &["monitoring"], "get", "metrics"))
        .await
        .unwrap();
    assert_eq!(allow.status, 201);
    let body = allow.json();
    assert_eq!(body["status"]["allowed"], true, "{body}");
    assert!(body["status"]["reason"]
        .as_str()
        .unwrap()
        .contains("monitoring-node-metrics"));
    assert_eq!(body["spec"]["user"], "alice");

    let deny = client
        .post_json(&url, &h, &sar("alice", &["monitoring"], "get", "proxy"))
        .await
        .unwrap();
    assert_eq!(deny.json()["status"]["allowed"], false);
    assert!(deny.json()["status"].get("denied").is_none());

    let proxy = client
        .post_json(&url, &h, &sar("carol", &[], "create", "proxy"))
        .await
        .unwrap();
    assert_eq!(proxy.json()["status"]["allowed"], true);

    // system:masters is allowed before RBAC, as in kube-apiserver.
    let masters = client
        .post_json(
            &url,
            &h,
            &sar("root", &["system:masters"], "delete", "proxy"),
        )
        .await
        .unwrap();
    assert_eq!(masters.json()["status"]["allowed"], true);

    // From the shared seed roles: debugger may get nodes/proxy, not create it.
    let seed = client
        .post_json(&url, &h, &sar("debugger", &[], "get", "proxy"))
        .await
        .unwrap();
    assert_eq!(seed.json()["status"]["allowed"], true);

    // Neither user nor group: invalid.
    let invalid = client
        .post_json(&url, &h, &sar("", &[], "get", "proxy"))
        .await
        .unwrap();
    assert_eq!(invalid.status, 422);

    let records = server.records();
    assert_eq!(records.len(), 6);
    assert_eq!(records[0].kind, "SubjectAccessReview");
    assert_eq!(
        records[0].request["spec"]["resourceAttributes"]["subresource"],
        "metrics"
    );
    assert_eq!(
        records[1].response.as_ref().unwrap()["status"]["allowed"],
        false
    );
    server.shutdown().await;
}

#[tokio::test]
async fn self_subject_access_review_with_impersonation() {
    let (_dir, server, client) = start().await;
    let url = format!("{}{SSAR}", server.url());
    let ssar = |sub: &str| {
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
               "spec": {"resourceAttributes": {"verb": "get", "resource": "nodes", "subresource": sub}}})
    };
    let alice = bearer("alice-token");
    let resp = client
        .post_json(&url, &[("authorization", &alice)], &ssar("metrics"))
        .await
        .unwrap();
    assert_eq!(resp.status, 201);
    assert_eq!(resp.json()["status"]["allowed"], true);

    let imp = bearer("impersonator-token");
    // The impersonator itself may not read metrics...
    let resp = client
        .post_json(&url, &[("authorization", &imp)], &ssar("metrics"))
        .await
        .unwrap();
    assert_eq!(resp.json()["status"]["allowed"], false);
    // ...but as alice (plus the monitoring group) it may.
    let resp = client
        .post_json(
            &url,
            &[
                ("authorization", &imp),
                ("impersonate-user", "alice"),
                ("impersonate-group", "monitoring"),
            ],
            &ssar("metrics"),
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 201, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(resp.json()["status"]["allowed"], true);
    // Impersonating only the user: alice's token groups are not carried over.
    let resp = client
        .post_json(
            &url,
            &[("authorization", &imp), ("impersonate-user", "alice")],
            &ssar("metrics"),
        )
        .await
        .unwrap();
    assert_eq!(resp.json()["status"]["allowed"], false);
    // bob may not be impersonated.
    let resp = client
        .post_json(
            &url,
            &[("authorization", &imp), ("impersonate-user", "bob")],
            &ssar("metrics"),
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 403);
    assert_eq!(
        resp.json()["message"],
        "users \"bob\" is forbidden: User \"impersonator\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
    );
    // A user without impersonate rights at all.
    let bob = bearer("bob-token");
    let resp = client
        .post_json(
            &url,
            &[("authorization", &bob), ("impersonate-user", "alice")],
            &ssar("metrics"),
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 403);
    // Groups without a user: refused.
    let resp = client
        .post_json(
            &url,
            &[("authorization", &imp), ("impersonate-group", "monitoring")],
            &ssar("metrics"),
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 500);

    let kinds: Vec<String> = server.records().iter().map(|r| r.kind.clone()).collect();
    assert_eq!(
        kinds.len(),
        4,
        "refused impersonations are not reviews: {kinds:?}"
    );
    assert_eq!(server.records()[2].caller, "alice");
    server.shutdown().await;
}

#[tokio::test]
async fn client_certificate_caller() {
    let dir = tempfile::tempdir().unwrap();
    let server = ApiServer::start(config(dir.path())).await.unwrap();
    let pki = Pki::open(&dir.path().join("pki")).unwrap();
    let cert = pki
        .write_client_cert(
            "alice",
            &ClientSubject::new("alice", &["dev", "monitoring", "x"]).with_uid("u-1"),
        )
        .unwrap();
    let client = Client::new(server.ca_cert(), Some(&cert)).unwrap();
    let resp = client
        .post_json(
            &format!(
                "{}/apis/authentication.k8s.io/v1/selfsubjectreviews",
                server.url()
            ),
            &[],
            &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}),
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 201);
    let user = &resp.json()["status"]["userInfo"];
    assert_eq!(user["username"], "alice");
    assert_eq!(user["uid"], "u-1");
    assert_eq!(
        user["groups"],
        json!(["dev", "monitoring", "x", "system:authenticated"])
    );
    assert!(
        user["extra"]["authentication.kubernetes.io/credential-id"][0]
            .as_str()
            .unwrap()
            .starts_with("X509SHA256=")
    );

    // A certificate the engine's x509 conversion refuses (an empty UID attribute: kube-apiserver's
    // x509 authenticator errors) is not a user: 401, unless a valid token authenticates instead.
    let bad = pki
        .write_client_cert(
            "empty-uid",
            &ClientSubject::new("alice", &["dev"]).with_uid(""),
        )
        .unwrap();
    let client = Client::new(server.ca_cert(), Some(&bad)).unwrap();
    let ssr = format!(
        "{}/apis/authentication.k8s.io/v1/selfsubjectreviews",
        server.url()
    );
    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    let resp = client.post_json(&ssr, &[], &body).await.unwrap();
    assert_eq!(resp.status, 401);
    let resp = client
        .post_json(&ssr, &[("authorization", "Bearer bob-token")], &body)
        .await
        .unwrap();
    assert_eq!(resp.status, 201);
    assert_eq!(resp.json()["status"]["userInfo"]["username"], "bob");

    // A certificate from another CA is refused at the handshake.
    let other = Pki::open(&dir.path().join("other")).unwrap();
    let stranger = other
        .write_client_cert("s", &ClientSubject::new("alice", &[]))
        .unwrap();
    let client = Client::new(server.ca_cert(), Some(&stranger)).unwrap();
    assert!(client
        .get(&format!("{}/api", server.url()), &[])
        .await
        .is_err());
    server.shutdown().await;
}

#[tokio::test]
async fn rbac_and_node_reads_are_authorized() {
    let (_dir, server, client) = start().await;
    let alice = bearer("alice-token");
    let bob = bearer("bob-token");
    let url = |p: &str| format!("{}{p}", server.url());

    let resp = client
        .get(
            &url("/apis/rbac.authorization.k8s.io/v1/clusterroles"),
            &[("authorization", &alice)],
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    let body = resp.json();
    assert_eq!(body["kind"], "ClusterRoleList");
    let names: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"node-proxy"), "{names:?}");

    let resp = client
        .get(
            &url("/apis/rbac.authorization.k8s.io/v1/clusterroles"),
            &[("authorization", &bob)],
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 403);
    assert_eq!(
        resp.json()["message"],
        "clusterroles.rbac.authorization.k8s.io is forbidden: User \"bob\" cannot list resource \"clusterroles\" in API group \"rbac.authorization.k8s.io\" at the cluster scope"
    );

    let resp = client
        .get(
            &url("/apis/rbac.authorization.k8s.io/v1/namespaces/team-a/rolebindings"),
            &[("authorization", &alice)],
        )
        .await
        .unwrap();
    assert_eq!(resp.json()["kind"], "RoleBindingList");
    assert_eq!(resp.json()["items"].as_array().unwrap().len(), 1);
    let resp = client
        .get(
            &url("/apis/rbac.authorization.k8s.io/v1/namespaces/other/roles"),
            &[("authorization", &alice)],
        )
        .await
        .unwrap();
    assert_eq!(resp.json()["items"].as_array().unwrap().len(), 0);

    let resp = client
        .get(&url("/api/v1/nodes"), &[("authorization", &alice)])
        .await
        .unwrap();
    assert_eq!(resp.json()["kind"], "NodeList");
    assert_eq!(resp.json()["items"].as_array().unwrap().len(), 2);
    let resp = client
        .get(
            &url("/api/v1/nodes/worker-old"),
            &[("authorization", &alice)],
        )
        .await
        .unwrap();
    assert_eq!(resp.json()["kind"], "Node");
    assert_eq!(
        resp.json()["status"]["nodeInfo"]["kubeletVersion"],
        "v1.31.4"
    );
    let resp = client
        .get(&url("/api/v1/nodes/missing"), &[("authorization", &alice)])
        .await
        .unwrap();
    assert_eq!(resp.status, 404);
    let resp = client
        .get(&url("/api/v1/nodes/worker-1"), &[("authorization", &bob)])
        .await
        .unwrap();
    assert_eq!(resp.status, 403);
    assert_eq!(
        resp.json()["message"],
        "nodes \"worker-1\" is forbidden: User \"bob\" cannot get resource \"nodes\" in API group \"\" at the cluster scope"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn discovery_documents() {
    let (_dir, server, client) = start().await;
    let bob = bearer("bob-token");
    let get = |p: &'static str| {
        let url = format!("{}{p}", server.url());
        let client = client.clone();
        let bob = bob.clone();
        async move {
            client
                .get(&url, &[("authorization", &bob)])
                .await
                .unwrap()
                .json()
        }
    };
    assert_eq!(get("/version").await["gitVersion"], "v1.32.0");
    assert_eq!(get("/api").await["versions"], json!(["v1"]));
    assert_eq!(get("/apis").await["groups"].as_array().unwrap().len(), 3);
    assert_eq!(get("/api/v1").await["resources"][0]["name"], "nodes");
    assert_eq!(
        get("/apis/authorization.k8s.io/v1").await["kind"],
        "APIResourceList"
    );
    assert_eq!(
        get("/apis/authentication.k8s.io/v1").await["groupVersion"],
        "authentication.k8s.io/v1"
    );
    assert_eq!(
        get("/apis/rbac.authorization.k8s.io/v1").await["resources"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    // /version is public; the rest needs a caller.
    let resp = client
        .get(&format!("{}/version", server.url()), &[])
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    let resp = client
        .get(&format!("{}/apis", server.url()), &[])
        .await
        .unwrap();
    assert_eq!(resp.status, 401);
    server.shutdown().await;
}

#[tokio::test]
async fn records_and_faults_over_http() {
    let (_dir, server, client) = start().await;
    let auth = bearer("kubelet-authz-proxy-token");
    let h = [("authorization", auth.as_str())];
    let url = format!("{}{SAR}", server.url());
    client
        .post_json(&url, &h, &sar("alice", &[], "get", "proxy"))
        .await
        .unwrap();

    let records = client
        .get(&format!("{}/_standin/records", server.url()), &[])
        .await
        .unwrap()
        .json();
    assert_eq!(records.as_array().unwrap().len(), 1);
    assert_eq!(records[0]["kind"], "SubjectAccessReview");
    assert_eq!(records[0]["status"], 201);
    assert!(records[0]["timestamp"].as_str().unwrap().ends_with('Z'));
    let resp = client
        .request(
            "DELETE",
            &format!("{}/_standin/records", server.url()),
            &[],
            "",
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert!(server.records().is_empty());

    let resp = client
        .post_json(
            &format!("{}/_standin/fault", server.url()),
            &[],
            &json!({"kind": "error500", "count": 1}),
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(server.fault().unwrap().kind, FaultKind::Error500);
    let resp = client
        .post_json(&url, &h, &sar("alice", &[], "get", "proxy"))
        .await
        .unwrap();
    assert_eq!(resp.status, 500);
    assert!(server.fault().is_none(), "a counted fault clears itself");
    let resp = client
        .post_json(&url, &h, &sar("alice", &[], "get", "proxy"))
        .await
        .unwrap();
    assert_eq!(resp.status, 201);

    let resp = client
        .post_json(
            &format!("{}/_standin/fault", server.url()),
            &[],
            &json!({"kind": "bogus"}),
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 400);
    client
        .post_json(
            &format!("{}/_standin/fault", server.url()),
            &[],
            &json!({"kind": "tooManyRequests"}),
        )
        .await
        .unwrap();
    assert_eq!(
        client
            .post_json(&url, &h, &sar("a", &[], "get", "x"))
            .await
            .unwrap()
            .status,
        429
    );
    assert_eq!(
        client
            .post_json(&url, &h, &sar("a", &[], "get", "x"))
            .await
            .unwrap()
            .status,
        429
    );
    client
        .request(
            "DELETE",
            &format!("{}/_standin/fault", server.url()),
            &[],
            "",
        )
        .await
        .unwrap();
    assert_eq!(
        client
            .post_json(&url, &h, &sar("a", &[], "get", "x"))
            .await
            .unwrap()
            .status,
        201
    );

    let stats = client
        .get(&format!("{}/_standin/stats", server.url()), &[])
        .await
        .unwrap()
        .json();
    assert_eq!(stats["requests"], 6);
    assert_eq!(stats["paths"][SAR], 6);
    assert_eq!(server.request_count(), 6);
    let faults: Vec<Option<String>> = server.records().iter().map(|r| r.fault.clone()).collect();
    assert_eq!(
        faults,
        vec![
            Some("error500".into()),
            None,
            Some("tooManyRequests".into()),
            Some("tooManyRequests".into()),
            None
        ]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn each_fault_switch() {
    let (_dir, server, client) = start().await;
    let auth = bearer("kubelet-authz-proxy-token");
    let h = [("authorization", auth.as_str())];
    let sar_url = format!("{}{SAR}", server.url());
    let tr_url = format!("{}{TR}", server.url());
    let body = sar("carol", &[], "get", "proxy");

    server.set_fault(Fault::times(FaultKind::Error500, 1));
    let resp = client.post_json(&sar_url, &h, &body).await.unwrap();
    assert_eq!(resp.status, 500);
    assert_eq!(resp.json()["kind"], "Status");

    server.set_fault(Fault::times(FaultKind::TooManyRequests, 1));
    let resp = client.post_json(&sar_url, &h, &body).await.unwrap();
    assert_eq!(resp.status, 429);
    assert_eq!(resp.header("retry-after"), Some("1"));

    server.set_fault(Fault::times(FaultKind::Hang, 1));
    let short = client.clone().with_timeout(Duration::from_millis(500));
    assert!(matches!(
        short.post_json(&sar_url, &h, &body).await,
        Err(ClientError::Timeout)
    ));

    server.set_fault(Fault::times(FaultKind::Close, 1));
    assert!(matches!(
        client.post_json(&sar_url, &h, &body).await,
        Err(ClientError::Http(_))
    ));

    server.set_fault(Fault::times(FaultKind::MalformedJson, 1));
    let resp = client.post_json(&sar_url, &h, &body).await.unwrap();
    assert_eq!(resp.status, 200);
    assert!(serde_json::from_slice::<Value>(&resp.body).is_err());

    server.set_fault(Fault::times(FaultKind::AllowedAndDenied, 1));
    // Not applicable to a TokenReview: answered normally and the switch stays.
    let resp = client
        .post_json(&tr_url, &h, &token_review("alice-token"))
        .await
        .unwrap();
    assert_eq!(resp.json()["status"]["authenticated"], true);
    let resp = client.post_json(&sar_url, &h, &body).await.unwrap();
    assert_eq!(resp.json()["status"]["allowed"], true);
    assert_eq!(resp.json()["status"]["denied"], true);

    let mut huge = Fault::times(FaultKind::HugeBody, 1);
    huge.huge_bytes = Some(4 * 1024 * 1024);
    server.set_fault(huge);
    let resp = client.post_json(&sar_url, &h, &body).await.unwrap();
    assert_eq!(resp.status, 200);
    assert!(resp.body.len() > 4 * 1024 * 1024);
    assert_eq!(resp.json()["kind"], "SubjectAccessReview");

    // Scoped to TokenReviews: SARs pass.
    server.set_fault(Fault::always(FaultKind::Error500).for_reviews(&["TokenReview"]));
    assert_eq!(
        client.post_json(&sar_url, &h, &body).await.unwrap().status,
        201
    );
    assert_eq!(
        client
            .post_json(&tr_url, &h, &token_review("x"))
            .await
            .unwrap()
            .status,
        500
    );
    assert_eq!(
        client
            .post_json(&tr_url, &h, &token_review("x"))
            .await
            .unwrap()
            .status,
        500
    );
    server.clear_fault();
    assert_eq!(
        client
            .post_json(&tr_url, &h, &token_review("x"))
            .await
            .unwrap()
            .status,
        201
    );

    // A hanging request does not keep the server from shutting down.
    server.set_fault(Fault::always(FaultKind::Hang));
    let c2 = client.clone();
    let url2 = sar_url.clone();
    let pending = tokio::spawn(async move {
        c2.post_json(
            &url2,
            &[("authorization", "Bearer admin-token")],
            &json!({}),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    tokio::time::timeout(Duration::from_secs(5), server.shutdown())
        .await
        .expect("shutdown with a hanging request");
    assert!(pending.await.unwrap().is_err());
}
