// The Express peer: the same routes bench/run drives on Tessera, written as express-session's
// and jsonwebtoken's documentation shows. Node's cluster module runs one worker per core (WORKERS,
// default the core count), so both servers get the same cores.
//
//   PORT=8081 SESSIONS=memory|redis REDIS_URL=redis://127.0.0.1:6379 ALGORITHM=HS256|ES256 node server.js
//
// With SESSIONS=memory the session store is the process's memory: a session made on one worker is
// unknown to the others, so that variant runs one worker (WORKERS=1), as it must be deployed.
const cluster = require("node:cluster");
const crypto = require("node:crypto");
const os = require("node:os");

const sessions = process.env.SESSIONS || "memory";
const workers = Number(process.env.WORKERS || (sessions === "memory" ? 1 : os.availableParallelism()));

if (cluster.isPrimary) {
  // One signing key for every worker, made once.
  const algorithm = process.env.ALGORITHM || "HS256";
  let env = { ALGORITHM: algorithm };
  if (algorithm === "HS256") {
    env.JWT_SECRET = crypto.randomBytes(32).toString("base64");
  } else {
    const { privateKey, publicKey } = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
    env.JWT_PRIVATE = privateKey.export({ type: "pkcs8", format: "pem" });
    env.JWT_PUBLIC = publicKey.export({ type: "spki", format: "pem" });
  }
  env.SESSION_SECRET = crypto.randomBytes(32).toString("base64");
  for (let i = 0; i < workers; i++) cluster.fork(env);
  cluster.on("exit", (worker, code) => {
    console.error(`worker ${worker.process.pid} exited with ${code}`);
    process.exit(1);
  });
} else {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}

async function main() {
  const express = require("express");
  const session = require("express-session");
  const jwt = require("jsonwebtoken");

  const algorithm = process.env.ALGORITHM;
  const signKey = algorithm === "HS256" ? process.env.JWT_SECRET : process.env.JWT_PRIVATE;
  const verifyKey = algorithm === "HS256" ? process.env.JWT_SECRET : process.env.JWT_PUBLIC;

  // The one account the benchmark logs in as (password checking is not what is measured here).
  const users = new Map([["bench", { id: "usr_bench", username: "bench", roles: [] }]]);

  let store;
  if (sessions === "redis") {
    const { createClient } = require("redis");
    const { RedisStore } = require("connect-redis");
    const client = createClient({ url: process.env.REDIS_URL || "redis://127.0.0.1:6379" });
    await client.connect();
    store = new RedisStore({ client, prefix: process.env.REDIS_PREFIX || "peer-bench:" });
  }

  const app = express();
  app.disable("x-powered-by");
  app.use(express.json());
  app.use(
    session({
      store,
      secret: process.env.SESSION_SECRET,
      resave: false,
      saveUninitialized: false,
      cookie: { httpOnly: true, sameSite: "lax", secure: false },
    }),
  );

  app.get("/healthz", (req, res) => res.type("text").send("ok"));

  app.post("/v1/session/login", (req, res, next) => {
    const user = users.get(req.body && req.body.username);
    if (!user) return res.status(401).json({ error: "invalid credentials" });
    req.session.regenerate((err) => {
      if (err) return next(err);
      req.session.userId = user.id;
      req.session.username = user.username;
      req.session.save((err) => (err ? next(err) : res.json({ user })));
    });
  });

  app.post("/v1/token", (req, res) => {
    const user = users.get(req.body && req.body.username);
    if (!user) return res.status(401).json({ error: "invalid credentials" });
    const access_token = jwt.sign({ roles: user.roles }, signKey, {
      algorithm,
      subject: user.id,
      expiresIn: "2h",
      issuer: "peer",
      audience: "tessera",
    });
    res.json({ access_token, token_type: "Bearer", expires_in: 7200 });
  });

  // The caller, from the bearer token when there is one, else from the session.
  app.get("/v1/me", (req, res) => {
    const auth = req.get("authorization");
    if (auth && auth.startsWith("Bearer ")) {
      try {
        const claims = jwt.verify(auth.slice(7), verifyKey, {
          algorithms: [algorithm],
          issuer: "peer",
          audience: "tessera",
        });
        return res.json({ id: claims.sub, roles: claims.roles });
      } catch {
        return res.status(401).json({ error: "invalid token" });
      }
    }
    if (req.session && req.session.userId) {
      return res.json({ id: req.session.userId, username: req.session.username });
    }
    res.status(401).json({ error: "not logged in" });
  });

  app.listen(Number(process.env.PORT || 8081), "127.0.0.1");
}
