// The images page's upload, with its progress: register the image (a POST of the form), then send
// the file's bytes as they are (a PUT the dashboard streams on to the image service).
// XMLHttpRequest, not fetch: only it reports an upload's progress.  Both requests carry the CSRF
// token as a header.  Loaded on every page (htmx's boosted navigation swaps in only the body), so
// the form is found by delegation.
(function () {
  "use strict";

  function send(method, url, token, body, type, progress) {
    return new Promise(function (resolve) {
      var xhr = new XMLHttpRequest();
      xhr.open(method, url);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.setRequestHeader("X-CSRF-Token", token);
      xhr.setRequestHeader("Content-Type", type);
      if (progress) {
        xhr.upload.addEventListener("progress", progress);
      }
      xhr.addEventListener("load", function () {
        var answer;
        try {
          answer = JSON.parse(xhr.responseText);
        } catch (e) {
          answer = {message: "The dashboard answered " + xhr.status + "."};
        }
        answer.ok = xhr.status >= 200 && xhr.status < 300;
        resolve(answer);
      });
      xhr.addEventListener("error", function () {
        resolve({ok: false, message: "The connection to the dashboard failed."});
      });
      xhr.send(body);
    });
  }

  async function upload(form) {
    var bar = document.getElementById("upload-progress");
    var said = document.getElementById("upload-status");
    var button = form.querySelector("button[type=submit]");
    var file = form.elements.file.files[0];
    var token = form.elements.csrf_token.value;
    function say(text, bad) {
      said.textContent = text;
      said.className = bad ? "error" : "";
    }
    if (!file) {
      say("Choose a file.", true);
      return;
    }
    var fields = new URLSearchParams();
    new FormData(form).forEach(function (value, name) {
      if (name !== "file") {
        fields.append(name, value);
      }
    });
    button.disabled = true;
    bar.hidden = false;
    bar.max = file.size || 1;
    bar.value = 0;
    say("Registering the image…");
    try {
      var made = await send("POST", form.action, token, fields.toString(), "application/x-www-form-urlencoded");
      if (!made.ok) {
        say(made.message, true);
        return;
      }
      say("Sending " + file.name + "…");
      var done = await send("PUT", made.upload, token, file, "application/octet-stream", function (event) {
        if (event.lengthComputable) {
          bar.max = event.total;
          bar.value = event.loaded;
          say("Sending " + file.name + ": " + Math.floor(100 * event.loaded / event.total) + "%");
        }
      });
      if (done.ok) {
        bar.value = bar.max;
        form.reset();
      }
      say(done.ok ? done.message : done.message + " (the image stays queued: delete it and try again.)",
          !done.ok);
      if (window.htmx) {
        window.htmx.trigger("#images", "refresh");
      }
    } finally {
      button.disabled = false;
    }
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form instanceof HTMLFormElement && form.id === "upload-image") {
      event.preventDefault();
      upload(form);
    }
  });
})();
