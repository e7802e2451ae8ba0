// Asking first: a form marked data-confirm opens a dialog before it acts. Cancel (or Escape) closes it and nothing
// happens; the confirm button posts the form to its data-confirm-action. Without this script the form posts to a
// confirmation page that asks the same question, so every destructive action asks first either way.
(function () {
  "use strict";

  var dialog = null;
  var pending = null;

  function build() {
    dialog = document.createElement("dialog");
    dialog.className = "confirm-dialog";
    dialog.setAttribute("aria-labelledby", "confirm-dialog-title");
    dialog.setAttribute("aria-describedby", "confirm-dialog-detail");
    var title = document.createElement("h2");
    title.id = "confirm-dialog-title";
    var detail = document.createElement("p");
    detail.id = "confirm-dialog-detail";
    var row = document.createElement("div");
    row.className = "actions-row";
    var cancel = document.createElement("button");
    cancel.type = "button";
    cancel.className = "button";
    cancel.textContent = "Cancel";
    cancel.addEventListener("click", function () { dialog.close("cancel"); });
    var go = document.createElement("button");
    go.type = "button";
    go.className = "button danger";
    go.addEventListener("click", function () { dialog.close("confirm"); });
    row.appendChild(go);
    row.appendChild(cancel);
    dialog.appendChild(title);
    dialog.appendChild(detail);
    dialog.appendChild(row);
    dialog.addEventListener("close", function () {
      var form = pending;
      pending = null;
      if (form && dialog.returnValue === "confirm") {
        form.setAttribute("action", form.getAttribute("data-confirm-action"));
        form.submit();
      }
    });
    document.body.appendChild(dialog);
    return { title: title, detail: detail, go: go, cancel: cancel };
  }

  var parts = null;

  function ask(event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-confirm")) {
      return;
    }
    if (typeof HTMLDialogElement !== "function") {
      return; // no dialog: the confirmation page asks instead
    }
    event.preventDefault();
    parts = parts || build();
    parts.title.textContent = form.getAttribute("data-confirm");
    parts.detail.textContent = form.getAttribute("data-confirm-detail") || "";
    parts.go.textContent = form.getAttribute("data-confirm-button") || "Confirm";
    pending = form;
    dialog.returnValue = "";
    dialog.showModal();
    // The safe choice has the focus: Enter or Space on it, or Escape, changes nothing.
    parts.cancel.focus();
  }

  document.addEventListener("submit", ask);
})();
