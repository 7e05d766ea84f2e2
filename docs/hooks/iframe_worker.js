// Search for a site opened from disk (file://), without any network request.
//
// Material's search runs in a Web Worker, and browsers refuse to start a worker
// from a file:// URL. Material's offline plugin points the page at a small shim
// on a CDN that replaces `Worker` by one running in a hidden iframe; the build
// hook (docs/hooks/build.py) points it here instead. Material's search worker
// supports this: when its parent window has `IFrameWorker`, it finds its own
// <script src> in the iframe's document.
//
// The iframe has the page's origin, so messages are passed as plain objects:
// worker.postMessage(data) dispatches a "message" event in the iframe, and the
// iframe's postMessage(data) dispatches one on the worker object.
(function () {
  "use strict";
  if (location.protocol !== "file:") return; // served over http(s): real workers work

  class IFrameWorker extends EventTarget {
    constructor(url) {
      super();
      this.onmessage = null;
      this.onerror = null;
      this._ready = false;
      this._pending = [];
      this._iframe = document.createElement("iframe");
      this._iframe.style.display = "none";
      this._iframe.setAttribute("aria-hidden", "true");
      (document.body || document.documentElement).appendChild(this._iframe);
      const win = this._iframe.contentWindow;
      const doc = this._iframe.contentDocument;
      const scriptUrl = new URL(url, location.href).href;
      win.postMessage = (data) => this._emit(new MessageEvent("message", { data }));
      win.importScripts = (...urls) =>
        urls.reduce(
          (done, src) => done.then(() => loadScript(doc, new URL(src, scriptUrl).href)),
          Promise.resolve(),
        );
      loadScript(doc, scriptUrl).then(
        () => {
          this._ready = true;
          for (const data of this._pending.splice(0)) this.postMessage(data);
        },
        (error) => this._emit(new ErrorEvent("error", { message: String(error) })),
      );
    }

    postMessage(data) {
      if (!this._ready) {
        this._pending.push(data);
        return;
      }
      const win = this._iframe.contentWindow;
      win.dispatchEvent(new win.MessageEvent("message", { data }));
    }

    terminate() {
      this._iframe.remove();
    }

    _emit(event) {
      this.dispatchEvent(event);
      const handler = event.type === "message" ? this.onmessage : this.onerror;
      if (typeof handler === "function") handler.call(this, event);
    }
  }

  function loadScript(doc, src) {
    return new Promise((resolve, reject) => {
      const script = doc.createElement("script");
      script.src = src;
      script.onload = () => resolve();
      script.onerror = () => reject(new Error(`cannot load ${src}`));
      (doc.head || doc.documentElement).appendChild(script);
    });
  }

  window.IFrameWorker = IFrameWorker;
  window.Worker = IFrameWorker;
})();
