/* Kairan service worker: shows web push notifications and opens the page on a tap.
   Served from /sw.js (scope "/"). A push carries ids and flags only; every word shown
   here is fixed, and the page fetches the circular itself once it is open. */
"use strict";

var BODY = "タップして開いてください";

function titleFor(data) {
  if (data.type === "reminder") { return "確認をお願いします"; }
  if (data.type === "followup") { return "確認が必要な世帯があります"; }
  if (data.urgent) { return "緊急の回覧があります"; }
  return "新しい回覧があります";
}

/* Only a path on this site is ever opened; anything else falls back to the home page. */
function sameOriginUrl(url) {
  try {
    var target = new URL(url || "/", self.location.origin);
    if (target.origin === self.location.origin) { return target.href; }
  } catch (error) { /* not a URL: use the home page */ }
  return new URL("/", self.location.origin).href;
}

self.addEventListener("install", function () { self.skipWaiting(); });
self.addEventListener("activate", function (event) { event.waitUntil(self.clients.claim()); });

self.addEventListener("push", function (event) {
  var data = {};
  if (event.data) {
    try { data = event.data.json() || {}; } catch (error) { data = {}; }
  }
  var urgent = data.urgent === true;
  var options = {
    body: BODY,
    lang: "ja",
    // One notification per circular (or per kind): a retry replaces it instead of piling up.
    tag: "kairan-" + (data.type || "circular") + "-" + (data.id || "0"),
    renotify: urgent,
    requireInteraction: urgent,
    data: { url: sameOriginUrl(data.url) }
  };
  event.waitUntil(self.registration.showNotification(titleFor(data), options));
});

self.addEventListener("notificationclick", function (event) {
  event.notification.close();
  var url = sameOriginUrl(event.notification.data && event.notification.data.url);
  event.waitUntil(
    self.clients.matchAll({ type: "window", includeUncontrolled: true }).then(function (windows) {
      for (var i = 0; i < windows.length; i++) {
        if (windows[i].url === url && "focus" in windows[i]) { return windows[i].focus(); }
      }
      for (var j = 0; j < windows.length; j++) {
        var client = windows[j];
        if (new URL(client.url).origin === self.location.origin && "navigate" in client) {
          return client.navigate(url).then(function (opened) {
            return opened ? opened.focus() : self.clients.openWindow(url);
          });
        }
      }
      return self.clients.openWindow(url);
    })
  );
});
