// Browser scenarios for the dashboard, in Debian's Chromium through playwright-core.
// Started by tests/system/browser.rs with the services running; exits non-zero on failure.
// Environment: API_URL, RELAY_URL, ADMIN_KEY, SHOT_DIR, SCENARIO (live | resume | docs | roles |
// outage), PASSWORD (of the users the harness registered: ada the admin, eddie the editor, vera
// the viewer).
import { chromium } from "playwright-core";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import assert from "node:assert/strict";
import { createInterface } from "node:readline";

const { API_URL, RELAY_URL, ADMIN_KEY, SHOT_DIR, SCENARIO, PASSWORD } = process.env;
const WAIT = 10_000;
// Every scenario ends by itself, whatever it waits for.
setTimeout(() => { console.error(`scenario ${SCENARIO} still running after 3 minutes`); process.exit(2); }, 180_000).unref();

const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "sse-relay-chromium-")), {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  viewport: { width: 1100, height: 760 },
});
const problems = [];
const dialogs = [];
// Refusals a scenario expects ("GET /api/session 401": the page asks who is signed in, and
// nobody is); any other failed response is a problem. Chromium also logs each failed response
// on the console: those lines are left to this check.
const expectedFailures = new Set(["GET /api/session 401"]);
function watch(page) {
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) problems.push(`console: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("response", (r) => {
    const failure = `${r.request().method()} ${new URL(r.url()).pathname} ${r.status()}`;
    if (r.status() >= 400 && !expectedFailures.has(failure)) problems.push(`${failure} (${r.url()})`);
  });
}
async function openPage({ sharedWorker = true } = {}) {
  const page = await context.newPage();
  // Without SharedWorker the client falls back to an EventSource per tab.
  if (!sharedWorker) await page.addInitScript(() => { delete window.SharedWorker; });
  watch(page);
  page.on("dialog", async (d) => { dialogs.push(d.message()); await d.dismiss(); });
  await page.goto(API_URL + "/");
  await page.waitForSelector("#status.connected", { timeout: WAIT });
  return page;
}
async function post(body) {
  const response = await fetch(API_URL + "/api/weatherforecast", {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Api-Key": ADMIN_KEY },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  assert.equal(response.status, 201, text);
  return JSON.parse(text);
}
async function signIn(page, username) {
  await page.fill("#username", username);
  await page.fill("#password", PASSWORD);
  await page.click("#sign-in");
  await page.locator("#signed-in").waitFor({ state: "visible", timeout: WAIT });
  assert.equal(await page.locator("#who").textContent(), username);
}
async function signOut(page) {
  const ended = page.waitForResponse((r) => r.url().endsWith("/api/session") && r.request().method() === "DELETE");
  await page.click("#sign-out");
  assert.equal((await ended).status(), 204, "the session ended");
  await page.locator("#sign-in-form").waitFor({ state: "visible", timeout: WAIT });
}
async function createInForm(page, date, temperature, summary) {
  await page.fill("#date", date);
  await page.fill("#temperature", String(temperature));
  await page.fill("#summary", summary);
  await page.click("#save");
}
/** The harness's next line on stdin (it answers what the scenario asked for on stdout). */
let harnessLines = null;
async function fromHarness() {
  harnessLines ??= createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  const { value } = await harnessLines.next();
  return (value ?? "").trim();
}
async function waitForConnections(expected) {
  const deadline = Date.now() + WAIT;
  let connections;
  while ((connections = await relayConnections()) !== expected && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
  }
  return connections;
}
async function relayConnections() {
  const text = await (await fetch(RELAY_URL + "/metrics")).text();
  return Number(text.match(/^sse_relay_connections (\d+)/m)[1]);
}
const row = (page, id) => page.locator(`tr[data-id="${id}"]`);
const shot = (page, name) => page.screenshot({ path: join(SHOT_DIR, `${name}.png`), fullPage: true });

try {
  if (SCENARIO === "live") {
    const page1 = await openPage();
    const page2 = await openPage();

    // 1. Created in page 1 (ada, an admin, signed in): appears in page 2 with a toast; page 1
    //    shows it without an echo.
    await signIn(page1, "ada");
    await page1.fill("#date", "2026-11-23");
    await page1.fill("#temperature", "25");
    await page1.fill("#summary", "Warm");
    const started = Date.now();
    await page1.click("#save");
    await page1.locator("#forecasts tbody tr", { hasText: "Warm" }).waitFor({ timeout: WAIT });
    console.log(`page 1 had its answer after ${Date.now() - started} ms`);
    await page2.locator("#forecasts tbody tr", { hasText: "Warm" }).waitFor({ timeout: WAIT });
    await page2.locator(".toast", { hasText: "Forecast created: 25 °C, Warm — by ada" }).waitFor({ timeout: WAIT });
    console.log(`page 2 showed the new forecast after ${Date.now() - started} ms`);
    await page1.locator("#forecasts tbody tr", { hasText: "Warm" }).waitFor({ timeout: WAIT });
    assert.equal(await page1.locator(".toast", { hasText: "Forecast created" }).count(), 0, "no echo toast in page 1");
    await shot(page2, "two-pages-page2");

    // 2. A plain HTTP POST appears in an open page.
    const postedAt = Date.now();
    const posted = await post({ date: "2026-11-24", temperatureC: 12, summary: "Breezy" });
    await row(page2, posted.id).waitFor({ timeout: WAIT });
    console.log(`a POST to the API showed in page 2 after ${Date.now() - postedAt} ms`);
    await page1.locator(".toast", { hasText: "Forecast created: 12 °C, Breezy" }).waitFor({ timeout: WAIT });

    // 4. Hostile text is shown literally, nothing runs, no admin event reaches an anonymous page.
    const hostile = '<img src=x onerror=alert(1)>\n\nevent: admin.apikey.created\ndata: x';
    const created = await post({ date: "2026-11-25", temperatureC: 1, summary: hostile });
    await row(page2, created.id).waitFor({ timeout: WAIT });
    const cell = row(page2, created.id).locator("td").nth(3);
    assert.equal(await cell.textContent(), hostile, "summary shown literally");
    assert.equal(await page2.locator("#forecasts img").count(), 0, "no element was injected");
    assert.equal(await page2.locator("#admin-card").isHidden(), true, "anonymous page has no admin feed");
    assert.equal(await page2.locator("#editor-card").isHidden(), true, "anonymous page has no form");
    assert.equal(await row(page2, created.id).getByRole("button").count(), 0, "nor edit buttons");
    await shot(page2, "hostile-summary");

    // Edit and delete in page 1 reach page 2.
    await row(page1, posted.id).getByRole("button", { name: /^Edit/ }).click();
    await page1.fill("#temperature", "14");
    await page1.click("#save");
    await page2.locator(".toast", { hasText: "Forecast updated: 14 °C, Breezy" }).waitFor({ timeout: WAIT });
    await row(page1, created.id).getByRole("button", { name: /^Delete/ }).click();
    await row(page2, created.id).waitFor({ state: "detached", timeout: WAIT });
    await page2.locator(".toast", { hasText: "Forecast deleted" }).waitFor({ timeout: WAIT });
    assert.equal(await page1.locator(".toast", { hasText: /updated: 14|deleted/ }).count(), 0, "no echo in page 1");

    // The admin feed (page 1 is signed in as an admin) shows admin events.
    await page1.locator("#admin-card").waitFor({ state: "visible", timeout: WAIT });
    const keyResponse = await fetch(API_URL + "/api/admin/apikeys", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Api-Key": ADMIN_KEY },
      body: JSON.stringify({ name: "watched key", scopes: ["forecasts:write"] }),
    });
    assert.equal(keyResponse.status, 201);
    await page1.locator("#admin-feed li", { hasText: "admin.apikey.created" }).waitFor({ timeout: WAIT });
    assert.equal(await page2.locator("#admin-feed li").count(), 0);

    // A tab without SharedWorker has its own connection and hands its id to the API: its own
    // change is not echoed to it by the relay, and the others still get it.
    // (It shares the browser's session: signed in as ada too.)
    const solo = await openPage({ sharedWorker: false });
    await solo.locator("#editor-card").waitFor({ state: "visible", timeout: WAIT });
    await solo.fill("#date", "2026-11-27");
    await solo.fill("#temperature", "-3");
    await solo.fill("#summary", "Frost");
    await solo.click("#save");
    await solo.locator("#forecasts tbody tr", { hasText: "Frost" }).waitFor({ timeout: WAIT });
    await page2.locator(".toast", { hasText: "Forecast created: -3 °C, Frost" }).waitFor({ timeout: WAIT });
    assert.equal(await solo.locator(".toast", { hasText: "Frost" }).count(), 0, "no echo in the solo tab");
    await solo.close();

    // Tabs share one relay connection. Signed out, page 1 drops its admin feed's own stream.
    await signOut(page1);
    const more = [];
    for (let i = 0; i < 6; i++) more.push(await openPage());
    const tabs = 2 + more.length;
    const connections = await waitForConnections(1);
    console.log(`${tabs} tabs, relay connections: ${connections}`);
    assert.equal(connections, 1, "one shared stream for all tabs");
    const last = more[more.length - 1];
    const late = await post({ date: "2026-11-26", temperatureC: 30, summary: "Hot" });
    await row(last, late.id).waitFor({ timeout: WAIT });
    await shot(page1, "dashboard");
  } else if (SCENARIO === "resume") {
    // 3. The relay restarts while the page is open; what is created meanwhile arrives after the
    //    page reconnects (Last-Event-ID), each once. The test harness restarts the relay when it
    //    reads "restart-relay" and answers on stdin with the ids it created meanwhile.
    const page = await openPage();
    const before = await post({ date: "2026-12-01", temperatureC: 5, summary: "Before" });
    await row(page, before.id).waitFor({ timeout: WAIT });
    console.log("restart-relay");
    const ids = await new Promise((resolve) => {
      process.stdin.once("data", (chunk) => { process.stdin.pause(); resolve(JSON.parse(chunk.toString())); });
    });
    await page.waitForSelector("#status.reconnecting, #status.connected", { timeout: WAIT });
    for (const id of ids) await row(page, id).waitFor({ timeout: 30_000 });
    // Resumed from the log, or (when the log no longer reaches back) told to resynchronise.
    const expected = process.env.EXPECT_RESET === "1" ? "#status.resynced" : "#status.connected";
    await page.waitForSelector(expected, { timeout: WAIT });
    // Replayed events each toast once; after a reset the list is simply refetched.
    const toasts = process.env.EXPECT_RESET === "1" ? 0 : 1;
    for (const id of ids) {
      const summary = await row(page, id).locator("td").nth(3).textContent();
      assert.equal(await page.locator(".toast", { hasText: summary }).count(), toasts, `toasts for ${summary}`);
    }
    assert.equal(await page.locator("#forecasts tbody tr").count(), ids.length + 1, "every forecast once");
    await shot(page, process.env.EXPECT_RESET === "1" ? "after-reset" : "after-relay-restart");
  } else if (SCENARIO === "roles") {
    // What each role sees and may do, the admin feed live and resumed across ticket renewals
    // (tickets live 2 s here), and sign-out.
    const page = await openPage();
    const existing = await post({ date: "2026-12-02", temperatureC: 4, summary: "Existing" });
    await row(page, existing.id).waitFor({ timeout: WAIT });
    assert.equal(await page.locator("#sign-in-form").isVisible(), true, "signed out at first");

    // A viewer reads; no form, no buttons, and the API refuses a write from this page anyway.
    await signIn(page, "vera");
    assert.equal(await page.locator("#role").textContent(), "viewer");
    for (const card of ["#editor-card", "#users-card", "#admin-card"]) {
      assert.equal(await page.locator(card).isHidden(), true, `a viewer has no ${card}`);
    }
    assert.equal(await row(page, existing.id).getByRole("button").count(), 0, "a viewer gets no edit buttons");
    expectedFailures.add("POST /api/weatherforecast 403");
    const refused = await page.evaluate(async () => (await fetch("/api/weatherforecast", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ date: "2026-12-03", temperatureC: 1 }) })).status);
    assert.equal(refused, 403, "a viewer's session cannot write");
    await signOut(page);
    await page.reload();
    await page.locator("#sign-in-form").waitFor({ state: "visible", timeout: WAIT });

    // An editor creates, edits and deletes.
    await signIn(page, "eddie");
    assert.equal(await page.locator("#users-card").isHidden(), true, "an editor does not manage users");
    await createInForm(page, "2026-12-05", 9, "By eddie");
    const mine = page.locator("#forecasts tbody tr", { hasText: "By eddie" });
    await mine.waitFor({ timeout: WAIT });
    await mine.getByRole("button", { name: /^Edit/ }).click();
    await page.fill("#temperature", "11");
    await page.click("#save");
    await page.locator("#forecasts tbody tr", { hasText: "By eddie" }).locator("td", { hasText: "11" }).first().waitFor({ timeout: WAIT });
    await page.locator("#forecasts tbody tr", { hasText: "By eddie" }).getByRole("button", { name: /^Delete/ }).click();
    await mine.waitFor({ state: "detached", timeout: WAIT });
    await signOut(page);

    // An admin manages users and sees another user's sign-in live.
    await signIn(page, "ada");
    await page.locator("#admin-card").waitFor({ state: "visible", timeout: WAIT });
    await page.locator("#users tbody tr", { hasText: "vera" }).waitFor({ timeout: WAIT });
    const elsewhere = await fetch(API_URL + "/api/session", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username: "vera", password: PASSWORD }),
    });
    assert.equal(elsewhere.status, 200);
    await page.locator("#admin-feed li", { hasText: "admin.user.loggedin vera" }).waitFor({ timeout: WAIT });
    await page.locator('#users tr[data-username="vera"] select').selectOption("editor");
    await page.locator("#admin-feed li", { hasText: "admin.user.rolechanged vera — by ada" }).waitFor({ timeout: WAIT });

    // Admin events published across several ticket renewals each show once.
    const names = [];
    for (let i = 0; i < 6; i++) {
      const name = `renewal-${i}`;
      names.push(name);
      const response = await fetch(API_URL + "/api/admin/apikeys", {
        method: "POST", headers: { "Content-Type": "application/json", "X-Api-Key": ADMIN_KEY },
        body: JSON.stringify({ name, scopes: ["forecasts:write"] }),
      });
      assert.equal(response.status, 201);
      await new Promise((r) => setTimeout(r, 700));
    }
    for (const name of names) {
      const item = page.locator("#admin-feed li", { hasText: `admin.apikey.created ${name} ` });
      await item.waitFor({ timeout: WAIT });
      assert.equal(await item.count(), 1, `${name} once`);
    }
    await shot(page, "admin");

    // Signing out ends the session: a reload is signed out.
    await signOut(page);
    await page.reload();
    await page.locator("#sign-in-form").waitFor({ state: "visible", timeout: WAIT });
    assert.equal(await page.locator("#admin-card").isHidden(), true);
  } else if (SCENARIO === "outage") {
    // Redis goes down: the page that writes shows its change at once; another page gets it,
    // once, after Redis is back.
    const writer = await openPage({ sharedWorker: false });
    const other = await openPage({ sharedWorker: false });
    await signIn(writer, "eddie");
    console.log("stop-redis");
    assert.equal(await fromHarness(), "redis-stopped");
    await createInForm(writer, "2026-12-06", 2, "While Redis was down");
    await writer.locator("#forecasts tbody tr", { hasText: "While Redis was down" }).waitFor({ timeout: WAIT });
    assert.equal(await other.locator("#forecasts tbody tr", { hasText: "While Redis was down" }).count(), 0,
      "not delivered while Redis is down");
    console.log("start-redis");
    assert.equal(await fromHarness(), "redis-started");
    await other.locator("#forecasts tbody tr", { hasText: "While Redis was down" }).waitFor({ timeout: 30_000 });
    await other.waitForSelector("#status.connected, #status.resynced", { timeout: WAIT });
    assert.equal(await other.locator("#forecasts tbody tr", { hasText: "While Redis was down" }).count(), 1, "once");
    assert.ok(await other.locator(".toast", { hasText: "While Redis was down" }).count() <= 1, "one toast at most");
    assert.equal(await writer.locator("#forecasts tbody tr", { hasText: "While Redis was down" }).count(), 1);
    assert.equal(await writer.locator(".toast", { hasText: "While Redis was down" }).count(), 0, "no echo");
    await shot(other, "after-redis-outage");
  } else if (SCENARIO === "docs") {
    // Swagger UI at /docs: everything from this origin, and a request tried with a key.
    const page = await context.newPage();
    const outside = [];
    page.on("request", (r) => { if (!r.url().startsWith(API_URL + "/")) outside.push(r.url()); });
    watch(page);
    await page.goto(API_URL + "/docs");
    const create = page.locator("#operations-forecasts-createForecast");
    await create.waitFor({ timeout: WAIT });
    await page.locator("#operations-forecasts-listForecasts").waitFor({ timeout: WAIT });

    await page.click(".scheme-container button.authorize");
    await page.fill(".auth-container input", ADMIN_KEY);
    await page.click(".auth-container .auth-btn-wrapper button.authorize");
    await page.click(".auth-container .auth-btn-wrapper button.btn-done");

    await create.locator(".opblock-summary").click();
    await create.locator("button.try-out__btn").click();
    const body = JSON.stringify({ date: "2026-12-07", temperatureC: 7, summary: "Tried in Swagger UI" });
    await create.locator("textarea.body-param__text").fill(body);
    await create.locator("button.execute").click();
    const status = create.locator(".live-responses-table .response .response-col_status").first();
    await status.waitFor({ timeout: WAIT });
    assert.equal((await status.textContent()).trim(), "201", await create.locator(".live-responses-table").textContent());
    await shot(page, "swagger-ui");

    // Signed in on the dashboard, the session is enough: no key given to Swagger UI.
    const dashboard = await openPage();
    await signIn(dashboard, "eddie");
    const docs = await context.newPage();
    watch(docs);
    docs.on("request", (r) => { if (!r.url().startsWith(API_URL + "/")) outside.push(r.url()); });
    await docs.goto(API_URL + "/docs");
    const again = docs.locator("#operations-forecasts-createForecast");
    await again.waitFor({ timeout: WAIT });
    await again.locator(".opblock-summary").click();
    await again.locator("button.try-out__btn").click();
    await again.locator("textarea.body-param__text").fill(JSON.stringify({ date: "2026-12-08", temperatureC: 8, summary: "Tried with the session" }));
    await again.locator("button.execute").click();
    const sessionStatus = again.locator(".live-responses-table .response .response-col_status").first();
    await sessionStatus.waitFor({ timeout: WAIT });
    assert.equal((await sessionStatus.textContent()).trim(), "201", await again.locator(".live-responses-table").textContent());

    const list = await (await fetch(API_URL + "/api/weatherforecast")).json();
    for (const summary of ["Tried in Swagger UI", "Tried with the session"]) {
      const forecast = list.items.find((f) => f.summary === summary);
      assert.ok(forecast, `the forecast "${summary}" created from /docs is in the list`);
    }
    assert.deepEqual(outside, [], "nothing requested outside the API's origin");
  } else {
    throw new Error(`unknown scenario ${SCENARIO}`);
  }
  assert.deepEqual(dialogs, [], "no dialog opened (nothing executed)");
  assert.deepEqual(problems, [], "no console errors");
  console.log("ok");
} catch (error) {
  console.error(error.stack || String(error));
  for (const p of context.pages()) await shot(p, `failure-${context.pages().indexOf(p)}`).catch(() => {});
  process.exitCode = 1;
} finally {
  await context.close();
}
