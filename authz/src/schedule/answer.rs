//! How a decided request is answered: the verdict carried out (forward or reply), what a failed
//! hostcall turns it into (a fail-closed 500, itself a verdict), then counted and audited.

use super::{Action, Awaiting, Done, Failure, How, Level, Record, Scheduler, MAX_STREAMS};
use crate::decision::Verdict;

impl Scheduler {
    /// Request `sid` is decided: carry the verdict out.
    pub(super) fn finish(&mut self, sid: u32, v: Verdict, how: How) {
        self.forget(sid);
        if let Some(stream) = self.streams.remove(&sid) {
            self.answer(stream.into_record(), v, how);
        }
    }

    pub(super) fn answer(&mut self, record: Record, mut v: Verdict, how: How) {
        let stream = record.id;
        let action = match how {
            // The edits move to the action: nothing after reads them.
            How::Forward => Action::Forward {
                stream,
                remove: v.remove_headers,
                set: std::mem::take(&mut v.set_headers),
                resume: self.ctx.headers_of != Some(stream),
            },
            // The body stays with the verdict too: a 400's is its audited reason.
            How::Reply => Action::Reply {
                stream,
                status: v.status,
                body: v.body.clone(),
            },
        };
        let awaiting = Awaiting::Answered {
            record,
            verdict: v,
            how,
        };
        self.outbox.push_back((action, Some(awaiting)));
    }

    /// Answer a fail-closed verdict (the filter's own 500), counted as an internal error too.
    pub(super) fn fail_closed(&mut self, record: Record, v: Verdict) {
        self.counters.internal_error();
        let why = v.failure.as_deref().unwrap_or_default();
        self.log(
            Level::Error,
            format!("kubelet-authz: failing request closed: {why}"),
        );
        self.answer(record, v, How::Reply);
    }

    pub(super) fn answered(
        &mut self,
        record: Record,
        v: Verdict,
        how: How,
        result: Result<Done, Failure>,
    ) {
        let stream = record.id;
        match (how, result) {
            (_, Err(Failure::Gone(why))) => {
                // The request is gone: there is nobody to answer.
                self.counters.internal_error();
                self.log(
                    Level::Warn,
                    format!("kubelet-authz: request {stream} went away before its answer: {why}"),
                );
            }
            (How::Forward, Err(e)) => {
                // Never forward a request whose credentials could not be stripped.
                self.fail_closed(record, v.failed_closed(&e.to_string()));
            }
            (How::Forward, Ok(_)) => {
                self.counters.decision(&v);
                if self.ctx.headers_of == Some(stream) {
                    self.continued = true;
                }
                self.audit(record, v, None);
            }
            (How::Reply, result) => {
                if let Err(e) = result {
                    self.counters.internal_error();
                    self.log(Level::Error, format!("kubelet-authz: {e}"));
                }
                self.counters.decision(&v);
                if self.replied.len() < MAX_STREAMS {
                    self.replied.insert(stream);
                }
                let code = Some(v.status);
                self.audit(record, v, code);
            }
        }
    }

    /// The audit event of a decision, if the audit policy writes it. Only a written event reads
    /// the client address (one of the dearer hostcalls), once.
    pub(super) fn audit(&mut self, mut record: Record, v: Verdict, code: Option<u16>) {
        if !self.auditor.writes(&v, code) {
            self.recycle(record, v);
            return;
        }
        if record.source_read {
            self.write_audit(&record, &v, code);
            self.recycle(record, v);
            return;
        }
        record.source_read = true;
        let stream = record.id;
        let awaiting = Awaiting::Source {
            record,
            verdict: v,
            code,
        };
        self.outbox
            .push_back((Action::ReadSource { stream }, Some(awaiting)));
    }

    pub(super) fn write_audit(&mut self, record: &Record, v: &Verdict, code: Option<u16>) {
        let mut line = self.lines.take();
        line.push_str(self.auditor.line(
            v,
            &record.audit,
            record.received_ms,
            record.id,
            self.last_now,
            code,
        ));
        self.log(Level::Info, line);
    }
}

impl Scheduler {
    /// Keep the buffers of a finished request and its verdict for the next ones.
    pub(super) fn recycle(&mut self, mut record: Record, v: Verdict) {
        if let Some(address) = record.audit.source_address.take() {
            self.lines.give(address);
        }
        self.engine.reclaim(record.audit, v);
    }

    /// [`source_address`], in a kept buffer.
    pub(super) fn source_address(&mut self, raw: Option<&[u8]>) -> Option<String> {
        let s = address_text(raw)?;
        let mut address = self.lines.take();
        address.push_str(s);
        Some(address)
    }
}

/// The client address as the audit event takes it, from the raw `source.address` property.
pub fn source_address(raw: Option<&[u8]>) -> Option<String> {
    address_text(raw).map(str::to_string)
}

/// The raw `source.address` as text: UTF-8 and not empty.
fn address_text(raw: Option<&[u8]>) -> Option<&str> {
    let s = std::str::from_utf8(raw?).ok()?;
    (!s.is_empty()).then_some(s)
}
