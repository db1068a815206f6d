// Loads a page in Debian's headless Chromium (puppeteer-core drives it; it never downloads a browser),
// waits until the page says it is done, saves a screenshot and prints what each cell shows, as JSON.
// Usage: EDGE_TOKEN=... node tools/browser/run-page.mjs URL SCREENSHOT.png
// The token joins the URL's fragment here, so that it is on no command line; CHROMIUM names the
// browser (default /usr/bin/chromium).
import puppeteer from "puppeteer-core";

const [page_url, screenshot] = process.argv.slice(2);
const url = `${page_url}&token=${encodeURIComponent(process.env.EDGE_TOKEN ?? "")}`;
const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  // --no-sandbox: the tests run as root, where Chromium's sandbox will not start.
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"],
});
const problems = [];
try {
  const page = await browser.newPage();
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    // Chromium logs every 4xx it receives; the page's refused calls are meant to get theirs.
    if (message.type() === "error" && !message.text().startsWith("Failed to load resource")) {
      problems.push(`console: ${message.text()}`);
    }
  });
  await page.setViewport({ width: 960, height: 320 });
  await page.goto(url, { waitUntil: "load", timeout: 20000 });
  await page.waitForSelector("body[data-done]", { timeout: 20000 });
  const shown = await page.$$eval("td[id]", (cells) => Object.fromEntries(cells.map((c) => [c.id, c.innerText])));
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify({ shown, problems }));
} finally {
  await browser.close();
}
