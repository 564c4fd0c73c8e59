//! Bench-only proxy-wasm module (harness/benches/wasm_primitives.rs): measures, inside wasm and
//! through the harness host, what the filter's cached path is made of. The plugin configuration
//! picks what each `on_http_request_headers` does before it continues:
//!
//! - `none`: nothing (the floor);
//! - `pairs` (`pairs:<n>`: `n` times): one `proxy_get_header_map_pairs`, parsed without copying
//!   into borrowed slices, and the engine's headers picked out (what the filter does);
//! - `values`: one `proxy_get_header_map_value` per header the engine reads (9 names);
//! - `hash-<alg>:<n>`: the token-cache key of a 1 KB token, `n` times: `sha256` (salt || token),
//!   `hmac-sha256`, `sip13` / `sip24` (SipHash 128-bit, keyed), `blake3` (keyed, 256-bit);
//! - `clock:<n>`: `proxy_get_current_time_nanoseconds`, `n` times (the filter reads it once);
//! - `remove:<n>`: `proxy_remove_header_map_value` of `authorization`, then of `n - 1` absent
//!   names (the filter removes the credential once).
//!
//! It is also loaded by Envoy in the benchmark (`envoy/bench/run.sh --noop-wasm ... --noop-config
//! clock:10`, docs/PERFORMANCE.md "The hostcalls of the cached path, in Envoy"), where the cost of
//! each hostcall is the difference to `none` over `n`.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::hint::black_box;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel};

extern "C" {
    fn proxy_get_header_map_pairs(map_type: u32, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| Box::new(Root));
}}

#[derive(Clone, Copy)]
enum Mode {
    None,
    Pairs(u32),
    Values,
    Hash(Alg, u32),
    Clock(u32),
    Remove(u32),
}

#[derive(Clone, Copy)]
enum Alg {
    Sha256,
    HmacSha256,
    Sip13,
    Sip24,
    Blake3,
}

thread_local! {
    static MODE: Cell<Mode> = const { Cell::new(Mode::None) };
}

/// The names the engine reads (filter/src/convert.rs).
const NAMES: [&str; 9] = [
    ":method",
    ":path",
    "authorization",
    "user-agent",
    "x-request-id",
    "x-forwarded-client-cert",
    "connection",
    "upgrade",
    "sec-websocket-protocol",
];

const TOKEN: &str = include_str!("../../../../envoy/bench/token-1k.txt");
const KEY: [u8; 32] = [7; 32];

struct Root;
impl Context for Root {}
impl RootContext for Root {
    fn on_configure(&mut self, size: usize) -> bool {
        let config = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size)
            .ok()
            .flatten()
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&config).into_owned();
        let mode = match text.as_str() {
            "" | "none" => Mode::None,
            "pairs" => Mode::Pairs(1),
            other if other.starts_with("pairs:") => {
                Mode::Pairs(other.trim_start_matches("pairs:").parse().unwrap_or(1))
            }
            "values" => Mode::Values,
            other if other.starts_with("clock:") => {
                Mode::Clock(other.trim_start_matches("clock:").parse().unwrap_or(1))
            }
            other if other.starts_with("remove:") => {
                Mode::Remove(other.trim_start_matches("remove:").parse().unwrap_or(1))
            }
            other => {
                let Some((alg, n)) = other.strip_prefix("hash-").and_then(|s| s.split_once(':')) else {
                    return false;
                };
                let alg = match alg {
                    "sha256" => Alg::Sha256,
                    "hmac-sha256" => Alg::HmacSha256,
                    "sip13" => Alg::Sip13,
                    "sip24" => Alg::Sip24,
                    "blake3" => Alg::Blake3,
                    _ => return false,
                };
                Mode::Hash(alg, n.parse().unwrap_or(1))
            }
        };
        MODE.with(|m| m.set(mode));
        true
    }
    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream))
    }
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream;
impl Context for Stream {}

fn owned(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() || size == 0 {
        return Vec::new();
    }
    unsafe { Vec::from_raw_parts(data, size, size) }
}

fn read_u32(b: &[u8], at: usize) -> Option<usize> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize)
}

