// The playground: each button makes real requests to this server and logs what went over the wire.
"use strict";

const state = { sessionCsrf: null, hybridCsrf: null, access: null, refresh: null };
// What "What the server holds" needs after a logout or revoke: the revoked access token (token
// model), the ended login's id and CSRF token (hybrid model).
const ended = { access: null, hybrid: null, session: false };

const $ = (id) => document.getElementById(id);

function credentials() {
  return { username: $("username").value, password: $("password").value };
}

function show() {
  $("cookies").textContent = JSON.stringify(document.cookie);
}

function log(method, path, status, body) {
  const li = document.createElement("li");
  const text = typeof body === "string" ? body : JSON.stringify(body);
  li.textContent = `${method} ${path} → ${status}  ${text.slice(0, 400)}`;
  $("log").prepend(li);
  $("status").textContent = `${method} ${path} → ${status}`;
  show();
}

async function call(method, path, { json, form, headers = {} } = {}) {
  const init = { method, headers: { ...headers }, credentials: "same-origin" };
  if (json !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = new URLSearchParams(form);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let body = text;
  try { body = text ? JSON.parse(text) : ""; } catch (_) { /* not JSON */ }
  log(method, path, response.status, body);
  return { status: response.status, body };
}

function whoami(result) {
  $("whoami").textContent = result.status === 200
    ? `${result.body.user.username} (${result.body.auth.model})`
    : "nobody";
}

// What a completed login of `model` leaves in this page (a password login's answer, or one
// completed with a passkey).
function loggedIn(model, body) {
  if (model === "session") { state.sessionCsrf = body.csrf_token; ended.session = false; }
  if (model === "token") { state.access = body.access_token; state.refresh = body.refresh_token; ended.access = null; }
  if (model === "hybrid") { state.hybridCsrf = body.csrf_token; ended.hybrid = null; }
  held(model);
}

const loginPaths = { session: "/v1/session/login", token: "/v1/token", hybrid: "/v1/hybrid/login" };

// A password login; an account with a second factor answers with a challenge instead.
async function passwordLogin(model) {
  const r = await call("POST", loginPaths[model], { json: credentials() });
  if (r.status !== 200) return;
  if (r.body.second_factor_required) await secondFactor(model, r.body);
  else loggedIn(model, r.body);
}

const actions = {
  async "register"() { await call("POST", "/v1/users", { json: credentials() }); },

  "session-login": () => passwordLogin("session"),
  async "session-me"() { whoami(await call("GET", "/v1/me")); },
  async "session-logout"() {
    const r = await call("DELETE", "/v1/session", { headers: { "x-csrf-token": state.sessionCsrf || "" } });
    state.sessionCsrf = null;
    if (r.status === 204) ended.session = true;
    held("session");
  },
  async "session-held"() { await held("session"); },

  "token-login": () => passwordLogin("token"),
  async "token-me"() {
    whoami(await call("GET", "/v1/me", { headers: state.access ? { authorization: `Bearer ${state.access}` } : {} }));
  },
  async "token-refresh"() {
    const r = await call("POST", "/v1/token/refresh", { json: { refresh_token: state.refresh || "" } });
    if (r.status === 200) { state.access = r.body.access_token; state.refresh = r.body.refresh_token; }
  },
  async "token-revoke"() {
    const r = await call("POST", "/v1/token/revoke", { form: { token: state.refresh || "" } });
    if (r.status === 200 && state.access) ended.access = state.access;
    state.access = null; state.refresh = null;
    held("token");
  },
  async "token-held"() { await held("token"); },

  "hybrid-login": () => passwordLogin("hybrid"),
  async "hybrid-me"() { whoami(await call("GET", "/v1/me")); },
  async "hybrid-refresh"() {
    const r = await call("POST", "/v1/hybrid/refresh", { headers: { "x-csrf-token": state.hybridCsrf || "" } });
    if (r.status === 200) state.hybridCsrf = r.body.csrf_token;
  },
  async "hybrid-logout"() {
    const family = heldFamily.hybrid;
    const csrf = state.hybridCsrf;
    const r = await call("DELETE", "/v1/hybrid/session", { headers: { "x-csrf-token": state.hybridCsrf || "" } });
    state.hybridCsrf = null;
    if (r.status === 204 && family && csrf) ended.hybrid = { family, csrf };
    held("hybrid");
  },
  async "hybrid-held"() { await held("hybrid"); },

  "session-csrf": () => crossSite("session"),
  "token-csrf": () => crossSite("token"),
  "hybrid-csrf": () => crossSite("hybrid"),
  "session-xss": () => injected("session"),
  "token-xss": () => injected("token"),
  "hybrid-xss": () => injected("hybrid"),

  "passkey-add": () => addPasskey(),
  "passkey-list": () => listPasskeys(),
  "passkey-login": () => passkeyLogin(),
  "passkey-step-up": () => passkeyStepUp(),
};

// ---- Passkeys ---------------------------------------------------------------------------------

// Says how the last passkey step went; `kind` is "error" or "done" when it ended, "busy" before.
function passkeySays(kind, text) {
  const out = $("passkey-status");
  out.textContent = text;
  out.dataset.kind = kind;
}

// A refused request: the problem document's detail (every error of this server is one).
function refused(r, what) {
  const detail = r.body && typeof r.body === "object" && (r.body.detail || r.body.title);
  passkeySays("error", `${what}: ${detail || `the server answered ${r.status}`}`);
}

// The headers of an account request: the token if this page holds one, else its cookie login's
// CSRF token (the hybrid login's first, as the server reads the cookies).
function accountHeaders() {
  if (state.access) return { authorization: `Bearer ${state.access}` };
  return { "x-csrf-token": state.hybridCsrf || state.sessionCsrf || "" };
}

// Asks the browser (and through it the authenticator) to make (`create`) or use (`get`) a
// passkey for the server's options; the answer as JSON, or null after saying why not.
async function askAuthenticator(kind, options) {
  const api = window.PublicKeyCredential;
  if (!api || !api.parseCreationOptionsFromJSON || !navigator.credentials) {
    passkeySays("error", "This browser cannot use passkeys here: they need a secure context (https, or http://localhost) and a browser with WebAuthn's JSON methods.");
    return null;
  }
  const what = `navigator.credentials.${kind}`;
  try {
    const credential = kind === "create"
      ? await navigator.credentials.create({ publicKey: api.parseCreationOptionsFromJSON(options.publicKey) })
      : await navigator.credentials.get({ publicKey: api.parseRequestOptionsFromJSON(options.publicKey) });
    log("WebAuthn", what, "done", { id: credential.id, authenticatorAttachment: credential.authenticatorAttachment });
    return credential.toJSON();
  } catch (e) {
    log("WebAuthn", what, e.name, e.message);
    passkeySays("error", `The passkey was not ${kind === "create" ? "made" : "used"} (${e.name}): ${e.message}`);
    return null;
  }
}

async function addPasskey() {
  const password = $("passkey-password").value;
  if (!password) { passkeySays("error", "Adding a passkey needs the account's current password."); return; }
  passkeySays("busy", "Asking the server for registration options…");
  const options = await call("POST", "/v1/account/passkeys/options", { headers: accountHeaders() });
  if (options.status !== 200) { refused(options, "No passkey added"); return; }
  passkeySays("busy", "Waiting for your authenticator…");
  const credential = await askAuthenticator("create", options.body.options);
  if (!credential) return;
  const r = await call("POST", "/v1/account/passkeys", {
    headers: accountHeaders(),
    json: { ceremony: options.body.ceremony, credential, name: $("passkey-name").value, current_password: password },
  });
  if (r.status !== 201) { refused(r, "No passkey added"); return; }
  $("passkey-password").value = "";
  passkeySays("done", `Added the passkey "${r.body.name}". It now logs in alone, and password logins ask for it.`);
  await listPasskeys();
}

async function listPasskeys() {
  const r = await call("GET", "/v1/account/passkeys", { headers: accountHeaders() });
  const list = $("passkey-list");
  list.textContent = "";
  if (r.status !== 200) { refused(r, "No list"); return; }
  for (const p of r.body.passkeys) {
    const li = document.createElement("li");
    li.dataset.id = p.id;
    li.textContent = `${p.name}: added ${p.created_at}, ${p.last_used_at ? `last used ${p.last_used_at}` : "never used"} `;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "Remove";
    remove.addEventListener("click", () => removePasskey(p));
    li.append(remove);
    list.append(li);
  }
  if (r.body.passkeys.length === 0) {
    const li = document.createElement("li");
    li.textContent = "This account has no passkey.";
    list.append(li);
  }
  list.dataset.count = String(r.body.passkeys.length);
}

async function removePasskey(passkey) {
  const r = await call("DELETE", `/v1/account/passkeys/${encodeURIComponent(passkey.id)}`, { headers: accountHeaders() });
  if (r.status !== 204) { refused(r, `"${passkey.name}" stays`); return; }
  passkeySays("done", `Removed the passkey "${passkey.name}".`);
  await listPasskeys();
}

// Step-up: the current login shows a passkey again, for the privileged actions (removing or
// adding a passkey, changing the password) that need a recent second factor.
async function passkeyStepUp() {
  passkeySays("busy", "Asking the server for step-up options…");
  const options = await call("POST", "/v1/account/step-up/passkey/options", { headers: accountHeaders() });
  if (options.status !== 200) { refused(options, "Not stepped up"); return; }
  passkeySays("busy", "Waiting for your authenticator…");
  const credential = await askAuthenticator("get", options.body.options);
  if (!credential) return;
  const r = await call("POST", "/v1/account/step-up/passkey", {
    headers: accountHeaders(),
    json: { ceremony: options.body.ceremony, credential },
  });
  if (r.status !== 200) { refused(r, "Not stepped up"); return; }
  // A token login gets a fresh access token carrying the new authentication time.
  if (r.body.access_token) state.access = r.body.access_token;
  passkeySays("done", `Stepped up: ${r.body.authentication.amr.join(", ")} at ${r.body.authentication.auth_time}.`);
}

// Passwordless: no username; the authenticator offers the passkeys it keeps for this site.
async function passkeyLogin() {
  const model = $("passkey-model").value;
  passkeySays("busy", "Asking the server for login options…");
  const options = await call("POST", "/v1/login/passkey/options");
  if (options.status !== 200) { refused(options, "Not logged in"); return; }
  passkeySays("busy", "Waiting for your authenticator…");
  const credential = await askAuthenticator("get", options.body.options);
  if (!credential) return;
  const r = await call("POST", "/v1/login/passkey", { json: { ceremony: options.body.ceremony, credential, model } });
  if (r.status !== 200) { refused(r, "Not logged in"); return; }
  loggedIn(model, r.body);
  const who = r.body.user ? ` as ${r.body.user.username}` : "";
  passkeySays("done", `Logged in${who} with the passkey alone (${model} model).`);
}

// A password login that answered with a challenge: completes it with a passkey when the account
// has one; this page takes no TOTP or recovery code.
async function secondFactor(model, challenge) {
  if (!challenge.passkey) {
    passkeySays("error", `The password was right, but this account also asks for a second factor that this playground does not take (${challenge.methods.join(", ")}): it completes a login with a passkey only. Complete it from an API client (POST /v1/login/second-factor with the challenge and the code), or use an account with a passkey.`);
    return;
  }
  passkeySays("busy", "The password was right; this account asks for its passkey too. Waiting for your authenticator…");
  const credential = await askAuthenticator("get", challenge.passkey.options);
  if (!credential) return;
  const r = await call("POST", "/v1/login/second-factor/passkey", {
    json: { challenge: challenge.challenge, ceremony: challenge.passkey.ceremony, credential },
  });
  if (r.status !== 200) { refused(r, "Not logged in"); return; }
  loggedIn(model, r.body);
  passkeySays("done", `Logged in with the password and the passkey (${model} model).`);
}

// ---- What the server holds -----------------------------------------------------------------

const heldFamily = { hybrid: null, token: null };
let heldRuns = 0;

function bytes(n) { return `${n} bytes`; }

function describeHeld(v) {
  const lines = [];
  if (v.credential) {
    const refresh = v.credential.refresh_cookie_bytes ? ` + ${bytes(v.credential.refresh_cookie_bytes)}` : "";
    const extra = v.credential.cookie_header_bytes !== undefined
      ? `${refresh} (whole Cookie header: ${bytes(v.credential.cookie_header_bytes)})` : "";
    lines.push(`Each request carries: ${v.credential.carried_in}: ${bytes(v.credential.bytes)}${extra}`);
  }
  if (v.session) {
    const s = v.session;
    lines.push(`Session record: ≈${bytes(s.bytes)} (its fields)`);
    lines.push(`  handle ${s.handle}, secret hash ${s.secret_hash}, CSRF token ${s.csrf_token}`);
    lines.push(`  expires ${s.expires_at} (absolute ${s.absolute_expires_at}), data ${JSON.stringify(s.data)} v${s.data_version}`);
  }
  if (v.access_token) {
    lines.push(`Access token ${v.access_token.jti}: not stored, expires ${v.access_token.expires_at}`);
  }
  if (v.family) {
    const f = v.family;
    lines.push(`Refresh family: ≈${bytes(f.bytes)} (its fields and its current refresh token's)`);
    lines.push(`  ${f.id} (${f.model}), generation ${f.generation}, expires ${f.expires_at}`);
    if (f.revoked_at) lines.push(`  revoked ${f.revoked_at}: ${f.revoked_reason}`);
  }
  if (v.denylist) {
    const entries = v.denylist.entries || [];
    if (entries.length === 0) lines.push(`Denylist: no entry${v.denylist.note ? ` (${v.denylist.note})` : ""}`);
    for (const e of entries) {
      lines.push(`Denylist entry: ≈${bytes(e.bytes)}: ${e.kind} ${e.refuses}, kept until ${e.expires_at}`);
    }
  }
  if (!v.live) lines.unshift("This login has ended; what still refuses its credential:");
  return lines.join("\n");
}

// Asks the server what it holds for this page's own login of `model`; never logged in #log.
async function held(model) {
  const out = $(`held-${model}`);
  const headers = {};
  let path = `/playground/held?model=${model}`;
  if (model === "token") {
    const token = state.access || ended.access;
    if (!token) { out.textContent = "not logged in"; out.dataset.run = ++heldRuns; return; }
    headers.authorization = `Bearer ${token}`;
  }
  if (model === "hybrid" && !state.hybridCsrf && ended.hybrid) {
    path += `&family=${encodeURIComponent(ended.hybrid.family)}`;
    headers["x-csrf-token"] = ended.hybrid.csrf;
  }
  const response = await fetch(path, { headers, credentials: "same-origin" });
  const body = await response.json().catch(() => null);
  if (response.ok && body) {
    if (body.family && model !== "session") heldFamily[model] = body.family.id;
    out.textContent = describeHeld(body);
    out.dataset.live = String(body.live);
  } else if (model === "session" && ended.session) {
    out.textContent = "Logout deleted the session record: the server holds nothing for this login, and its old cookie value is refused.";
    out.dataset.live = "false";
  } else {
    out.textContent = `not logged in (${response.status})`;
    out.dataset.live = "false";
  }
  out.dataset.json = response.ok ? JSON.stringify(body) : "";
  out.dataset.run = ++heldRuns;
}

// ---- Attacks ----------------------------------------------------------------------------------

const attackerOrigin = document.querySelector('meta[name="tessera-attacker-origin"]').content;
let attackRuns = 0;
const pending = new Map();

window.addEventListener("message", (event) => {
  // Only the attacker page's reports, and only to a run this page started.
  if (!attackerOrigin || event.origin !== attackerOrigin || !event.data) return;
  const waiter = pending.get(event.data.run);
  if (waiter) { pending.delete(event.data.run); waiter(event.data); }
});

function awaitReport(run, ms = 15000) {
  return new Promise((resolve) => {
    pending.set(run, resolve);
    setTimeout(() => { if (pending.delete(run)) resolve({ timeout: true }); }, ms);
  });
}

// The login this page holds for `model`, as the server sees it (null when there is none).
async function currentLogin(model) {
  const get = async (path, headers = {}) => {
    const r = await fetch(path, { headers, credentials: "same-origin" });
    return r.ok ? r.json() : null;
  };
  if (model === "session") {
    const s = await get("/v1/session");
    return s ? `session ${s.session.id}` : null;
  }
  if (model === "token") {
    if (!state.access) return null;
    const me = await get("/v1/me", { authorization: `Bearer ${state.access}` });
    return me ? `token ${me.auth.family_id}` : null;
  }
  const me = await get("/v1/me");
  return me && me.auth.model === "hybrid" ? `hybrid ${me.auth.family_id}` : null;
}

// What this server received from the attacker page after record `since` (0: all it kept).
async function serverSaw(since) {
  const r = await fetch("/playground/attacks", { credentials: "same-origin" });
  const body = await r.json();
  return body.requests.filter((record) => record.seq > since);
}

function loadAttacker(params) {
  const frame = $("attacker-frame");
  frame.hidden = false;
  frame.src = `${attackerOrigin}/?${new URLSearchParams(params)}`;
}

function show_outcome(el, outcome, verdict, lines) {
  el.dataset.outcome = outcome;
  el.textContent = "";
  const strong = document.createElement("div");
  strong.className = "verdict";
  strong.textContent = verdict;
  el.append(strong, lines.join("\n"));
}

async function crossSite(model) {
  const out = $(`csrf-${model}`);
  out.dataset.outcome = "running";
  if (!attackerOrigin) { show_outcome(out, "unavailable", "No attacker page is configured.", []); return; }
  const before = await currentLogin(model);
  if (!before) { show_outcome(out, "unavailable", `Log in with the ${model} model first.`, []); return; }
  const since = Math.max(0, ...(await serverSaw(0)).map((record) => record.seq));
  const run = `csrf-${++attackRuns}`;
  const report = awaitReport(run);
  loadAttacker({ attack: "csrf", model, run });
  const seen = await report;
  const received = await serverSaw(since);
  const after = await currentLogin(model);
  const alive = after === before;
  const carried = received.filter((r) => r.credential_cookies.length > 0 || r.authorization_header);
  // A state-changing request the server accepted, or an answer the attacker's script could read,
  // is a successful attack; a GET answered but unreadable (CORS) is not.
  const accepted = received.filter((r) => !["GET", "HEAD", "OPTIONS"].includes(r.method) && r.status < 400);
  const read = (seen.results || []).filter((r) => /^\d{3}: /.test(r.seen));
  const reasons = [...new Set(received.map((r) => r.problem).filter(Boolean))];
  const lines = [];
  lines.push(`The attacker saw: ${(seen.results || []).map((r) => `${r.what}: ${r.seen}`).join("; ") || "no report"}`);
  for (const r of received) {
    const creds = r.credential_cookies.length ? `cookies ${r.credential_cookies.join(", ")}` : (r.authorization_header ? "an Authorization header" : "no credential");
    lines.push(`Server received ${r.method} ${r.path} (Sec-Fetch-Site: ${r.sec_fetch_site || "none"}, ${creds}) → ${r.status}${r.problem ? ` ${r.problem}` : ""}`);
  }
  const why = [];
  if (carried.length > 0) {
    why.push("the browser did send your cookies (the attacker is on this page's site), so this server's own checks decided");
  }
  if (received.length && carried.length === 0) {
    why.push(model === "token"
      ? "the browser had no credential to attach: the token lives in this page's memory, and browsers never add an Authorization header by themselves"
      : "the browser withheld your cookies from the attacker's requests (SameSite)");
  }
  if (reasons.length) why.push(`the server refused: ${reasons.join(", ")}`);
  if ((seen.results || []).some((r) => /TypeError/.test(r.seen))) why.push("CORS and Cross-Origin-Resource-Policy: this server lets no other origin read its answers");
  lines.push(`Your login afterwards: ${alive ? "still alive, unchanged" : `changed (${after || "gone"})`}`);
  for (const r of read) lines.push(`The attacker's script read an answer: ${r.what}: ${r.seen}`);
  const refused = alive && accepted.length === 0 && read.length === 0;
  out.dataset.reasons = reasons.join(",");
  out.dataset.carried = String(carried.length);
  out.dataset.received = String(received.length);
  out.dataset.sites = [...new Set(received.map((r) => r.sec_fetch_site || "none"))].join(",");
  show_outcome(out, refused ? "refused" : "succeeded",
    refused ? `Refused: ${why.join("; ") || "nothing reached the server"}.` : "The attack got through.", lines);
}

async function injected(model) {
  const out = $(`xss-${model}`);
  out.dataset.outcome = "running";
  if (!attackerOrigin) { show_outcome(out, "unavailable", "No attacker page is configured.", []); return; }
  if (!(await currentLogin(model))) { show_outcome(out, "unavailable", `Log in with the ${model} model first.`, []); return; }
  // The attacker page must be up and listening before the injected script hands it anything.
  const run = `xss-${++attackRuns}`;
  const ready = awaitReport(`${run}-ready`);
  loadAttacker({ listen: "1", run: `${run}-ready` });
  await ready;
  const report = awaitReport(run);
  const injectedDone = new Promise((resolve) => {
    window.addEventListener("injected-script-done", (e) => resolve(e.detail), { once: true });
  });
  // Stands for the XSS: a script from this origin (all the CSP lets run) added to the page.
  const script = document.createElement("script");
  script.src = `/playground/injected.js?model=${model}&run=${run}`;
  document.body.append(script);
  const inside = await injectedDone;
  const outside = await report;
  script.remove();
  const lines = [];
  lines.push(`Injected script read: document.cookie = ${JSON.stringify(inside.cookie)}; from the page's memory: ${inside.stolen.length ? inside.stolen.join(", ") : "no token"}`);
  lines.push(`Sending it straight to the attacker with fetch: ${inside.exfiltrate_fetch}`);
  lines.push(`Acting as you from inside this page: GET ${model === "session" ? "/v1/session" : "/v1/me"} → ${inside.same_origin}`);
  lines.push(`Handed to the attacker page with postMessage (CSP cannot stop that).`);
  if (outside.browser) lines.push(`Attacker's page in your browser, GET /v1/me with it: ${outside.browser}`);
  if (outside.server) {
    const s = outside.server;
    lines.push(`Attacker's server, GET /v1/me with ${s.sent.length ? s.sent.join(" and ") : "nothing to send"} → ${s.status}${s.username ? ` (${s.username}, ${s.model})` : ""}`);
  }
  const stolen = !!(outside.server && outside.server.status === 200);
  out.dataset.stolen = String(inside.token_stolen);
  out.dataset.cookie = inside.cookie;
  out.dataset.replay = outside.server ? String(outside.server.status) : "";
  out.dataset.sameOrigin = inside.same_origin;
  show_outcome(out, stolen ? "succeeded" : "refused",
    stolen
      ? "Stolen: the token works from the attacker's server, and the refresh token keeps minting new ones until the login is revoked."
      : "The credential could not be stolen (HttpOnly cookie), but while this page is open the script can still make requests as you from it.",
    lines);
}

// After a reload the CSRF tokens are gone from memory: ask for them again (the cookies are
// still there, and only this origin can read the answers).
async function restore() {
  const session = await fetch("/v1/session/csrf", { credentials: "same-origin" });
  if (session.ok) state.sessionCsrf = (await session.json()).csrf_token;
  const hybrid = await fetch("/v1/hybrid/session", { credentials: "same-origin" });
  if (hybrid.ok) state.hybridCsrf = (await hybrid.json()).csrf_token;
}

document.addEventListener("DOMContentLoaded", () => {
  $("register").addEventListener("click", () => actions.register());
  for (const button of document.querySelectorAll("button[data-action]")) {
    button.addEventListener("click", () => actions[button.dataset.action]());
  }
  show();
  restore();
  if (attackerOrigin) {
    const host = new URL(attackerOrigin).hostname;
    const site = host === location.hostname ? "same-site, another origin (another port): the browser sends it your cookies, so this server's Origin and CSRF-token checks must stop it" : "another site (its host is not this page's): the browser withholds SameSite cookies from its requests";
    $("attacker-where").textContent = `The attacker page is ${attackerOrigin}: ${site}.`;
  }
});
