/* The forecast dashboard: the list from the API, kept live through sse-relay. Everything that
 * comes from the API or an event is inserted as text (textContent), never as HTML. */
"use strict";
(async function () {
  const $ = (id) => document.getElementById(id);
  const rows = new Map(); // forecast id -> forecast
  const ownWrites = new Set(); // "<id>@<updatedAt>" or "deleted:<id>": this tab's changes
  const inFlight = new Set(); // this tab's writes not answered yet (their event may come first)
  let apiKey = sessionStorage.getItem("apiKey") || "";
  let connectionId = null;
  let stream = null;
  let adminStream = null;
  let resynced = false;

  const config = await fetch("/config.json").then((r) => r.json());

  function setStatus(status) {
    const badge = $("status");
    const label = resynced && status === "connected" ? "resynced" : status;
    badge.textContent = label;
    badge.className = "badge " + label;
  }

  function toast(text) {
    const element = document.createElement("div");
    element.className = "toast";
    element.textContent = text;
    $("toasts").append(element);
    setTimeout(() => element.remove(), 4000);
  }

  function describe(f) {
    return `${f.temperatureC} °C` + (f.summary ? `, ${f.summary}` : "");
  }

  function render() {
    const body = $("forecasts").tBodies[0];
    const sorted = [...rows.values()].sort((a, b) => (a.date + a.id).localeCompare(b.date + b.id));
    body.replaceChildren(...sorted.map(renderRow));
    $("empty").hidden = sorted.length > 0;
  }

  function renderRow(f) {
    const tr = document.createElement("tr");
    tr.dataset.id = f.id;
    for (const [text, numeric] of [[f.date, false], [String(f.temperatureC), true], [String(f.temperatureF), true], [f.summary || "", false]]) {
      const td = document.createElement("td");
      td.textContent = text;
      if (numeric) td.className = "num";
      tr.append(td);
    }
    const actions = document.createElement("td");
    actions.className = "row-actions";
    const edit = document.createElement("button");
    edit.type = "button";
    edit.className = "secondary";
    edit.textContent = "Edit";
    edit.setAttribute("aria-label", `Edit forecast for ${f.date}`);
    edit.onclick = () => startEdit(f.id);
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "danger";
    remove.textContent = "Delete";
    remove.setAttribute("aria-label", `Delete forecast for ${f.date}`);
    remove.onclick = () => deleteForecast(f.id);
    actions.append(edit, remove);
    tr.append(actions);
    return tr;
  }

  function flash(id) {
    const tr = document.querySelector(`tr[data-id="${CSS.escape(id)}"]`);
    if (tr) tr.classList.add("flash");
  }

  async function loadList() {
    const page = await fetch("/api/weatherforecast?pageSize=100").then((r) => r.json());
    rows.clear();
    for (const f of page.items) rows.set(f.id, f);
    render();
  }

  function headers(json) {
    const h = { "X-Api-Key": apiKey };
    if (json) h["Content-Type"] = "application/json";
    // A shared connection serves every tab: its id would hide the event from the other tabs
    // too, so only a per-tab connection is handed to the API.
    if (stream && !stream.shared && connectionId) h["X-Relay-Connection-Id"] = connectionId;
    return h;
  }

  async function problem(response) {
    try { return (await response.json()).detail || response.statusText; } catch (_) { return response.statusText; }
  }

  async function save(event) {
    event.preventDefault();
    $("form-error").textContent = "";
    if (!apiKey) { $("form-error").textContent = "Enter an API key first."; $("api-key").focus(); return; }
    const id = $("edit-id").value;
    const body = { date: $("date").value, temperatureC: Number($("temperature").value), summary: $("summary").value || null };
    const request = fetch(id ? `/api/weatherforecast/${encodeURIComponent(id)}` : "/api/weatherforecast", {
      method: id ? "PUT" : "POST",
      headers: headers(true),
      body: JSON.stringify(body),
    });
    const response = await track(request);
    if (!response.ok) { $("form-error").textContent = await problem(response); return; }
    const saved = await response.json();
    rows.set(saved.id, saved);
    render();
    flash(saved.id);
    resetForm();
  }

  function startEdit(id) {
    const f = rows.get(id);
    $("edit-id").value = id;
    $("date").value = f.date;
    $("temperature").value = f.temperatureC;
    $("summary").value = f.summary || "";
    $("form-title").textContent = "Edit forecast";
    $("save").textContent = "Save";
    $("cancel-edit").hidden = false;
    $("date").focus();
  }

  function resetForm() {
    $("forecast-form").reset();
    $("edit-id").value = "";
    $("form-title").textContent = "New forecast";
    $("save").textContent = "Create";
    $("cancel-edit").hidden = true;
  }

  async function deleteForecast(id) {
    if (!apiKey) { $("form-error").textContent = "Enter an API key first."; $("api-key").focus(); return; }
    ownWrites.add(`deleted:${id}`);
    const response = await track(fetch(`/api/weatherforecast/${encodeURIComponent(id)}`, { method: "DELETE", headers: headers(false) }));
    if (!response.ok && response.status !== 404) {
      ownWrites.delete(`deleted:${id}`);
      $("form-error").textContent = await problem(response);
      return;
    }
    rows.delete(id);
    render();
  }

  /** Runs a write, remembering it until its answer (and so its own-change marker) is in. */
  async function track(request) {
    const done = request.then(async (response) => {
      if (response.ok && response.status !== 204) {
        const saved = await response.clone().json();
        ownWrites.add(`${saved.id}@${saved.updatedAt}`);
      }
      return response;
    });
    inFlight.add(done);
    try { return await done; } finally { inFlight.delete(done); }
  }

  async function onForecastEvent(type, data) {
    // The event of this tab's own write may overtake the write's answer: wait for the answer
    // before deciding whether this change is ours (no toast) or someone else's.
    if (inFlight.size > 0) await Promise.allSettled([...inFlight]);
    let payload;
    try { payload = JSON.parse(data); } catch (_) { return; }
    if (type === "weatherforecast.deleted") {
      const known = rows.get(payload.id);
      rows.delete(payload.id);
      render();
      if (!ownWrites.delete(`deleted:${payload.id}`)) toast(`Forecast deleted${known ? ": " + describe(known) : ""}`);
      return;
    }
    rows.set(payload.id, payload);
    render();
    flash(payload.id);
    const verb = type === "weatherforecast.created" ? "created" : "updated";
    if (!ownWrites.delete(`${payload.id}@${payload.updatedAt}`)) toast(`Forecast ${verb}: ${describe(payload)}`);
  }

  function connect() {
    stream = SseRelay.connect({
      url: `${config.relayUrl}/events?channel=weatherforecast.*`,
      events: ["weatherforecast.created", "weatherforecast.updated", "weatherforecast.deleted"],
      onStatus: setStatus,
      onConnected: (id) => { connectionId = id; },
      onEvent: async (type, data) => {
        if (type === "relay.reset") {
          await loadList();
          resynced = true;
          setStatus("connected");
          return;
        }
        if (type.startsWith("weatherforecast.")) onForecastEvent(type, data);
      },
    });
  }

  async function connectAdmin() {
    if (adminStream) adminStream.close();
    adminStream = null;
    $("admin-card").hidden = true;
    if (!apiKey) return;
    const response = await fetch("/api/relay-ticket", { method: "POST", headers: { "X-Api-Key": apiKey } });
    if (!response.ok) return; // not an admin key (or relay tokens disabled)
    const ticket = await response.json();
    $("admin-card").hidden = false;
    adminStream = SseRelay.connect({
      shared: false,
      url: `${config.relayUrl}/events?channel=admin.*&access_token=${encodeURIComponent(ticket.token)}`,
      events: ["admin.apikey.created", "admin.apikey.revoked", "admin.user.registered", "admin.user.loggedin",
               "admin.user.loggedout", "admin.session.created", "admin.user.rolechanged", "admin.user.claimchanged"],
      onEvent: (type, data) => {
        // A ticket opens one stream: fetch a new one when it ends or the token expires.
        if (type === "relay.expired") { connectAdmin(); return; }
        if (!type.startsWith("admin.")) return;
        const item = document.createElement("li");
        item.textContent = `${new Date().toLocaleTimeString()} ${type} ${data}`;
        $("admin-feed").prepend(item);
      },
      onStatus: (status) => { if (status === "reconnecting" || status === "closed") setTimeout(connectAdmin, 3000); },
    });
  }

  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    apiKey = $("api-key").value.trim();
    sessionStorage.setItem("apiKey", apiKey);
    $("key-state").textContent = apiKey ? "Key set for this tab." : "";
    connectAdmin();
  });
  $("forecast-form").addEventListener("submit", save);
  $("cancel-edit").addEventListener("click", resetForm);
  if (apiKey) { $("api-key").value = apiKey; $("key-state").textContent = "Key set for this tab."; }

  await loadList();
  connect();
  connectAdmin();
})();
