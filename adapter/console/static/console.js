// The console's only script (no inline script: the Content-Security-Policy forbids it). Progressive:
// every page works without it. A form marked data-busy shows that a long action (verify) is running
// and cannot be sent twice.
"use strict";
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-busy")) { return; }
  var button = form.querySelector("button[type=submit]");
  if (button) {
    if (button.disabled) { event.preventDefault(); return; }
    button.disabled = true;
    button.textContent = form.getAttribute("data-busy");
  }
});
