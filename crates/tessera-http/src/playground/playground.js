// The playground: each button makes real requests to this server and logs what went over the wire.
"use strict";

const state = { sessionCsrf: null, hybridCsrf: null, access: null, refresh: null };

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

const actions = {
  async "register"() { await call("POST", "/v1/users", { json: credentials() }); },

  async "session-login"() {
    const r = await call("POST", "/v1/session/login", { json: credentials() });
    if (r.status === 200) state.sessionCsrf = r.body.csrf_token;
  },
  async "session-me"() { whoami(await call("GET", "/v1/me")); },
  async "session-logout"() {
    await call("DELETE", "/v1/session", { headers: { "x-csrf-token": state.sessionCsrf || "" } });
    state.sessionCsrf = null;
  },

  async "token-login"() {
    const r = await call("POST", "/v1/token", { json: credentials() });
    if (r.status === 200) { state.access = r.body.access_token; state.refresh = r.body.refresh_token; }
  },
  async "token-me"() {
    whoami(await call("GET", "/v1/me", { headers: state.access ? { authorization: `Bearer ${state.access}` } : {} }));
  },
  async "token-refresh"() {
    const r = await call("POST", "/v1/token/refresh", { json: { refresh_token: state.refresh || "" } });
    if (r.status === 200) { state.access = r.body.access_token; state.refresh = r.body.refresh_token; }
  },
  async "token-revoke"() {
    await call("POST", "/v1/token/revoke", { form: { token: state.refresh || "" } });
    state.access = null; state.refresh = null;
  },

  async "hybrid-login"() {
    const r = await call("POST", "/v1/hybrid/login", { json: credentials() });
    if (r.status === 200) state.hybridCsrf = r.body.csrf_token;
  },
  async "hybrid-me"() { whoami(await call("GET", "/v1/me")); },
  async "hybrid-refresh"() {
    const r = await call("POST", "/v1/hybrid/refresh", { headers: { "x-csrf-token": state.hybridCsrf || "" } });
    if (r.status === 200) state.hybridCsrf = r.body.csrf_token;
  },
  async "hybrid-logout"() {
    await call("DELETE", "/v1/hybrid/session", { headers: { "x-csrf-token": state.hybridCsrf || "" } });
    state.hybridCsrf = null;
  },
};

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
});
