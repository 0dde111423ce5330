// Drives the DocFlow page in headless Chromium as a person would, and
// prints one JSON line of what it saw (tests/api/browser.rs asserts on it):
// a wrong sign-in (the error in words), registration, two files uploaded
// at once with progress, both jobs followed live to the end, a reload and
// a new tab (still signed in, both listed), a result read page by page, a
// download, a deletion, a phone-sized screen, and the admin's dead-letter
// list with a requeue.
//
//   ADMIN_EMAIL=… ADMIN_PASSWORD=… node journey.mjs <base-url> <text-file> <pdf-file> <save-download-to>
import { basename } from "node:path";
import { chromium } from "playwright-core";

const [base, textFile, pdfFile, downloadTo] = process.argv.slice(2);
if (!base || !textFile || !pdfFile || !downloadTo) {
  console.error("usage: node journey.mjs <base-url> <text-file> <pdf-file> <save-download-to>");
  process.exit(2);
}
const LONG = { timeout: 60_000 };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
const seen = { pageErrors: [], eventSourceRequests: [] };
const documentRows = (page) =>
  page.$$eval("#documents li.document", (rows) =>
    rows.map((row) => ({
      name: row.dataset.name,
      statuses: [...row.querySelectorAll("li.job")].map((job) => job.dataset.status),
    })));
const documentCount = (page, count) =>
  page.waitForFunction((n) => document.querySelectorAll("#documents li.document").length === n, count, LONG);

try {
  const context = await browser.newContext({ acceptDownloads: true });
  const page = await context.newPage();
  page.on("pageerror", (err) => seen.pageErrors.push(err.message));
  page.on("request", (request) => {
    if (request.resourceType() === "eventsource") seen.eventSourceRequests.push(new URL(request.url()).pathname);
  });
  await page.goto(`${base}/`);
  seen.title = await page.title();

  await page.fill("#email", "browser@example.com");
  await page.fill("#password", "browser-password-1");
  await page.click("#login");
  await page.waitForSelector("#message:not([hidden])");
  seen.wrongSignIn = (await page.textContent("#message")).trim();

  await page.click("#register");
  await page.waitForSelector("#work:not([hidden])");

  // Two files at once, through the picker.
  await page.setInputFiles("#file", [textFile, pdfFile]);
  await page.waitForFunction(() => document.querySelectorAll('#uploads li[data-state="done"]').length === 2, null, LONG);
  seen.uploads = await page.$$eval("#uploads li", (items) =>
    items.map((item) => ({ name: item.dataset.name, progress: item.querySelector("progress").value })));
  await page.waitForFunction(() => {
    const jobs = [...document.querySelectorAll("#documents li.job")];
    return jobs.length === 2 && jobs.every((job) => job.dataset.status === "succeeded");
  }, null, LONG);
  seen.timelines = await page.$$eval("#documents .timeline", (items) => items.map((item) => item.textContent));
  seen.listed = await documentRows(page);

  // Everything a person does is reachable with the keyboard alone.
  await page.focus("body");
  const reached = new Set();
  for (let i = 0; i < 40; i += 1) {
    await page.keyboard.press("Tab");
    reached.add(await page.evaluate(() => {
      const node = document.activeElement;
      return node.id || [...node.classList].find((c) => !["secondary", "small", "danger"].includes(c)) || node.tagName;
    }));
  }
  seen.keyboardReaches = [...reached];

  // A reload and a new tab keep the session.
  await page.reload();
  await page.waitForSelector("#work:not([hidden])");
  await documentCount(page, 2);
  seen.afterReload = await documentRows(page);
  seen.signInVisibleAfterReload = await page.isVisible("#sign-in");
  const tab = await context.newPage();
  await tab.goto(`${base}/`);
  await documentCount(tab, 2);
  seen.newTab = await documentRows(tab);
  await tab.close();

  // The PDF's result, page by page.
  const pdfRow = page.locator(`#documents li.document[data-name="${basename(pdfFile)}"]`);
  await pdfRow.locator("button.show-result").click();
  await page.waitForSelector("#result:not([hidden])");
  seen.resultPages = await page.$$eval("#pages article.page", (pages) =>
    pages.map((article) => ({
      number: Number(article.dataset.page),
      heading: article.querySelector("h4").textContent,
      text: article.querySelector("pre")?.textContent ?? null,
      noText: article.querySelector(".no-text")?.textContent ?? null,
    })));
  seen.metadataRows = await page.$$eval("#metadata > tbody > tr > th", (cells) => cells.map((cell) => cell.textContent));
  seen.rawJsonInMetadata = await page.$$eval("#metadata td", (cells) => cells.some((cell) => /^[[{]/.test(cell.textContent.trim())));

  // Download the text file through its signed link.
  const textRow = page.locator(`#documents li.document[data-name="${basename(textFile)}"]`);
  const [download] = await Promise.all([page.waitForEvent("download"), textRow.locator("button.download").click()]);
  await download.saveAs(downloadTo);
  seen.downloadName = download.suggestedFilename();

  // Delete it, confirming.
  page.once("dialog", (dialog) => {
    seen.confirmation = dialog.message();
    dialog.accept();
  });
  await textRow.locator("button.delete").click();
  await documentCount(page, 1);
  seen.afterDelete = await documentRows(page);

  // Readable on a phone: nothing wider than the screen.
  await page.setViewportSize({ width: 360, height: 740 });
  seen.phoneOverflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (seen.phoneOverflow > 0) {
    seen.tooWide = await page.evaluate(() => [...document.querySelectorAll("body *")]
      .filter((node) => node.getBoundingClientRect().right > window.innerWidth + 1)
      .map((node) => `${node.tagName.toLowerCase()}#${node.id}.${node.className} ${Math.round(node.getBoundingClientRect().width)}px`)
      .slice(0, 12));
  }
  await page.screenshot({ path: process.env.SCREENSHOT || "/tmp/docflow-browser.png", fullPage: true });
  await page.setViewportSize({ width: 1200, height: 900 });

  // An admin sees the dead-letter queue and requeues a job from it.
  await page.click("#sign-out");
  await page.waitForSelector("#sign-in:not([hidden])");
  await page.fill("#email", process.env.ADMIN_EMAIL);
  await page.fill("#password", process.env.ADMIN_PASSWORD);
  await page.click("#login");
  await page.waitForSelector("#admin:not([hidden])");
  await page.waitForSelector("#dead-letters li.dead-letter");
  seen.deadLetters = await page.$$eval("#dead-letters li.dead-letter", (items) =>
    items.map((item) => ({ jobId: item.dataset.jobId, reason: item.dataset.reason })));
  await page.click("#dead-letters li.dead-letter button.requeue");
  await page.waitForFunction(() => /queued again/.test(document.getElementById("message").textContent), null, LONG);
  seen.requeueMessage = (await page.textContent("#message")).trim();
} finally {
  await browser.close();
}
console.log(JSON.stringify(seen));
