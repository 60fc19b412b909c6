-- POST /v1/token/refresh, each connection carrying on its own chain: the refresh tokens of
-- BENCH_TOKENS (one login each) are shared out among the threads, each request spends one, and
-- the answer's new refresh token goes back in the queue. Every token is spent once, as a client
-- does; none is reused.
local threads = 0

function setup(thread)
    thread:set("id", threads)
    threads = threads + 1
end

function init(args)
    queue = {}
    local n = tonumber(os.getenv("BENCH_THREADS"))
    local k = 0
    for line in io.lines(os.getenv("BENCH_TOKENS")) do
        if (k % n) == id then
            queue[#queue + 1] = line
        end
        k = k + 1
    end
end

function request()
    local token = table.remove(queue, 1)
    if token == nil then
        -- A chain broke (an error answer): this request fails and shows in the error count.
        token = "spent"
    end
    return wrk.format("POST", "/v1/token/refresh", { ["Content-Type"] = "application/json" },
        '{"refresh_token":"' .. token .. '"}')
end

function response(status, headers, body)
    local token = body:match('"refresh_token"%s*:%s*"([^"]+)"')
    if token then
        queue[#queue + 1] = token
    end
end
