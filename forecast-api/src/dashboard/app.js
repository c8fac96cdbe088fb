/* The forecast dashboard: the list from the API, kept live through sse-relay. People sign in
 * (a session cookie, HttpOnly: this script never sees it); what the page offers follows their
 * role: a viewer reads, an editor also writes, an admin also manages users and follows the
 * admin feed. Everything that comes from the API or an event is inserted as text
 * (textContent), never as HTML. */
"use strict";
(async function () {
  const $ = (id) => document.getElementById(id);
  const rows = new Map(); // forecast id -> forecast
  const ownWrites = new Set(); // "<id>@<updatedAt>" or "deleted:<id>": this tab's changes
  const inFlight = new Set(); // this tab's writes not answered yet (their event may come first)
  let me = null; // {user, expiresAt} while signed in
  let connectionId = null;
  let stream = null;
  let adminStream = null;
  let adminLastId = null; // each new admin ticket resumes the feed from here
  let adminRetry = null;
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

  /** Who caused an event, as a person reads it: "alice", or "an API key". */
  function actorName(actor) {
    return actor.startsWith("user:") ? actor.slice(5) : "an API key";
  }

  const by = (payload) => (typeof payload.actor === "string" ? ` — by ${actorName(payload.actor)}` : "");
  const role = () => (me ? me.user.role : null);
  const canWrite = () => role() === "editor" || role() === "admin";

  /** Shows what the signed-in user's role allows, and (re)starts what depends on it. */
  function applySession() {
    $("sign-in-form").hidden = !!me;
    $("signed-in").hidden = !me;
    if (me) {
      $("sign-in-error").textContent = "";
      $("who").textContent = me.user.username;
      $("role").textContent = me.user.role;
      $("role-hint").textContent = canWrite()
        ? "You can create, edit and delete forecasts."
        : "You can read forecasts; an admin can let you edit them.";
    }
    $("editor-card").hidden = !canWrite();
    $("users-card").hidden = role() !== "admin";
    if (!canWrite()) resetForm();
    render();
    connectAdmin();
    if (role() === "admin") loadUsers();
  }

  async function loadSession() {
    const response = await fetch("/api/session");
    me = response.ok ? await response.json() : null;
    applySession();
  }

  /** A request was refused because the session ended (signed out elsewhere, revoked, expired). */
  function sessionEnded() {
    me = null;
    applySession();
    $("sign-in-error").textContent = "Your session has ended: sign in again.";
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
    tr.append(actions);
    if (!canWrite()) return tr;
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
    // The session cookie goes by itself (same origin), and the API checks this page's Origin.
    const h = {};
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
    const id = $("edit-id").value;
    const body = { date: $("date").value, temperatureC: Number($("temperature").value), summary: $("summary").value || null };
    const request = fetch(id ? `/api/weatherforecast/${encodeURIComponent(id)}` : "/api/weatherforecast", {
      method: id ? "PUT" : "POST",
      headers: headers(true),
      body: JSON.stringify(body),
    });
    const response = await track(request);
    if (response.status === 401) { sessionEnded(); return; }
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
    ownWrites.add(`deleted:${id}`);
    const response = await track(fetch(`/api/weatherforecast/${encodeURIComponent(id)}`, { method: "DELETE", headers: headers(false) }));
    if (!response.ok && response.status !== 404) {
      ownWrites.delete(`deleted:${id}`);
      if (response.status === 401) { sessionEnded(); return; }
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
      if (!ownWrites.delete(`deleted:${payload.id}`)) toast(`Forecast deleted${known ? ": " + describe(known) : ""}${by(payload)}`);
      return;
    }
    const { actor, ...forecast } = payload;
    rows.set(forecast.id, forecast);
    render();
    flash(forecast.id);
    const verb = type === "weatherforecast.created" ? "created" : "updated";
    if (!ownWrites.delete(`${forecast.id}@${forecast.updatedAt}`)) toast(`Forecast ${verb}: ${describe(forecast)}${by(payload)}`);
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

  /** The admin feed (admins only), through a one-time ticket; each new ticket resumes from the
   *  last event shown, so no admin event is missed across a reconnect. */
  async function connectAdmin() {
    clearTimeout(adminRetry);
    if (adminStream) adminStream.close();
    adminStream = null;
    $("admin-card").hidden = role() !== "admin";
    if (role() !== "admin") return;
    const response = await fetch("/api/relay-ticket", { method: "POST" });
    if (response.status === 401) { sessionEnded(); return; }
    if (!response.ok) { adminRetry = setTimeout(connectAdmin, 3000); return; } // relay tokens off?
    const ticket = await response.json();
    if (role() !== "admin") return; // signed out meanwhile
    const resume = adminLastId ? `&lastEventId=${encodeURIComponent(adminLastId)}` : "";
    adminStream = SseRelay.connect({
      shared: false,
      url: `${config.relayUrl}/events?channel=admin.*&access_token=${encodeURIComponent(ticket.token)}${resume}`,
      events: ["admin.apikey.created", "admin.apikey.revoked", "admin.user.registered", "admin.user.loggedin",
               "admin.user.loggedout", "admin.session.created", "admin.user.rolechanged", "admin.user.claimchanged"],
      onEvent: (type, data, id) => {
        // A ticket opens one stream: fetch a new one when it ends or the token expires.
        if (type === "relay.expired") { connectAdmin(); return; }
        if (!type.startsWith("admin.")) return;
        if (id) adminLastId = id;
        showAdminEvent(type, data);
      },
      onStatus: (status) => {
        if (status === "reconnecting" || status === "closed") {
          clearTimeout(adminRetry);
          adminRetry = setTimeout(connectAdmin, 3000);
        }
      },
    });
  }

  function showAdminEvent(type, data) {
    let payload = {};
    try { payload = JSON.parse(data); } catch (_) {}
    const subject = payload.username || payload.name || payload.id || "";
    const item = document.createElement("li");
    item.dataset.type = type;
    item.textContent = `${new Date().toLocaleTimeString()} ${type} ${subject}${by(payload)}`;
    $("admin-feed").prepend(item);
    if (type.startsWith("admin.user.")) loadUsers();
  }

  async function loadUsers() {
    if (role() !== "admin") return;
    const response = await fetch("/api/users");
    if (!response.ok) return;
    const users = await response.json();
    $("users").tBodies[0].replaceChildren(...users.map(renderUser));
  }

  function renderUser(user) {
    const tr = document.createElement("tr");
    tr.dataset.username = user.username;
    const name = document.createElement("td");
    name.textContent = user.username;
    const roleCell = document.createElement("td");
    const select = document.createElement("select");
    select.setAttribute("aria-label", `Role of ${user.username}`);
    for (const option of ["viewer", "editor", "admin"]) select.append(new Option(option, option, false, option === user.role));
    select.onchange = () => adminWrite(`/api/users/${encodeURIComponent(user.id)}/role`, "PUT", { role: select.value });
    roleCell.append(select);
    const claims = document.createElement("td");
    claims.textContent = Object.entries(user.claims).map(([k, v]) => `${k}=${v}`).join(", ");
    const actions = document.createElement("td");
    actions.className = "row-actions";
    const end = document.createElement("button");
    end.type = "button";
    end.className = "secondary";
    end.textContent = "End sessions";
    end.setAttribute("aria-label", `End the sessions of ${user.username}`);
    end.onclick = () => adminWrite(`/api/users/${encodeURIComponent(user.id)}/sessions`, "DELETE");
    actions.append(end);
    tr.append(name, roleCell, claims, actions);
    return tr;
  }

  async function adminWrite(path, method, body) {
    $("users-error").textContent = "";
    const response = await fetch(path, { method, headers: headers(body !== undefined), body: body === undefined ? undefined : JSON.stringify(body) });
    if (response.status === 401) { sessionEnded(); return false; }
    if (!response.ok) { $("users-error").textContent = await problem(response); return false; }
    await loadUsers();
    return true;
  }

  $("sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("sign-in-error").textContent = "";
    const response = await fetch("/api/session", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username: $("username").value.trim(), password: $("password").value }),
    });
    $("password").value = "";
    if (!response.ok) { $("sign-in-error").textContent = await problem(response); return; }
    me = await response.json();
    applySession();
  });
  $("sign-out").addEventListener("click", async () => {
    // The page lets go first: the admin.user.loggedout that the sign-out publishes must not
    // reach a page that still acts signed in (and asks for what only a session may read).
    me = null;
    adminLastId = null;
    $("admin-feed").replaceChildren();
    applySession();
    await fetch("/api/session", { method: "DELETE" });
  });
  $("new-user-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { username: $("new-username").value.trim(), password: $("new-password").value, role: $("new-role").value };
    if (await adminWrite("/api/users", "POST", body)) $("new-user-form").reset();
  });
  $("forecast-form").addEventListener("submit", save);
  $("cancel-edit").addEventListener("click", resetForm);

  await loadList();
  connect();
  await loadSession();
})();
