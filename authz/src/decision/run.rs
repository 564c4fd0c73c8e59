//! The synchronous driver: one session run to its end with every callout answered at once (for
//! tests, the harness's auto-responder and the kubectl plugin).

use crate::cache::Millis;

use super::finish::Ending;
use super::{Callout, CalloutResponse, Engine, Outcome, Session, Step, Verdict};

/// the harness's auto-responder and the kubectl plugin's offline and online `can-i`). Waits
/// cannot happen with a single session; retries are taken at once.
pub fn run_to_end(
    engine: &mut Engine,
    session: &mut Session,
    now: Millis,
    answer: &mut dyn FnMut(&Callout) -> CalloutResponse,
) -> Verdict {
    let mut progress = session.start(engine, now);
    // Each iteration either finishes or sends a callout; bound the loop all the same.
    for _ in 0..64 {
        match progress.step {
            Step::Forward(v) | Step::Reply(v) => return v,
            Step::Call(c) => {
                let response = answer(&c);
                progress = session.on_callout(engine, now, response, 0);
            }
            Step::RetryAfter(_) => progress = session.on_retry(engine, now),
            Step::Wait => break,
        }
    }
    match session.fail_internal("synchronous driver could not finish") {
        Step::Forward(v) | Step::Reply(v) => v,
        // `fail_internal` always finishes; answer a plain 500 if that ever changes.
        _ => session.verdict(Ending::none(), Outcome::AuthorizerError, 500, String::new()),
    }
}
