// The account pages: set a new password with a recovery code, or verify an address with a
// verification code. The code arrives in the link's query (`code=…`); it is taken out of the
// address bar at once, so it stays out of the history and of anything the page links to.
"use strict";

const TEXT = {
  en: {
    "recovery-title": "Set a new password",
    "recovery-intro": "Choose a new password. Every device signed in to your account will be signed out.",
    "new-password": "New password",
    "confirm-password": "New password, again",
    "recovery-submit": "Set the password",
    "recovery-done": "Your password is set, and every login of your account has ended. Log in with the new password.",
    "verify-title": "Verify your email address",
    "verify-intro": "Confirm that this address is yours.",
    "verify-submit": "Verify my address",
    "verify-done": "Your email address is verified.",
    "mismatch": "The two passwords differ.",
    "no-code": "This link has no code. Open the link from the mail again, or ask for a new mail.",
    "failed": "Something went wrong; try again.",
    "working": "One moment…",
  },
  zh: {
    "recovery-title": "设置新密码",
    "recovery-intro": "请设置新密码。所有已登录您账户的设备都将被登出。",
    "new-password": "新密码",
    "confirm-password": "再次输入新密码",
    "recovery-submit": "设置密码",
    "recovery-done": "新密码已设置，您账户的所有登录均已结束。请使用新密码登录。",
    "verify-title": "验证您的电子邮箱地址",
    "verify-intro": "请确认这个地址属于您。",
    "verify-submit": "验证我的地址",
    "verify-done": "您的电子邮箱地址已验证。",
    "mismatch": "两次输入的密码不一致。",
    "no-code": "此链接没有验证码。请重新打开邮件中的链接，或申请一封新邮件。",
    "failed": "出了点问题，请重试。",
    "working": "请稍候……",
  },
};

const lang = TEXT[document.documentElement.lang] ? document.documentElement.lang : "en";
const text = (key) => TEXT[lang][key] || TEXT.en[key] || key;

for (const node of document.querySelectorAll("[data-text]")) {
  node.textContent = text(node.dataset.text);
}

const params = new URLSearchParams(location.search);
const code = params.get("code");
if (code !== null) {
  params.delete("code");
  const rest = params.toString();
  history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
}

const status = document.getElementById("status");
function show(message, kind) {
  status.textContent = message;
  status.className = kind || "";
}

// The API is beside the pages: <mount>/account/… → <mount>/v1/….
async function post(path, body) {
  const response = await fetch("../v1/" + path, {
    method: "POST",
    headers: { "Content-Type": "application/json", "Accept": "application/json" },
    body: JSON.stringify(body),
    credentials: "omit",
  });
  let answer = null;
  try {
    answer = await response.json();
  } catch (_) {
    // A body that is not JSON: the status says enough.
  }
  return { ok: response.ok, answer };
}

function wire(formId, run) {
  const form = document.getElementById(formId);
  form.hidden = false;
  if (!code) {
    form.querySelector("button").disabled = true;
    show(text("no-code"), "error");
    return;
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button");
    button.disabled = true;
    show(text("working"));
    try {
      const { ok, answer } = await run(form);
      if (ok) {
        form.hidden = true;
        show(text(formId + "-done"), "done");
      } else {
        show((answer && answer.detail) || text("failed"), "error");
        button.disabled = false;
      }
    } catch (_) {
      show(text("failed"), "error");
      button.disabled = false;
    }
  });
}

if (document.body.dataset.page === "recovery") {
  wire("recovery", async (form) => {
    const password = form.querySelector("#new-password").value;
    if (password !== form.querySelector("#confirm-password").value) {
      return { ok: false, answer: { detail: text("mismatch") } };
    }
    return post("account/recovery/complete", { code, new_password: password });
  });
} else {
  wire("verify", async () => post("account/email/verify", { code }));
}
