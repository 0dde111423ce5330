// Drives the DocFlow page in headless Chromium as a person would: a wrong
// sign-in (the error must be shown in words), registration, an upload, and
// the job's status arriving live through EventSource. Prints one JSON line
// of what it saw; tests/browser.rs asserts on it.
//
//   node watch-job.mjs <base-url> <file-to-upload>
import { chromium } from "playwright-core";

const [base, file] = process.argv.slice(2);
if (!base || !file) {
  console.error("usage: node watch-job.mjs <base-url> <file>");
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
const seen = { pageErrors: [], eventSourceRequests: [] };
try {
  const page = await browser.newPage();
  page.on("pageerror", (err) => seen.pageErrors.push(err.message));
  page.on("request", (request) => {
    if (request.resourceType() === "eventsource") {
      seen.eventSourceRequests.push(new URL(request.url()).pathname);
    }
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

  await page.setInputFiles("#file", file);
  await page.click("#upload");
  await page.waitForSelector('#job-status[data-status="succeeded"], #job-status[data-status="failed"]', {
    timeout: 60_000,
  });
  seen.status = await page.getAttribute("#job-status", "data-status");
  seen.timeline = await page.$$eval("#timeline li", (items) => items.map((item) => item.textContent));
  await page.waitForSelector("#result:not([hidden])", { timeout: 10_000 });
  seen.text = await page.textContent("#text");
  seen.metadata = await page.$$eval("#metadata dt", (items) => items.map((item) => item.textContent));
  await page.screenshot({ path: process.env.SCREENSHOT || "/tmp/docflow-browser.png", fullPage: true });
} finally {
  await browser.close();
}
console.log(JSON.stringify(seen));
