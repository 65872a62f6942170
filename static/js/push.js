/* The 「通知を受け取る」 button on the notification settings page. No inline scripts (CSP):
   everything comes from data- attributes on [data-push]; every word shown is in the
   template, so it is translated there. */
(function () {
  "use strict";

  function keyBytes(base64url) {
    var padded = (base64url + "===".slice((base64url.length + 3) % 4))
      .replace(/-/g, "+").replace(/_/g, "/");
    var raw = window.atob(padded);
    var bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) { bytes[i] = raw.charCodeAt(i); }
    return bytes;
  }

  function csrfToken() {
    try {
      var headers = JSON.parse(document.body.getAttribute("hx-headers") || "{}");
      if (headers["X-CSRFToken"]) { return headers["X-CSRFToken"]; }
    } catch (error) { /* fall back to the cookie */ }
    var match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
      body: JSON.stringify(body)
    }).then(function (response) {
      if (!response.ok) { throw new Error("HTTP " + response.status); }
      return response.json();
    });
  }

  function init(root) {
    var states = root.querySelectorAll("[data-push-state]");
    var pressed = false;  // after a press, focus follows to the new state's button
    function show(name) {
      for (var i = 0; i < states.length; i++) {
        states[i].hidden = states[i].getAttribute("data-push-state") !== name;
      }
      var next = root.querySelector('[data-push-state="' + name + '"] button');
      if (pressed && next) { next.focus(); }
      pressed = false;
    }

    if (!("serviceWorker" in navigator) || !("PushManager" in window) || !("Notification" in window)) {
      show("unsupported");
      return;
    }
    if (Notification.permission === "denied") { show("denied"); return; }

    var registration = navigator.serviceWorker.register(root.getAttribute("data-sw-url"), { scope: "/" })
      .then(function () { return navigator.serviceWorker.ready; });

    registration.then(function (ready) {
      return ready.pushManager.getSubscription();
    }).then(function (existing) {
      if (existing && Notification.permission === "granted") {
        // Send it again: the browser may have renewed it, or someone else used this phone.
        return post(root.getAttribute("data-subscribe-url"), existing.toJSON())
          .then(function () { show("on"); });
      }
      show("off");
    }).catch(function () { show("off"); });

    var subscribeButton = root.querySelector("[data-push-subscribe]");
    subscribeButton.addEventListener("click", function () {
      pressed = true;
      subscribeButton.disabled = true;
      Notification.requestPermission().then(function (permission) {
        if (permission !== "granted") {
          show(permission === "denied" ? "denied" : "off");
          return null;
        }
        return registration.then(function (ready) {
          return ready.pushManager.subscribe({
            userVisibleOnly: true,
            applicationServerKey: keyBytes(root.getAttribute("data-vapid-key"))
          });
        }).then(function (subscription) {
          return post(root.getAttribute("data-subscribe-url"), subscription.toJSON());
        }).then(function () { show("on"); });
      }).catch(function () {
        show("error");
      }).then(function () { subscribeButton.disabled = false; });
    });

    var unsubscribeButton = root.querySelector("[data-push-unsubscribe]");
    unsubscribeButton.addEventListener("click", function () {
      pressed = true;
      unsubscribeButton.disabled = true;
      registration.then(function (ready) {
        return ready.pushManager.getSubscription();
      }).then(function (subscription) {
        if (!subscription) { return null; }
        var endpoint = subscription.endpoint;
        return subscription.unsubscribe().then(function () {
          return post(root.getAttribute("data-unsubscribe-url"), { endpoint: endpoint });
        });
      }).then(function () { show("off"); }, function () { show("error"); })
        .then(function () { unsubscribeButton.disabled = false; });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var roots = document.querySelectorAll("[data-push]");
    for (var i = 0; i < roots.length; i++) { init(roots[i]); }
  });
})();
