//! The canonical-path check (DESIGN.md deliberate difference 2). The kubelet's ServeMux redirects a
//! non-canonical path before authentication; a proxy must never authorize one path and forward
//! another, so anything ambiguous is refused with 400 before authentication: `//`, `.` or `..`
//! segments, a `\`, percent-encoded `/`, `\`, `.` or `%`, invalid percent-encoding, control or
//! non-ASCII bytes, fragments, and request targets that are not origin-form (`*`, `http://...`).
//!
//! What is accepted is decoded exactly as Go's `URL.Path` (the query string is not part of it),
//! which is what the kubelet's attribute builder reads.

/// Why a request target was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Empty, `*`, or absolute-form: not an origin-form path.
    #[error("request target is not an absolute path")]
    NotOriginForm,
    /// A `#` fragment in the request target.
    #[error("request target contains a fragment")]
    Fragment,
    /// A control, space or non-ASCII byte.
    #[error("path contains a control, space or non-ASCII byte")]
    Byte,
    /// `%` not followed by two hex digits.
    #[error("path contains invalid percent-encoding")]
    BadEscape,
    /// `%2F`, `%5C`, `%2E` or `%25`: an encoded separator, dot or percent sign.
    #[error("path contains an encoded slash, backslash, dot or percent sign")]
    EncodedSeparator,
    /// A literal `\`.
    #[error("path contains a backslash")]
    Backslash,
    /// `//`.
    #[error("path contains an empty segment (`//`)")]
    EmptySegment,
    /// A `.` or `..` segment.
    #[error("path contains a `.` or `..` segment")]
    DotSegment,
}

/// The body of the 400 answer for a refused path.
pub fn refusal_body(e: PathError) -> String {
    format!("Bad Request: non-canonical path: {e}\n")
}

/// Split a request target into its decoded path (as Go's `URL.Path`) or refuse it.
pub fn canonical_path(target: &str) -> Result<String, PathError> {
    let mut out = String::new();
    canonical_path_into(target, &mut out)?;
    Ok(out)
}

/// [`canonical_path`] written into `out` (cleared first; its capacity is reused, so a driver that
/// keeps the buffer of a finished decision decodes the next path without allocating). On a
/// refusal `out` holds a prefix of the path and must not be read.
pub fn canonical_path_into(target: &str, out: &mut String) -> Result<(), PathError> {
    out.clear();
    if target.contains('#') {
        return Err(PathError::Fragment);
    }
    let raw = target.split_once('?').map_or(target, |(p, _)| p);
    if !raw.starts_with('/') {
        return Err(PathError::NotOriginForm);
    }
    out.reserve(raw.len());
    let bytes = raw.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hi = bytes.get(i + 1).and_then(|c| hex_val(*c));
                let lo = bytes.get(i + 2).and_then(|c| hex_val(*c));
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PathError::BadEscape);
                };
                let d = hi * 16 + lo;
                match d {
                    b'/' | b'\\' | b'.' | b'%' => return Err(PathError::EncodedSeparator),
                    // Printable ASCII: one byte, one char.
                    0x21..=0x7e => out.push(char::from(d)),
                    _ => return Err(PathError::Byte),
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            0x21..=0x7e => {
                out.push(char::from(b));
                i += 1;
            }
            _ => return Err(PathError::Byte),
        }
    }
    let mut segments = out.split('/').skip(1).peekable();
    while let Some(seg) = segments.next() {
        if seg == "." || seg == ".." {
            return Err(PathError::DotSegment);
        }
        // An empty last segment is a trailing slash (`/logs/`), which is canonical.
        if seg.is_empty() && segments.peek().is_some() {
            return Err(PathError::EmptySegment);
        }
    }
    Ok(())
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("/pods", "/pods")]
    #[case("/", "/")]
    #[case("/logs/", "/logs/")]
    #[case("/pods?x=/../exec", "/pods")]
    #[case("/stats/summary?only_cpu_and_memory=true", "/stats/summary")]
    #[case("/exec/ns/pod/ctr?command=ls&stdout=1", "/exec/ns/pod/ctr")]
    #[case("/%70ods", "/pods")]
    #[case("/runningPods/", "/runningPods/")]
    #[case("/pods/..;/exec", "/pods/..;/exec")]
    #[case("/a/...", "/a/...")]
    #[case("/a/.b", "/a/.b")]
    fn accepted(#[case] target: &str, #[case] decoded: &str) {
        assert_eq!(canonical_path(target), Ok(decoded.to_string()));
    }

    #[rstest]
    #[case("//exec/a/b/c", PathError::EmptySegment)]
    #[case("/pods//x", PathError::EmptySegment)]
    #[case("/pods/../exec/a/b/c", PathError::DotSegment)]
    #[case("/./exec", PathError::DotSegment)]
    #[case("/pods/.", PathError::DotSegment)]
    #[case("/pods/..", PathError::DotSegment)]
    #[case("/pods/%2e%2e/exec", PathError::EncodedSeparator)]
    #[case("/pods%2F..%2Fexec", PathError::EncodedSeparator)]
    #[case("/pods%2f", PathError::EncodedSeparator)]
    #[case("/pods%5Cexec", PathError::EncodedSeparator)]
    #[case("/pods%252F", PathError::EncodedSeparator)]
    #[case("/pods\\..\\exec", PathError::Backslash)]
    #[case("/pods%zz", PathError::BadEscape)]
    #[case("/pods%2", PathError::BadEscape)]
    #[case("/pods%", PathError::BadEscape)]
    #[case("/pods%00", PathError::Byte)]
    #[case("/pods%0a", PathError::Byte)]
    #[case("/pods%C3%A9", PathError::Byte)]
    #[case("/po ds", PathError::Byte)]
    #[case("/po\u{0}ds", PathError::Byte)]
    #[case("/pods\u{e9}", PathError::Byte)]
    #[case("/pods#/../exec", PathError::Fragment)]
    #[case("*", PathError::NotOriginForm)]
    #[case("", PathError::NotOriginForm)]
    #[case("http://node/exec/a/b/c", PathError::NotOriginForm)]
    #[case("pods", PathError::NotOriginForm)]
    fn refused(#[case] target: &str, #[case] why: PathError) {
        assert_eq!(canonical_path(target), Err(why));
    }
}
