-- GET BENCH_PATH with a session cookie from the pool in BENCH_COOKIES (one cookie value a line).
-- Each wrk thread walks its own share of the pool, in order, so with a pool larger than what the
-- server caches every request reads the store.
local path = os.getenv("BENCH_PATH") or "/v1/me"
local name = os.getenv("BENCH_COOKIE_NAME") or "__Host-tessera"
local threads = 0

function setup(thread)
    thread:set("id", threads)
    threads = threads + 1
end

function init(args)
    mine = {}
    local n = tonumber(os.getenv("BENCH_THREADS"))
    local k = 0
    for line in io.lines(os.getenv("BENCH_COOKIES")) do
        if (k % n) == id then
            -- Formatted once, here, as in tokens.lua: the load generator's work stays out of
            -- what is measured.
            mine[#mine + 1] = wrk.format("GET", path, { ["Cookie"] = name .. "=" .. line })
        end
        k = k + 1
    end
    next_cookie = 0
end

function request()
    next_cookie = next_cookie % #mine + 1
    return mine[next_cookie]
end
