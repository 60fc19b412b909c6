-- Spreads the load over several servers: wrk thread k connects to the k-th address of
-- BENCH_NODES ("127.0.0.1:8001 127.0.0.1:8002 ..."), round-robin, so run a multiple of their
-- number of threads. Headers and path come from the command line as usual.
local nodes = {}
for node in string.gmatch(os.getenv("BENCH_NODES") or "", "%S+") do
    nodes[#nodes + 1] = node
end
local next_node = 0

function setup(thread)
    local host, port = string.match(nodes[next_node % #nodes + 1], "^(.+):(%d+)$")
    next_node = next_node + 1
    thread.addr = wrk.lookup(host, port)[1]
end
