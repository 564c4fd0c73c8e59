//! Reading the API server's answers (TokenReview and SubjectAccessReview responses, transport
//! failures) and the webhook retry policy: which answers are retried, and after how long.

use crate::cache::Millis;
use crate::identity::{self, UserInfo};
use crate::review::{SubjectAccessReview, SubjectAccessReviewStatus, TokenReview};

use super::{CalloutResponse, SharedUser, TokenOutcome};

/// At most this many attempts per callout (`DefaultAuthWebhookRetryBackoff`: Steps 5).
pub const MAX_ATTEMPTS: u32 = 5;
/// First retry delay (500ms), growing by 1.5 per attempt, with up to 20% jitter.
pub const BASE_RETRY_DELAY_MS: u64 = 500;

/// Whether the webhook client retries this answer. The kubelet retries transport failures, 500,
/// 429, 504 and Retry-After (reference 2.10). Envoy answers a callout whose cluster cannot be
/// reached (refused, reset) with its own 503, so 503 counts as the transport failure it stands
/// for.
pub(super) fn is_retryable(response: &CalloutResponse) -> bool {
    match response {
        CalloutResponse::Failed(_) => true,
        CalloutResponse::Http {
            status,
            retry_after,
            ..
        } => matches!(status, 429 | 500 | 503 | 504) || *retry_after,
    }
}

/// How long to wait before attempt `attempt + 1`.
pub(super) fn retry_delay(attempt: u32, rand: u32) -> Millis {
    // 500ms * 1.5^(attempt-1), plus up to 20% jitter.
    let mut d = BASE_RETRY_DELAY_MS as f64;
    for _ in 1..attempt {
        d *= 1.5;
    }
    let jitter = 0.2 * f64::from(rand) / f64::from(u32::MAX);
    (d * (1.0 + jitter)) as Millis
}

pub(super) fn token_outcome(response: &CalloutResponse) -> TokenOutcome {
    match response {
        CalloutResponse::Failed(why) => TokenOutcome::Error(format!("token review failed: {why}")),
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
        CalloutResponse::Failed(why) => Err(format!("subject access review failed: {why}")),
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
