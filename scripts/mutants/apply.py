#!/usr/bin/env python3
"""Apply one named source mutation to a copy of the workspace (never the checkout itself).

Usage: apply.py NAME DIR. Each mutation replaces exact text; if the text is not found the script
fails loudly, so a refactor of the mutated code shows up here (update the mutation) instead of
silently testing nothing.
"""
import sys
from pathlib import Path

MUTATIONS = {
    # The canonical-path refusal disabled: `.`/`..` and empty segments accepted.
    "no-canonical-path": (
        "authz/src/path.rs",
        [
            (
                """        if seg == "." || seg == ".." {
            return Err(PathError::DotSegment);
        }
        // An empty last segment is a trailing slash (`/logs/`), which is canonical.
        if seg.is_empty() && segments.peek().is_some() {
            return Err(PathError::EmptySegment);
        }
""",
                """        let _ = (seg, segments.peek());
""",
            )
        ],
    ),
    # XFCC trusted without the mTLS and peer-digest checks.
    "trust-xfcc": (
        "authz/src/identity/xfcc.rs",
        [
            (
                """    if !mtls {
        return spoofed("x-forwarded-client-cert on a connection without mTLS");
    }
""",
                """    let _ = mtls;
""",
            ),
            (
                """    let Some(peer) = peer_digest_hex.map(str::trim).filter(|d| !d.is_empty()) else {
        return spoofed("no peer certificate digest on the connection");
    };
    let digest = x509::sha256_hex(&der);
    if !digest.eq_ignore_ascii_case(peer) {
        return spoofed("x-forwarded-client-cert Cert does not match the peer certificate");
    }
""",
                """    let _ = peer_digest_hex;
    let digest = x509::sha256_hex(&der);
""",
            ),
        ],
    ),
}


def main() -> int:
    if len(sys.argv) != 3 or sys.argv[1] not in MUTATIONS:
        print(f"usage: apply.py {{{'|'.join(MUTATIONS)}}} DIR", file=sys.stderr)
        return 2
    name, root = sys.argv[1], Path(sys.argv[2])
    rel, edits = MUTATIONS[name]
    path = root / rel
    text = path.read_text()
    for old, new in edits:
        if text.count(old) != 1:
            print(f"mutation {name}: the code to mutate is no longer in {rel}; update "
                  "scripts/mutants/apply.py", file=sys.stderr)
            return 1
        text = text.replace(old, new)
    path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
