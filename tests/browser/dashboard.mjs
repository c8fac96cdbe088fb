// Browser scenarios for the dashboard, in Debian's Chromium through playwright-core.
// Started by tests/system/browser.rs with the services running; exits non-zero on failure.
// Environment: API_URL, RELAY_URL, ADMIN_KEY, SHOT_DIR, SCENARIO (live | resume | docs).
import { chromium } from "playwright-core";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import assert from "node:assert/strict";

const { API_URL, RELAY_URL, ADMIN_KEY, SHOT_DIR, SCENARIO } = process.env;
const WAIT = 10_000;

const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "sse-relay-chromium-")), {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  viewport: { width: 1100, height: 760 },
});
const problems = [];
const dialogs = [];
async function openPage({ sharedWorker = true } = {}) {
  const page = await context.newPage();
  // Without SharedWorker the client falls back to an EventSource per tab.
  if (!sharedWorker) await page.addInitScript(() => { delete window.SharedWorker; });
  page.on("console", (m) => { if (m.type() === "error") problems.push(`console: ${m.text()}`); });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
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

    // 1. Created in page 1: appears in page 2 with a toast; page 1 shows it without an echo.
    await page1.fill("#api-key", ADMIN_KEY);
    await page1.click("#key-form button");
    await page1.fill("#date", "2026-11-23");
    await page1.fill("#temperature", "25");
    await page1.fill("#summary", "Warm");
    const started = Date.now();
    await page1.click("#save");
    await page1.locator("#forecasts tbody tr", { hasText: "Warm" }).waitFor({ timeout: WAIT });
    console.log(`page 1 had its answer after ${Date.now() - started} ms`);
    await page2.locator("#forecasts tbody tr", { hasText: "Warm" }).waitFor({ timeout: WAIT });
    await page2.locator(".toast", { hasText: "Forecast created: 25 °C, Warm" }).waitFor({ timeout: WAIT });
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

    // The admin feed (page 1 has an admin key) shows admin events.
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
    const solo = await openPage({ sharedWorker: false });
    await solo.fill("#api-key", ADMIN_KEY);
    await solo.click("#key-form button");
    await solo.fill("#date", "2026-11-27");
    await solo.fill("#temperature", "-3");
    await solo.fill("#summary", "Frost");
    await solo.click("#save");
    await solo.locator("#forecasts tbody tr", { hasText: "Frost" }).waitFor({ timeout: WAIT });
    await page2.locator(".toast", { hasText: "Forecast created: -3 °C, Frost" }).waitFor({ timeout: WAIT });
    assert.equal(await solo.locator(".toast", { hasText: "Frost" }).count(), 0, "no echo in the solo tab");
    await solo.close();

    // Tabs share one relay connection (page 1 also holds its admin feed's own stream).
    await page1.locator("#admin-card").waitFor({ state: "visible", timeout: WAIT });
    const more = [];
    for (let i = 0; i < 6; i++) more.push(await openPage());
    const tabs = 2 + more.length;
    const connections = await relayConnections();
    console.log(`${tabs} tabs, relay connections: ${connections}`);
    assert.equal(connections, 2, "one shared stream for all tabs, plus page 1's admin stream");
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
  } else if (SCENARIO === "docs") {
    // Swagger UI at /docs: everything from this origin, and a request tried with a key.
    const page = await context.newPage();
    const outside = [];
    page.on("request", (r) => { if (!r.url().startsWith(API_URL + "/")) outside.push(r.url()); });
    page.on("console", (m) => { if (m.type() === "error") problems.push(`console: ${m.text()}`); });
    page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
    page.on("response", (r) => { if (r.status() >= 400) problems.push(`${r.status()} for ${r.url()}`); });
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

    const list = await (await fetch(API_URL + "/api/weatherforecast")).json();
    assert.ok(JSON.stringify(list).includes("Tried in Swagger UI"), "the forecast created from /docs is in the list");
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
