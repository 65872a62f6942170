/* The 安否確認 answer page. Without this script the form is a plain POST; with it, the
   answer is sent in the background and, without signal, queued by the service worker
   (/sw.js) which sends it when the phone is back online. Every word shown comes from the
   page's data- attributes or the server. No inline scripts (CSP). */
(function () {
  "use strict";
  var root = document.querySelector("[data-safety]");
  var form = document.querySelector("[data-safety-form]");
  if (!root || !form || !window.fetch) { return; }
  var status = root.querySelector("[data-status]");
  var chosen = "";
  var waiting = null;  // an answer kept here when no service worker took it

  function say(text) { status.textContent = text; }

  function newKey() {
    var b = new Uint8Array(16);
    (window.crypto || window.msCrypto).getRandomValues(b);
    b[6] = (b[6] & 15) | 64; b[8] = (b[8] & 63) | 128;
    var h = "";
    for (var i = 0; i < 16; i++) { h += (b[i] + 256).toString(16).slice(1); if (i === 3 || i === 5 || i === 7 || i === 9) { h += "-"; } }
    return h;
  }

  function flush() {
    var worker = navigator.serviceWorker && navigator.serviceWorker.controller;
    if (worker) { worker.postMessage({ type: "kairan-flush" }); }
    if (waiting) { var body = waiting; waiting = null; send(body); }
  }

  function send(body) {
    fetch(form.action, {
      method: "POST", credentials: "same-origin", body: body,
      headers: { "Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded" }
    }).then(function (response) {
      return response.json().then(function (data) { return [response.status, data]; }, function () { return [response.status, {}]; });
    }).then(function (result) {
      var data = result[1];
      if (result[0] === 202 && data.queued) { say(root.getAttribute(data.busy ? "data-text-busy" : "data-text-queued")); return; }
      if (result[0] === 429) { say(root.getAttribute("data-text-wait")); return; }
      if (result[0] >= 400) { say(data.error || root.getAttribute("data-text-failed")); return; }
      say("✓ " + data.text);
    }, function () {
      // No service worker took it (not yet installed): keep it here until back online.
      waiting = body;
      say(root.getAttribute("data-text-queued"));
    });
  }

  // The page may come from the offline copy: every page view answers with its own key.
  form.elements.key.value = newKey();

  form.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("button[name=status]");
    if (button) { chosen = button.value; }
  });

  form.addEventListener("submit", function (event) {
    if (!chosen) { return; }
    event.preventDefault();
    form.elements.at.value = String(Date.now());
    var parts = [];
    for (var i = 0; i < form.elements.length; i++) {
      var field = form.elements[i];
      if (!field.name || field.tagName === "BUTTON" || (field.type === "checkbox" && !field.checked)) { continue; }
      parts.push(encodeURIComponent(field.name) + "=" + encodeURIComponent(field.value));
    }
    parts.push("status=" + encodeURIComponent(chosen));
    // The next tap is a new answer; a resend of this one keeps its key.
    form.elements.key.value = newKey();
    send(parts.join("&"));
  });

  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("/sw.js", { scope: "/" }).catch(function () { /* plain POSTs still work */ });
    navigator.serviceWorker.addEventListener("message", function (event) {
      var data = event.data || {};
      if (data.type === "kairan-safety-sent" && data.path === window.location.pathname && data.text) { say("✓ " + data.text); }
    });
  }
  window.addEventListener("online", flush);
  // Keep a copy of this page for the service worker, so it opens again without signal.
  if (window.caches && navigator.onLine) {
    var files = [window.location.pathname];
    var assets = document.querySelectorAll("link[rel=stylesheet], script[src]");
    for (var i = 0; i < assets.length; i++) { files.push(assets[i].getAttribute("href") || assets[i].getAttribute("src")); }
    window.caches.open("kairan-safety-1").then(function (cache) { return cache.addAll(files); }).catch(function () {});
  }
})();
