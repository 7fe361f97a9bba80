/* yunstack dashboard: a server's serial console (serial.html), xterm.js joined to the API's websocket.
 *
 * A file of its own, not inline: the Content-Security-Policy runs scripts only from this origin.  Each
 * connection asks the dashboard for a fresh one-time URL (a POST with the CSRF token in its header),
 * then opens it on this page's own host and scheme (ws: or wss:), which `connect-src 'self'` allows.
 * The guest's bytes arrive in binary frames; what is typed goes back as UTF-8 bytes.
 */
(function () {
  "use strict";
  const box = document.getElementById("serial");
  if (!box || typeof Terminal === "undefined") {
    return;
  }
  const status = document.getElementById("serial-status");
  const again = document.getElementById("serial-reconnect");
  const encoder = new TextEncoder();
  let socket = null;

  function say(text, bad) {
    status.textContent = text;
    status.className = bad ? "error" : "note";
  }

  // xterm 5's DOM renderer writes its CSS (colours, font, row heights) into <style> elements, which
  // the policy blocks (style-src 'self', no 'unsafe-inline').  While it opens, it gets inert elements
  // instead, whose text goes into a constructed stylesheet: CSSOM, which the policy allows.
  function openWithoutInlineStyle(term, parent) {
    const create = document.createElement;
    document.createElement = function (name, options) {
      if (String(name).toLowerCase() !== "style") {
        return create.call(document, name, options);
      }
      const sheet = new CSSStyleSheet();
      document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
      const inert = create.call(document, "template");
      Object.defineProperty(inert, "textContent", {
        get: () => "",
        set: (css) => sheet.replaceSync(String(css)),
      });
      inert.remove = function () {
        document.adoptedStyleSheets = document.adoptedStyleSheets.filter((s) => s !== sheet);
        Element.prototype.remove.call(inert);
      };
      return inert;
    };
    try {
      term.open(parent);
    } finally {
      delete document.createElement;
    }
  }

  const term = new Terminal({ cols: 80, rows: 24, scrollback: 2000, cursorBlink: true, fontSize: 14,
                              fontFamily: "ui-monospace, Menlo, Consolas, monospace" });
  openWithoutInlineStyle(term, box);

  function send(bytes) {
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(bytes);
    }
  }
  term.onData((text) => send(encoder.encode(text)));
  term.onBinary((text) => send(Uint8Array.from(text, (c) => c.charCodeAt(0) & 255)));

  function lost(message) {
    socket = null;
    say(message, true);
    again.hidden = false;
  }

  async function connect() {
    again.hidden = true;
    say("Connecting to the serial console…", false);
    let answer;
    try {
      const r = await fetch(box.dataset.url, {
        method: "POST", credentials: "same-origin",
        headers: { "X-CSRF-Token": box.dataset.csrf, "Accept": "application/json" },
      });
      answer = await r.json().catch(() => ({ error: `The dashboard answered ${r.status}.` }));
      if (!r.ok || !answer.url) {
        lost(answer.error || `The dashboard answered ${r.status}.`);
        return;
      }
    } catch (e) {
      lost(`The dashboard could not be reached: ${e.message}`);
      return;
    }
    // The API names its own base URL; the browser reaches it as this page's origin (a proxy, a name).
    const url = new URL(answer.url);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    url.host = location.host;
    const ws = new WebSocket(url.href, ["binary"]);
    ws.binaryType = "arraybuffer";
    socket = ws;
    ws.onopen = () => {
      say("Connected: type here (press Enter if the guest shows no prompt yet).", false);
      term.focus();
    };
    ws.onmessage = (e) => term.write(typeof e.data === "string" ? e.data : new Uint8Array(e.data));
    ws.onclose = () => {
      if (socket === ws) {
        lost("Disconnected from the serial console.");
      }
    };
  }

  again.addEventListener("click", connect);
  connect();
})();
