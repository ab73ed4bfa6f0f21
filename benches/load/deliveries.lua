-- wrk script: signed GitHub push deliveries, each with its own X-GitHub-Delivery id.
--   wrk -s deliveries.lua URL -- BODY_FILE SIGNATURE ID_PREFIX
local threads = {}

function setup(thread)
    thread:set("tid", #threads)
    table.insert(threads, thread)
end

function init(args)
    local f = assert(io.open(args[1], "rb"))
    body = f:read("*a")
    f:close()
    signature = args[2]
    prefix = args[3] or "load"
    n = 0
    other = 0
end

function request()
    n = n + 1
    return wrk.format("POST", "/webhooks/github", {
        ["Content-Type"] = "application/json",
        ["X-GitHub-Event"] = "push",
        ["X-GitHub-Delivery"] = string.format("%s-%d-%d", prefix, tid, n),
        ["X-Hub-Signature-256"] = signature,
    }, body)
end

function response(status, headers, body)
    if status ~= 202 then
        other = other + 1
    end
end

function done(summary, latency, requests)
    local not_202 = 0
    for _, t in ipairs(threads) do
        not_202 = not_202 + t:get("other")
    end
    local e = summary.errors
    io.write(string.format(
        "RESULT requests=%d seconds=%.3f rps=%.0f p50_ms=%.3f p99_ms=%.3f not_202=%d socket_errors=%d\n",
        summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
        latency:percentile(50) / 1000, latency:percentile(99) / 1000, not_202,
        e.connect + e.read + e.write + e.timeout))
end
