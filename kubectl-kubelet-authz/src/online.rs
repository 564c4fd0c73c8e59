//! Online mode: the cluster of the kubeconfig (as kubectl finds it: `--kubeconfig`, then
//! `$KUBECONFIG`, then `~/.kube/config`; `--context`), asked through the kube crate.
//!
//! - SubjectAccessReview for a named user (`--as`), SelfSubjectAccessReview otherwise;
//! - the kubelet version of a Node (`status.nodeInfo.kubeletVersion`);
//! - every ClusterRole, Role and binding, as one JSON `List` for the RBAC evaluator.
//!
//! Every failure here is a cluster error (exit 3). The commands stay synchronous: each call
//! blocks on a private tokio runtime.

use anyhow::{anyhow, Context as _};
use k8s_openapi::api::authorization::v1 as authz_v1;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::rbac::v1 as rbac_v1;
use kube::api::{ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use kubelet_authz::kubelet::KubeletVersion;
use kubelet_authz::review::{SubjectAccessReview, SubjectAccessReviewSpec};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::cli::ClusterArgs;
use crate::engine::Answer;
use crate::error::{cluster, CliError};

/// A connected cluster.
pub struct Online {
    rt: tokio::runtime::Runtime,
    client: Client,
    /// The API server URL, for messages.
    pub server: String,
}

fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({} {})", s.message, s.code, s.reason),
        other => {
            // The source chain, without the parts that repeat what was already said.
            let mut parts: Vec<String> = vec![other.to_string()];
            let mut src = std::error::Error::source(other);
            while let Some(s) = src {
                let text = s.to_string();
                if !parts.iter().any(|p| p.contains(&text)) {
                    parts.push(text);
                }
                src = s.source();
            }
            format!("{}: is the API server reachable?", parts.join(": "))
        }
    }
}

fn is_forbidden(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403)
}

fn convert<A: Serialize, B: DeserializeOwned>(a: &A) -> anyhow::Result<B> {
    serde_json::from_value(serde_json::to_value(a)?).context("converting the review")
}

