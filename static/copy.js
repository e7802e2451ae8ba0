// Copy buttons for what a person must paste elsewhere: each element marked data-copy="what it is" gets a button
// after it that copies its text, and "Copied" is announced in a live region. Without this script, or without the
// Clipboard API (pages not served over HTTPS or from localhost), the text can still be selected and copied by hand.
(function () {
  "use strict";

  function start() {
    var targets = document.querySelectorAll("[data-copy]");
    if (!targets.length || !navigator.clipboard || !window.isSecureContext) {
      return;
    }
    var live = document.createElement("p");
    live.className = "visually-hidden";
    live.setAttribute("role", "status");
    live.setAttribute("aria-live", "polite");
    document.body.appendChild(live);

    function say(message) {
      // Emptied first, so the same words twice are announced twice.
      live.textContent = "";
      window.setTimeout(function () { live.textContent = message; }, 50);
    }

    targets.forEach(function (target) {
      var what = target.getAttribute("data-copy") || "text";
      var button = document.createElement("button");
      button.type = "button";
      button.className = "button small copy-button";
      button.textContent = "Copy";
      button.setAttribute("aria-label", "Copy " + what);
      button.addEventListener("click", function () {
        navigator.clipboard.writeText(target.textContent.trim()).then(
          function () {
            button.textContent = "Copied";
            say("Copied " + what + ".");
            window.setTimeout(function () { button.textContent = "Copy"; }, 2000);
          },
          function () {
            say("Could not copy " + what + ": select it and copy it yourself.");
          }
        );
      });
      target.insertAdjacentElement("afterend", button);
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
