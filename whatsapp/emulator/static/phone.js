/* The emulator's patient phone (whatsapp/emulator/phone.py): polls the chat for new bubbles and posts taps and
   replies without leaving the page. Only an enhancement: without it, forms post and redirect. No inline script
   anywhere, so the page runs under a strict Content-Security-Policy. */
(function () {
  "use strict";
  var POLL_MS = 1000;
  var versions = {};

  function nearBottom() {
    var page = document.scrollingElement;
    return page.scrollHeight - page.scrollTop - page.clientHeight < 120;
  }

  function scrollDown(el) {  // a chat opens, and follows new messages, at its newest message
    if (el.dataset.scroll === "bottom") { window.scrollTo(0, document.scrollingElement.scrollHeight); }
  }

  function refresh(el) {
    return fetch(el.dataset.poll, { headers: { "Accept": "application/json" }, cache: "no-store" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) {
        if (!data || versions[el.id] === data.version) { return; }
        var follow = nearBottom();
        var openMenus = Array.prototype.map.call(el.querySelectorAll("details[open] input[name=message_id]"),
                                                 function (input) { return input.value; });
        el.innerHTML = data.html;  // server-rendered and escaped by Jinja2
        openMenus.forEach(function (id) {
          var input = el.querySelector("input[name=message_id][value='" + CSS.escape(id) + "']");
          var menu = input && input.closest("form").querySelector("details");
          if (menu) { menu.open = true; }
        });
        if (versions[el.id] === undefined || follow) { scrollDown(el); }
        versions[el.id] = data.version;
      })
      .catch(function () { /* the emulator may be restarting; the next poll tries again */ });
  }

  function pollAll() {
    if (document.hidden) { return; }
    document.querySelectorAll("[data-poll]").forEach(refresh);
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.hasAttribute("data-phone-post")) { return; }
    event.preventDefault();
    var body = new URLSearchParams(new FormData(form));
    var submitter = event.submitter;
    if (submitter && submitter.name) { body.append(submitter.name, submitter.value); }
    var controls = form.querySelectorAll("button, input[type=text]");
    controls.forEach(function (c) { c.disabled = true; });
    fetch(form.action, { method: "POST", body: body, headers: { "Accept": "application/json" } })
      .then(function (response) {
        if (response.ok && form.classList.contains("composer")) { form.reset(); }
      })
      .finally(function () {
        controls.forEach(function (c) { c.disabled = false; });
        if (form.classList.contains("composer")) { form.querySelector("input[type=text]").focus(); }
        pollAll();
      });
  });

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-poll]").forEach(function (el) {
      scrollDown(el);
    });
    pollAll();
    window.setInterval(pollAll, POLL_MS);
  });
})();
