/*
 * The SharedWorker behind sse-relay.js: one EventSource per stream URL, shared by every tab
 * (port) that asked for it, closed when the last tab leaves.
 */
"use strict";
const streams = new Map(); // url -> { source, ports: Set, events: Set, status, connected }

function broadcast(stream, message) {
  for (const port of stream.ports) port.postMessage(message);
}

function listen(stream, type) {
  if (stream.events.has(type)) return;
  stream.events.add(type);
  stream.source.addEventListener(type, (e) => {
    const message = { kind: "event", type, data: e.data, id: e.lastEventId || null };
    if (type === "relay.connected") stream.connected = message;
    broadcast(stream, message);
  });
}

function open(url) {
  const source = new EventSource(url);
  const stream = { source, ports: new Set(), events: new Set(), status: "connecting", connected: null };
  const setStatus = (status) => { stream.status = status; broadcast(stream, { kind: "status", status }); };
  source.onopen = () => setStatus("connected");
  source.onerror = () => setStatus(source.readyState === EventSource.CLOSED ? "closed" : "reconnecting");
  streams.set(url, stream);
  return stream;
}

self.onconnect = (connection) => {
  const port = connection.ports[0];
  let joined = null;
  port.onmessage = (message) => {
    const m = message.data;
    if (m.kind === "subscribe" && !joined) {
      joined = streams.get(m.url) || open(m.url);
      joined.ports.add(port);
      for (const type of m.events) listen(joined, type);
      port.postMessage({ kind: "status", status: joined.status });
      // A late tab still learns the connection id.
      if (joined.connected) port.postMessage(joined.connected);
    } else if (m.kind === "unsubscribe" && joined) {
      joined.ports.delete(port);
      if (joined.ports.size === 0) {
        joined.source.close();
        for (const [url, stream] of streams) if (stream === joined) streams.delete(url);
      }
      joined = null;
    }
  };
  port.start();
};
