-- GET BENCH_PATH with a bearer token from the pool in BENCH_TOKENS (one per line). Each wrk thread
-- walks its own share of the pool, in order, so with a pool larger than the server's
-- verified-token cache every token it sends has not been seen lately. BENCH_HOT (0 to 1) of the
-- requests send the first token instead: the repeated one whose cache hit a flood must not evict.
local path = os.getenv("BENCH_PATH") or "/v1/me"
local hot_share = tonumber(os.getenv("BENCH_HOT") or "0")
local threads = 0

function setup(thread)
    thread:set("id", threads)
    threads = threads + 1
end

function init(args)
    local all = {}
    for line in io.lines(os.getenv("BENCH_TOKENS")) do
        all[#all + 1] = line
    end
    -- Every request is formatted once, here: formatting one per request would cost the load
    -- generator more than the requests it compares with /healthz.
    local function format(token)
        return wrk.format("GET", path, { ["Authorization"] = "Bearer " .. token })
    end
    hot = format(all[1])
    mine = {}
    local n = tonumber(os.getenv("BENCH_THREADS"))
    for k = 2, #all do
        if (k % n) == id then
            mine[#mine + 1] = format(all[k])
        end
    end
    next_token = 0
    math.randomseed(os.time() + id)
end

function request()
    if hot_share > 0 and math.random() < hot_share then
        return hot
    end
    next_token = next_token % #mine + 1
    return mine[next_token]
end
