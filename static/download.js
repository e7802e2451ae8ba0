// Download buttons for a revealed password: as a .env file, or as a Kubernetes image pull Secret. The files are
// made here, in the browser, from what the page already shows, so the password never travels in a second response
// nor lands in a cache. The element marked data-downloads names the login server and the username, and the id of
// the element holding the password; it stays hidden without this script, and the commands on the page remain.
(function () {
  "use strict";

  function base64(text) {
    // btoa takes Latin-1 only: encode to UTF-8 bytes first.
    var binary = "";
    new TextEncoder().encode(text).forEach(function (byte) { binary += String.fromCharCode(byte); });
    return window.btoa(binary);
  }

  function envValue(value) {
    // Plain where every .env reader agrees on it; quoted otherwise.
    if (/^[A-Za-z0-9_.:\/+=@-]*$/.test(value)) {
      return value;
    }
    return "\"" + value.replace(/\\/g, "\\\\").replace(/"/g, "\\\"") + "\"";
  }

  // A Secret's name must be a DNS-1123 name. A DNS-1123 label (lowercase letters, digits and "-", starting and
  // ending with a letter or digit, at most 63 characters) is one, and is what `kubectl create secret` accepts too.
  function secretName(username) {
    var name = username.toLowerCase().replace(/[^a-z0-9]+/g, "-");
    name = name.replace(/^-+/, "").slice(0, 63).replace(/-+$/, "");
    return name || "acr-pull-secret";
  }

  function dotenv(server, username, password) {
    return "# " + server + ", token " + username + ". Keep this file out of version control.\n" +
      "ACR_REGISTRY=" + envValue(server) + "\n" +
      "ACR_USERNAME=" + envValue(username) + "\n" +
      "ACR_PASSWORD=" + envValue(password) + "\n";
  }

  function pullSecret(server, username, password, name) {
    var auths = {};
    auths[server] = { username: username, password: password, auth: base64(username + ":" + password) };
    return "# An image pull secret for " + server + ": kubectl apply -f this file, then name it in the pod's\n" +
      "# imagePullSecrets. It holds the password: keep it out of version control.\n" +
      "apiVersion: v1\n" +
      "kind: Secret\n" +
      "metadata:\n" +
      "  name: " + name + "\n" +
      "type: kubernetes.io/dockerconfigjson\n" +
      "data:\n" +
      "  .dockerconfigjson: " + base64(JSON.stringify({ auths: auths })) + "\n";
  }

  function save(filename, type, text) {
    var url = URL.createObjectURL(new Blob([text], { type: type }));
    var link = document.createElement("a");
    link.href = url;
    link.download = filename;
    link.hidden = true;
    document.body.appendChild(link);
    link.click();
    link.remove();
    // Released once the download has started, so the password does not outlive the page in a blob.
    window.setTimeout(function () { URL.revokeObjectURL(url); }, 1000);
  }

  function start() {
    var box = document.querySelector("[data-downloads]");
    if (!box || !window.Blob || !window.URL || !URL.createObjectURL || !window.TextEncoder ||
        !("download" in document.createElement("a"))) {
      return;
    }
    var server = box.getAttribute("data-login-server") || "";
    var username = box.getAttribute("data-username") || "";
    var secret = document.getElementById(box.getAttribute("data-password-from") || "");
    if (!server || !username || !secret) {
      return;
    }
    var row = box.querySelector(".actions-row") || box;
    var name = secretName(username);

    function button(label, action) {
      var element = document.createElement("button");
      element.type = "button";
      element.className = "button small";
      element.textContent = label;
      element.addEventListener("click", action);
      row.appendChild(element);
    }

    // The password is read at the click, from the page, never kept by this script.
    button("Download as .env", function () {
      save(name + ".env", "text/plain", dotenv(server, username, secret.textContent.trim()));
    });
    button("Download as a Kubernetes Secret", function () {
      save(name + "-pull-secret.yaml", "application/yaml",
        pullSecret(server, username, secret.textContent.trim(), name));
    });
    box.hidden = false;
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
