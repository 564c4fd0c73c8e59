-- wrk script of envoy/bench/run.sh. Settings come from the environment (one wrk thread):
--   BENCH_PATH          request path (default /metrics/cadvisor)
--   BENCH_TOKEN         one bearer token for every request, or
--   BENCH_TOKENS=N      cycle through N distinct tokens BENCH_TOKEN_PREFIX..%05d (0..N-1)
--   BENCH_STOP_AFTER=N  stop after N responses (one pass over the tokens), else run for -d
--   BENCH_MIX=FILE      the realistic workload instead: every line of FILE is one request,
--                       `path<TAB>name: value<TAB>name: value...`; the requests are built once
--                       and sent in the file's order, cycling (bench.py writes the file: the mix
--                       of a node's clients, each with its own headers and 1 KB bearer token)
-- done() prints one line `BENCH_RESULT {json}`: exact percentiles in microseconds, counts, errors.

local path = os.getenv("BENCH_PATH") or "/metrics/cadvisor"
local token = os.getenv("BENCH_TOKEN")
local ntokens = tonumber(os.getenv("BENCH_TOKENS") or "0")
local prefix = os.getenv("BENCH_TOKEN_PREFIX") or "bench-tok-"
local stop_after = tonumber(os.getenv("BENCH_STOP_AFTER") or "0")

local next_token = 0
local responses = 0

wrk.method = "GET"
wrk.path = path
wrk.headers["User-Agent"] = "kubelet-authz-bench"
if token and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end

if ntokens > 0 then
  request = function()
    local t = string.format("%s%05d", prefix, next_token)
    next_token = (next_token + 1) % ntokens
    return wrk.format("GET", path, { ["Authorization"] = "Bearer " .. t,
                                      ["User-Agent"] = "kubelet-authz-bench" })
  end
end

local mix_file = os.getenv("BENCH_MIX")
if mix_file and mix_file ~= "" then
  local lines = {}
  for line in io.lines(mix_file) do
    if line ~= "" then
      lines[#lines + 1] = line
    end
  end
  local mix = {}
  -- Built in init: wrk sets the Host header only then.
  init = function(args)
    for _, line in ipairs(lines) do
      local fields = {}
      for f in string.gmatch(line, "[^\t]+") do
        fields[#fields + 1] = f
      end
      local headers = {}
      for i = 2, #fields do
        local k, v = string.match(fields[i], "^([^:]+): (.*)$")
        if k then
          headers[k] = v
        end
      end
      mix[#mix + 1] = wrk.format("GET", fields[1], headers)
    end
  end
  local next_req = 0
  request = function()
    next_req = next_req % #mix + 1
    return mix[next_req]
  end
end

if stop_after > 0 then
  response = function(status, headers, body)
    responses = responses + 1
    if stop_after > 0 and responses >= stop_after then
      wrk.thread:stop()
    end
  end
end

done = function(summary, latency, requests)
  local s = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_s":%.6f,"rps":%.1f,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\n',
    summary.requests, s, summary.requests / s,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout))
end
