//! Reading the API server's answers (TokenReview and SubjectAccessReview responses, transport
//! failures) once the webhook retry rules ([`crate::webhook`]) have decided they are final.

use crate::identity::{self, UserInfo};
use crate::review::{SubjectAccessReview, SubjectAccessReviewStatus, TokenReview};

use super::{CalloutResponse, SharedUser, TokenOutcome};

pub use crate::webhook::{BASE_RETRY_DELAY_MS, MAX_ATTEMPTS};

pub(super) fn token_outcome(response: &CalloutResponse) -> TokenOutcome {
    match response {
        CalloutResponse::Failed(why)
        | CalloutResponse::ConnectFailed(why)
        | CalloutResponse::TimedOut(why) => {
            TokenOutcome::Error(format!("token review failed: {why}"))
        }
        CalloutResponse::Http { status, body, .. } => {
            if !(200..300).contains(status) {
                return TokenOutcome::Error(format!("token review failed: status {status}"));
            }
            match serde_json::from_slice::<TokenReview>(body) {
                Err(e) => TokenOutcome::Error(format!("token review: malformed response: {e}")),
                Ok(tr) => {
                    let st = tr.status.unwrap_or_default();
                    if st.authenticated {
                        let user = st
                            .user
                            .as_ref()
                            .map(UserInfo::from_review)
                            .unwrap_or_default();
                        TokenOutcome::Authenticated(SharedUser::new(
                            identity::add_authenticated_group(user),
                        ))
                    } else if !st.error.is_empty() {
                        TokenOutcome::Error(st.error)
                    } else {
                        TokenOutcome::Rejected
                    }
                }
            }
        }
    }
}

pub(super) fn sar_status(response: &CalloutResponse) -> Result<SubjectAccessReviewStatus, String> {
    match response {
        CalloutResponse::Failed(why)
        | CalloutResponse::ConnectFailed(why)
        | CalloutResponse::TimedOut(why) => Err(format!("subject access review failed: {why}")),
        CalloutResponse::Http { status, body, .. } => {
            if !(200..300).contains(status) {
                return Err(format!("subject access review failed: status {status}"));
            }
            serde_json::from_slice::<SubjectAccessReview>(body)
                .map_err(|e| format!("subject access review: malformed response: {e}"))
                .map(|r| r.status.unwrap_or_default())
        }
    }
}
