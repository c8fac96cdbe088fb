/*
 * sse-relay.js — a client for sse-relay streams, for any page.
 *
 *   const stream = SseRelay.connect({
 *     url: "https://relay.example.com/events?channel=weatherforecast.*",
 *     events: ["weatherforecast.created", "weatherforecast.updated"], // event names to receive
 *     onEvent(type, data, id) {},      // data: the event's text (JSON for envelope channels)
 *     onStatus(status) {},             // "connecting" | "connected" | "reconnecting"
 *     onConnected(connectionId) {},    // the relay connection id (see below)
 *   });
 *   stream.shared;   // true when the connection is shared through a SharedWorker
 *   stream.close();
 *
 * All tabs of one origin that open the same URL share one relay connection through a
 * SharedWorker (sse-relay-worker.js, served next to this file), so ten tabs cost one
 * connection and never hit the browser's six-connections-per-host limit of HTTP/1.1. Where
 * SharedWorker is missing, or with { shared: false }, each tab opens its own EventSource.
 * EventSource itself reconnects and resumes with Last-Event-ID; relay.reset tells the page to
 * refetch its state.
 *
 * A shared connection has one connection id for all tabs: hand it to an API as
 * X-Relay-Connection-Id only when stream.shared is false, or every tab of the browser would
 * miss the event.
 */
(function (global) {
  "use strict";
  const RELAY_EVENTS = ["relay.connected", "relay.reset", "relay.expired"];

  function connectDirect(options) {
    const source = new EventSource(options.url);
    const deliver = (type) => (e) => {
      if (type === "relay.connected") {
        try { options.onConnected && options.onConnected(JSON.parse(e.data).connection_id); } catch (_) {}
      }
      options.onEvent && options.onEvent(type, e.data, e.lastEventId || null);
    };
    for (const type of new Set([...(options.events || []), ...RELAY_EVENTS])) {
      source.addEventListener(type, deliver(type));
    }
    source.onopen = () => options.onStatus && options.onStatus("connected");
    source.onerror = () => options.onStatus && options.onStatus(source.readyState === EventSource.CLOSED ? "closed" : "reconnecting");
    options.onStatus && options.onStatus("connecting");
    return { shared: false, close: () => source.close() };
  }

  function connectShared(options) {
    const worker = new SharedWorker(options.workerUrl || "/sse-relay-worker.js", { name: "sse-relay" });
    const port = worker.port;
    port.onmessage = (message) => {
      const m = message.data;
      if (m.kind === "status") options.onStatus && options.onStatus(m.status);
      if (m.kind === "event") {
        if (m.type === "relay.connected") {
          try { options.onConnected && options.onConnected(JSON.parse(m.data).connection_id); } catch (_) {}
        }
        options.onEvent && options.onEvent(m.type, m.data, m.id);
      }
    };
    port.start();
    const events = [...new Set([...(options.events || []), ...RELAY_EVENTS])];
    port.postMessage({ kind: "subscribe", url: options.url, events });
    const close = () => port.postMessage({ kind: "unsubscribe" });
    global.addEventListener("pagehide", close);
    return { shared: true, close };
  }

  global.SseRelay = {
    connect(options) {
      const canShare = typeof SharedWorker === "function" && options.shared !== false;
      return canShare ? connectShared(options) : connectDirect(options);
    },
  };
})(window);
