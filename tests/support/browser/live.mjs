// Opens tests/support/browser/live.html (served at PAGE) in Debian's headless Chromium and has it follow a
// user's tasks (BASE_URL, TOKEN: handed to the page, never put in a URL); then takes commands on
// stdin, one JSON object a line, and answers each with one JSON line on stdout, for
// tests/system/test_live_browser.py:
//   {"do": "state"}    → the page's window.live (its replica, the events it got and when)
//   {"do": "offline"}  → the browser's network goes down (new connections fail; open ones live on)
//   {"do": "online"}   → and comes back
// The first line out is {"ready": true}, once the page has loaded. The page's console goes to stderr.
import { createInterface } from "node:readline";
import { launch } from "./chromium.mjs";

const { PAGE, BASE_URL, TOKEN } = process.env;
const { context, page, close } = await launch();
page.on("console", (message) => process.stderr.write(`page: ${message.text()}\n`));
page.on("pageerror", (error) => process.stderr.write(`page error: ${error}\n`));

try {
  await page.goto(PAGE);
  await page.waitForFunction(() => typeof window.follow === "function");
  await page.evaluate(([baseUrl, token]) => window.follow(baseUrl, token), [BASE_URL, TOKEN]);
  console.log(JSON.stringify({ ready: true }));
  for await (const line of createInterface({ input: process.stdin })) {
    const command = JSON.parse(line).do;
    if (command === "state") console.log(JSON.stringify(await page.evaluate(() => window.live)));
    else if (command === "offline" || command === "online") {
      await context.setOffline(command === "offline");
      console.log(JSON.stringify({ offline: command === "offline" }));
    } else throw new Error(`unknown command ${line}`);
  }
} finally {
  await close();
}