impl Online {
    /// Load the kubeconfig and build a client (no request is sent yet).
    pub fn connect(args: &ClusterArgs) -> Result<Self, CliError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the I/O runtime")
            .map_err(cluster)?;
        let options = KubeConfigOptions {
            context: args.context.clone(),
            ..Default::default()
        };
        let config = rt.block_on(async {
            match &args.kubeconfig {
                Some(path) => match Kubeconfig::read_from(path) {
                    Ok(kc) => Config::from_custom_kubeconfig(kc, &options)
                        .await
                        .map_err(|e| format!("cannot load kubeconfig `{}`: {e}", path.display())),
                    Err(e) => Err(format!("cannot read kubeconfig `{}`: {e}", path.display())),
                },
                None if args.context.is_some() => Config::from_kubeconfig(&options)
                    .await
                    .map_err(|e| format!("cannot load the kubeconfig: {e}")),
                None => Config::infer()
                    .await
                    .map_err(|e| format!("cannot load the kubeconfig: {e}")),
            }
        });
        let config = config.map_err(|e| {
            cluster(anyhow!(
                "{e}: pass `--kubeconfig FILE` (or set KUBECONFIG), or `--rbac-file FILE` to work offline"
            ))
        })?;
        let server = config.cluster_url.to_string();
        let client = {
            let _guard = rt.enter();
            Client::try_from(config)
                .context("building the API client")
                .map_err(cluster)?
        };
        Ok(Online { rt, client, server })
    }

    fn fail(&self, what: &str, e: &kube::Error) -> CliError {
        cluster(anyhow!("{what} at {}: {}", self.server, describe(e)))
    }

    /// Ask one review: a SubjectAccessReview with the spec's user, or (`self_review`) a
    /// SelfSubjectAccessReview for the kubeconfig's own identity.
    pub fn review(
        &self,
        spec: &SubjectAccessReviewSpec,
        self_review: bool,
    ) -> Result<Answer, CliError> {
        let status = if self_review {
            let body = serde_json::json!({
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": spec.resource_attributes},
            });
            let ssar: authz_v1::SelfSubjectAccessReview = convert(&body).map_err(cluster)?;
            let api: Api<authz_v1::SelfSubjectAccessReview> = Api::all(self.client.clone());
            let got = self
                .rt
                .block_on(api.create(&PostParams::default(), &ssar))
                .map_err(|e| self.fail("SelfSubjectAccessReview failed", &e))?;
            got.status
        } else {
            let sar: authz_v1::SubjectAccessReview =
                convert(&SubjectAccessReview::request(spec.clone())).map_err(cluster)?;
            let api: Api<authz_v1::SubjectAccessReview> = Api::all(self.client.clone());
            let got = self
                .rt
                .block_on(api.create(&PostParams::default(), &sar))
                .map_err(|e| {
                    if is_forbidden(&e) {
                        cluster(anyhow!(
                            "creating a SubjectAccessReview is forbidden at {}: {}: `--as` needs `create` on subjectaccessreviews (authorization.k8s.io); drop `--as` to check yourself",
                            self.server,
                            describe(&e)
                        ))
                    } else {
                        self.fail("SubjectAccessReview failed", &e)
                    }
                })?;
            got.status
        };
        let status = status.ok_or_else(|| {
            cluster(anyhow!(
                "the API server at {} answered a review without a status",
                self.server
            ))
        })?;
        Ok(Answer {
            allowed: status.allowed,
            denied: status.denied.unwrap_or(false),
            reason: status.reason.unwrap_or_default(),
            grant: None,
        })
    }

    /// The kubelet version a Node reports.
    pub fn node_version(&self, node: &str) -> Result<KubeletVersion, CliError> {
        let api: Api<Node> = Api::all(self.client.clone());
        let got = self
            .rt
            .block_on(api.get(node))
            .map_err(|e| {
                cluster(anyhow!(
                    "reading node `{node}` failed at {}: {}: pass `--kubelet-version` to model the kubelet without reading the Node",
                    self.server,
                    describe(&e)
                ))
            })?;
        let v = got
            .status
            .and_then(|s| s.node_info)
            .map(|i| i.kubelet_version)
            .unwrap_or_default();
        v.parse::<KubeletVersion>().map_err(|e| {
            cluster(anyhow!(
                "node `{node}` reports kubelet version `{v}`: {e}; pass `--kubelet-version`"
            ))
        })
    }

    fn list_all<K>(&self, plural: &str) -> Result<Vec<serde_json::Value>, CliError>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Serialize
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let api: Api<K> = Api::all(self.client.clone());
        self.collect(plural, self.rt.block_on(api.list(&ListParams::default())))
    }

    fn list_cluster<K>(&self, plural: &str) -> Result<Vec<serde_json::Value>, CliError>
    where
        K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope>
            + Clone
            + DeserializeOwned
            + Serialize
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let api: Api<K> = Api::all(self.client.clone());
        self.collect(plural, self.rt.block_on(api.list(&ListParams::default())))
    }

    fn collect<K: Serialize + Clone>(
        &self,
        plural: &str,
        got: Result<kube::core::ObjectList<K>, kube::Error>,
    ) -> Result<Vec<serde_json::Value>, CliError> {
        match got {
            Ok(list) => list
                .items
                .iter()
                .map(|i| serde_json::to_value(i).context("encoding RBAC objects").map_err(cluster))
                .collect(),
            Err(e) if is_forbidden(&e) => Err(cluster(anyhow!(
                "listing {plural} is forbidden at {}: {}: ask for `list` on {plural} (rbac.authorization.k8s.io), or export them with `kubectl get clusterroles,roles,clusterrolebindings,rolebindings -A -o yaml` and pass `--rbac-file`",
                self.server,
                describe(&e)
            ))),
            Err(e) => Err(self.fail(&format!("listing {plural} failed"), &e)),
        }
    }

    /// Every ClusterRole, Role, ClusterRoleBinding and RoleBinding, as one JSON `List`.
    pub fn rbac_list(&self) -> Result<String, CliError> {
        let mut items = Vec::new();
        items.extend(self.list_cluster::<rbac_v1::ClusterRole>("clusterroles")?);
        items.extend(self.list_all::<rbac_v1::Role>("roles")?);
        items.extend(self.list_cluster::<rbac_v1::ClusterRoleBinding>("clusterrolebindings")?);
        items.extend(self.list_all::<rbac_v1::RoleBinding>("rolebindings")?);
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
        Ok(list.to_string())
    }
}
