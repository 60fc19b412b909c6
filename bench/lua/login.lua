-- POST BENCH_PATH (a login route) with the JSON body BENCH_BODY, as a same-origin browser would
-- (Origin: BENCH_ORIGIN).
wrk.method = "POST"
wrk.path = os.getenv("BENCH_PATH")
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Origin"] = os.getenv("BENCH_ORIGIN")