/// Zero-copy parse of the serialized map, keeping the engine's headers (as the filter does).
fn pick(bytes: &[u8]) -> usize {
    let Some(count) = read_u32(bytes, 0) else { return 0 };
    let mut at = 4 + count * 8;
    let mut kept = 0;
    for i in 0..count {
        let (Some(n), Some(v)) = (read_u32(bytes, 4 + i * 8), read_u32(bytes, 8 + i * 8)) else {
            return kept;
        };
        let name = bytes.get(at..at + n).unwrap_or_default();
        at += n + 1;
        let value = bytes.get(at..at + v).unwrap_or_default();
        at += v + 1;
        if NAMES.iter().any(|k| k.as_bytes().eq_ignore_ascii_case(name)) {
            kept += value.len();
        }
    }
    kept
}

fn token_key(alg: Alg, token: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    match alg {
        Alg::Sha256 => {
            let mut h = sha2::Sha256::new();
            h.update(KEY);
            h.update(token);
            h.finalize().into()
        }
        Alg::HmacSha256 => {
            let mut ipad = [0x36u8; 64];
            let mut opad = [0x5cu8; 64];
            for (i, k) in KEY.iter().enumerate() {
                ipad[i] ^= k;
                opad[i] ^= k;
            }
            let mut h = sha2::Sha256::new();
            h.update(ipad);
            h.update(token);
            let inner = h.finalize();
            let mut h = sha2::Sha256::new();
            h.update(opad);
            h.update(inner);
            h.finalize().into()
        }
        Alg::Sip13 | Alg::Sip24 => {
            use std::hash::Hasher as _;
            let k0 = u64::from_le_bytes(KEY[..8].try_into().unwrap_or_default());
            let k1 = u64::from_le_bytes(KEY[8..16].try_into().unwrap_or_default());
            let h = if matches!(alg, Alg::Sip13) {
                let mut s = siphasher::sip128::SipHasher13::new_with_keys(k0, k1);
                s.write(token);
                siphasher::sip128::Hasher128::finish128(&s).as_u128()
            } else {
                let mut s = siphasher::sip128::SipHasher24::new_with_keys(k0, k1);
                s.write(token);
                siphasher::sip128::Hasher128::finish128(&s).as_u128()
            };
            let mut out = [0u8; 32];
            out[..16].copy_from_slice(&h.to_le_bytes());
            out
        }
        Alg::Blake3 => *blake3::keyed_hash(&KEY, token).as_bytes(),
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        match MODE.with(Cell::get) {
            Mode::None => {}
            Mode::Pairs(n) => {
                for _ in 0..n {
                    let mut data = std::ptr::null_mut();
                    let mut size = 0;
                    let st = unsafe { proxy_get_header_map_pairs(0, &mut data, &mut size) };
                    if st == 0 {
                        let bytes = owned(data, size);
                        black_box(pick(&bytes));
                    }
                }
            }
            Mode::Values => {
                let mut kept = 0;
                for name in NAMES {
                    let mut data = std::ptr::null_mut();
                    let mut size = 0;
                    let st = unsafe {
                        proxy_get_header_map_value(0, name.as_ptr(), name.len(), &mut data, &mut size)
                    };
                    if st == 0 {
                        kept += owned(data, size).len();
                    }
                }
                black_box(kept);
            }
            Mode::Clock(n) => {
                let mut sum = 0u64;
                for _ in 0..n {
                    let mut t = 0u64;
                    let st = unsafe { proxy_get_current_time_nanoseconds(&mut t) };
                    sum = sum.wrapping_add(t).wrapping_add(u64::from(st));
                }
                black_box(sum);
            }
            Mode::Remove(n) => {
                let mut st = 0;
                for i in 0..n {
                    let name: &[u8] = if i == 0 { b"authorization" } else { b"x-absent-header" };
                    st += unsafe { proxy_remove_header_map_value(0, name.as_ptr(), name.len()) };
                }
                black_box(st);
            }
            Mode::Hash(alg, n) => {
                for _ in 0..n {
                    black_box(token_key(alg, black_box(TOKEN.trim_end().as_bytes())));
                }
            }
        }
        Action::Continue
    }
}
