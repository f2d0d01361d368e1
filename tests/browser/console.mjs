// Drives the Sluice console in headless Chromium and reports what the page showed, one JSON
// line per step on stdout. tests/it/console.rs starts `sluice all`, runs this script, answers
// its prompts on stdin and asserts on the reports against the query API's own answers.
//
// Environment:
//   SLUICE_CONSOLE_URL  the console, e.g. http://127.0.0.1:8081/console/
//   SLUICE_CHROMIUM     the browser (default /usr/bin/chromium)
//   SLUICE_SQL          the query to run in the SQL console
//   SLUICE_KEYS_TO_TRY  auth on: keys to type into the key prompt, in order, separated by
//                       spaces (all but the last are expected to be refused)
//   SLUICE_SCREENSHOT   where to save a full-page screenshot at the end (optional)
//
// Steps: "board" (the charts have data, then again a few seconds later), then it waits for a
// line "sql" on stdin (the test stops the load and lets replication settle), then "sql" (the
// table, the state and the exported CSV), "bad-sql" (an invalid query's error), "done".

import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const url = process.env.SLUICE_CONSOLE_URL;
const sql = process.env.SLUICE_SQL;
const keysToTry = (process.env.SLUICE_KEYS_TO_TRY || "").split(" ").filter(Boolean);
const screenshot = process.env.SLUICE_SCREENSHOT;
if (!url || !sql) throw new Error("SLUICE_CONSOLE_URL and SLUICE_SQL are required");

const report = (step, data) => console.log(JSON.stringify({ step, ...data }));
const lines = createInterface({ input: process.stdin });
// Lines that come before they are asked for are kept.
const queued = [];
let waiting = null;
lines.on("line", (line) => {
  if (waiting) {
    waiting(line);
    waiting = null;
  } else {
    queued.push(line);
  }
});
const nextLine = () =>
  queued.length ? Promise.resolve(queued.shift()) : new Promise((resolve) => { waiting = resolve; });

// The network is closed here and on CI: nothing may try to reach Google's services.
const userDataDir = mkdtempSync(join(tmpdir(), "sluice-chromium-"));
const browser = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.SLUICE_CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
  viewport: { width: 1440, height: 900 },
  deviceScaleFactor: 1,
  acceptDownloads: true,
});

try {
  const page = browser.pages()[0] || (await browser.newPage());
  const problems = [];
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    // Chromium logs every 4xx answer as an error; the page's expected refusals (the key
    // prompt's 401 and 403, the bad query's 400) are not problems.
    if (message.type() === "error" && !message.text().startsWith("Failed to load resource")) {
      problems.push(`console error: ${message.text()}`);
    }
  });
  await page.goto(url);

  // Auth on: the page asks for a key; each refused key is said to be refused.
  let prompts = [];
  if (keysToTry.length) {
    for (const key of keysToTry) {
      await page.locator("#key-dialog[open]").waitFor({ timeout: 15000 });
      prompts.push(await page.locator("#key-error").textContent());
      await page.fill("#key-input", key);
      await page.click("#key-submit");
      // The dialog either closes (accepted) or is shown again with why.
      await page.waitForFunction(
        () => !document.querySelector("#key-dialog").open || document.querySelector("#key-error").textContent,
        null,
        { timeout: 15000 },
      );
    }
  }

  // The board: wait until every chart has drawn data, then look again a few seconds later.
  const latest = () => page.evaluate(() => {
    const charts = {};
    for (const figure of document.querySelectorAll("figure[data-chart]")) {
      charts[figure.dataset.chart] = {
        renders: Number(figure.dataset.renders || 0),
        latest: figure.dataset.latest ? JSON.parse(figure.dataset.latest) : null,
        // What is drawn: paths of time series, bars with a colour's name.
        paths: figure.querySelectorAll("svg path").length,
        bars: figure.querySelectorAll("svg rect[data-series]").length,
      };
    }
    const tiles = {};
    for (const tile of document.querySelectorAll(".kpi")) tiles[tile.dataset.kpi] = tile.querySelector(".value").textContent;
    return { charts, tiles, live: document.querySelector("#live-text").textContent, keyPrompt: document.querySelector("#key-dialog").open };
  });
  await page.waitForFunction(() => {
    const chart = (name) => JSON.parse(document.querySelector(`figure[data-chart="${name}"]`).dataset.latest || "null");
    const rate = chart("ingest-rate"), colors = chart("colors"), fresh = chart("freshness");
    return rate && rate.peak > 0 && colors && colors.green + colors.blue + colors.gray > 0 && fresh && fresh.measured > 0;
  }, null, { timeout: 60000 });
  const first = await latest();
  await page.waitForTimeout(5000);
  const second = await latest();
  report("board", { first, second, prompts, problems });

  // The test stops the load and waits for the replica to hold everything before this.
  await nextLine();

  const runAndWait = async (text, useKeyboard) => {
    await page.fill("#sql-editor", text);
    const before = await page.locator("#query-state").getAttribute("data-state");
    if (useKeyboard) {
      await page.focus("#sql-editor");
      await page.keyboard.press("Control+Enter");
    } else {
      await page.click("#run");
    }
    await page.waitForFunction(() => {
      const state = document.querySelector("#query-state").dataset.state;
      return state && state !== "yellow" && !document.querySelector("#run").disabled;
    }, null, { timeout: 60000 });
    return before;
  };

  await runAndWait(sql, true);
  const table = await page.evaluate(() => ({
    columns: [...document.querySelectorAll("#results thead th")].map((th) => th.firstChild.textContent),
    rows: [...document.querySelectorAll("#results tbody tr")].map((tr) => [...tr.children].map((td) => td.textContent)),
    state: document.querySelector("#query-state").dataset.state,
    stateText: document.querySelector("#query-state").textContent,
    meta: document.querySelector("#query-meta").textContent,
    chartBars: document.querySelectorAll('figure[data-chart="result"] svg rect[data-series]').length,
    chartLabels: [...document.querySelectorAll('figure[data-chart="result"] svg text')].map((t) => t.textContent),
  }));
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#export-csv")]);
  const csvPath = await download.path();
  const csv = readFileSync(csvPath, "utf8");
  report("sql", { ...table, csv, filename: download.suggestedFilename() });

  await runAndWait("SELECT no_such_column FROM notifications", false);
  report("bad-sql", await page.evaluate(() => ({
    state: document.querySelector("#query-state").dataset.state,
    error: document.querySelector("#query-error").hidden ? null : document.querySelector("#query-error").textContent,
    exportDisabled: document.querySelector("#export-csv").disabled,
  })));

  // Leave the page as an analyst would see it: a result, and the board with the cached answer.
  await runAndWait(sql, false);
  const board = await page.waitForFunction(() => {
    const queries = JSON.parse(document.querySelector('figure[data-chart="queries"]').dataset.latest || "null");
    return queries && queries.orange > 0 && queries.answered >= 2 && queries.failed >= 1 && queries;
  }, null, { timeout: 20000 });
  const queries = await board.jsonValue();
  if (screenshot) {
    // Two more refreshes so that the time series reach across the chart.
    await page.waitForTimeout(3500);
    await page.screenshot({ path: screenshot, fullPage: true });
  }
  report("done", { queries, problems, last: await latest() });
} finally {
  await browser.close();
  lines.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
