//! Who answers the kubelet's SubjectAccessReviews: the RBAC evaluator over `--rbac-file`
//! (offline) or the cluster (online, SubjectAccessReview or SelfSubjectAccessReview).

use kubelet_authz::identity::UserInfo;
use kubelet_authz::rbac::{Attributes, RbacStore};
use kubelet_authz::review::SubjectAccessReviewSpec;

use crate::engine::{Answer, GrantInfo};
use crate::error::CliError;
use crate::online::Online;

/// The reviewer.
pub enum Authority {
    /// RBAC files, evaluated locally.
    Offline(RbacStore),
    /// The cluster; `self_review` when no `--as` was given.
    Online {
        /// The connection.
        cluster: Box<Online>,
        /// Use SelfSubjectAccessReview.
        self_review: bool,
    },
}

impl Authority {
    /// `offline` or `online`.
    pub fn mode(&self) -> &'static str {
        match self {
            Authority::Offline(_) => "offline",
            Authority::Online { .. } => "online",
        }
    }

    /// Answer one review.
    pub fn review(&self, spec: &SubjectAccessReviewSpec) -> Result<Answer, CliError> {
        match self {
            Authority::Offline(store) => Ok(rbac_answer(store, spec)),
            Authority::Online {
                cluster,
                self_review,
            } => cluster.review(spec, *self_review),
        }
    }
}

/// Evaluate a review with the RBAC evaluator, as kube-apiserver's RBAC authorizer would answer it.
pub fn rbac_answer(store: &RbacStore, spec: &SubjectAccessReviewSpec) -> Answer {
    let user = UserInfo {
        name: spec.user.clone(),
        uid: spec.uid.clone(),
        groups: spec.groups.clone(),
        extra: spec.extra.clone(),
    };
    let attrs = match (&spec.resource_attributes, &spec.non_resource_attributes) {
        (Some(r), _) => Attributes::Resource(r.clone()),
        (None, Some(n)) => Attributes::NonResource(n.clone()),
        (None, None) => Attributes::Resource(Default::default()),
    };
    let d = store.authorize(&user, &attrs);
    Answer {
        allowed: d.allowed,
        denied: false,
        reason: d.reason,
        grant: d.grant.map(|g| GrantInfo {
            binding_kind: g.binding_kind,
            binding_name: g.binding_name,
            role_kind: g.role_kind,
            role_name: g.role_name,
        }),
    }
}
