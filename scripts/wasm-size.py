#!/usr/bin/env python3
"""Bytes of the filter module by crate: `twiggy top -f csv` of an unstripped build, summed by the
crate that each function's demangled name starts with (docs/PERFORMANCE.md "Module size").

    CARGO_PROFILE_RELEASE_STRIP=false cargo build -p kubelet-authz-filter --target wasm32-wasip1 --release
    twiggy top -f csv target/wasm32-wasip1/release/kubelet_authz_filter.wasm | python3 scripts/wasm-size.py

Custom sections (DWARF, the name section) are left out: `strip = true` removes them from the
shipped module, so the total here is the code and data of the stripped module (give or take the
section headers). A generic function is counted under the crate of the outermost type in its name
(`<&mut serde_json::de::Deserializer<R> as serde::Deserializer>::deserialize_struct` is
serde_json's, even when it was instantiated for one of the engine's structs): the table says where
bytes are, `twiggy dominators` says who keeps them.
"""
import csv
import re
import sys
from collections import defaultdict

CRATE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[[0-9a-f]+\])?::")
STD = {"core", "alloc", "std", "compiler_builtins", "hashbrown", "std_detect", "rustc_demangle",
       "adler2", "miniz_oxide", "gimli", "addr2line", "object", "memchr"}
LIBC = {"prepend_alloc", "__stpcpy", "__strchrnul", "strncmp", "strerror", "strdup", "strcpy",
        "writev", "write", "getenv", "posix_memalign", "__lctrans", "_Exit", "dummy", "_initialize",
        "dlmalloc", "dlfree", "dlrealloc", "dispose_chunk", "internal_memalign", "memcpy", "memmove",
        "memset", "memcmp", "strlen", "__wasilibc", "abort", "malloc", "free", "realloc", "calloc",
        "aligned_alloc", "sbrk", "__wasi", "_start", "getcwd", "environ"}


def crate_of(name: str) -> str:
    if name.startswith("data segment") or name.startswith("data["):
        return "(data)"
    if name.startswith("custom section") or "subsection" in name:
        return "(custom)"
    if "section headers" in name:
        return "(wasm structure)"
    if name.startswith(("type[", "import ", "export ", "elem[", "table[", "memory[", "global[",
                        "code[", "wasm magic", "section headers")) or name in ("start", "table"):
        return "(wasm structure)"
    if name.startswith("proxy_on_") or name.startswith("proxy_abi_"):
        return "proxy_wasm"
    if name.startswith("__") and name.endswith("ti3"):
        return "std (core, alloc, std, hashbrown)"
    # `<T as der::decode::Decode>::decode`, `<u64 as core::fmt::Display>::fmt`, `<str>::eq...`:
    # a primitive or generic self type is counted under the trait's (or the inherent impl's) crate.
    prim = re.match(r"<&*(?:mut )?(?:\[[^]]*\]|\([^)]*\)|[A-Za-z0-9_]+)>?(?: as (.*))?$", name.split(">::")[0] + ">")
    if prim and "::" not in name.split(" as ")[0]:
        trait = name.split(" as ", 1)[1] if " as " in name else ""
        m = CRATE.match(trait)
        c = m.group(1) if m else "core"
        return "std (core, alloc, std, hashbrown)" if c in STD else c
    stripped = name.lstrip("<&*").removeprefix("mut ").removeprefix("dyn ").removeprefix("const ")
    m = CRATE.match(stripped)
    if m:
        c = m.group(1)
        return "std (core, alloc, std, hashbrown)" if c in STD else c
    if any(name == p or name.startswith(p) for p in LIBC):
        return "wasi-libc (malloc, mem*)"
    return "(other: " + name[:40] + ")"


def main() -> None:
    by = defaultdict(int)
    total = 0
    for row in csv.DictReader(sys.stdin):
        name = row["Name"]
        if name.startswith(("Σ", "...")):
            continue
        c = crate_of(name)
        if c == "(custom)":
            continue
        size = int(row["ShallowSize"])
        by[c] += size
        total += size
    other = sum(v for k, v in by.items() if k.startswith("(other"))
    rows = sorted(((k, v) for k, v in by.items() if not k.startswith("(other")), key=lambda kv: -kv[1])
    if other:
        rows.append(("(unattributed names)", other))
    print(f"{'crate':40} {'bytes':>9} {'%':>6}")
    for k, v in rows:
        print(f"{k:40} {v:9,} {100 * v / total:6.1f}")
    print(f"{'total (code + data, no custom sections)':40} {total:9,}")
    if "-v" in sys.argv:
        for k, v in sorted(by.items(), key=lambda kv: -kv[1]):
            if k.startswith("(other"):
                print(" ", k, v)


if __name__ == "__main__":
    main()
