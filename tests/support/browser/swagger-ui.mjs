// Uses the service's Swagger UI as a person would, in Debian's headless Chromium: reads the listed
// operations, authorises with a bearer token, creates a task through "Try it out" → Execute, and
// reads the example shown under each response of GET /api/tasks/{id}.
// Env: CHROMIUM (its executable), BASE_URL, TOKEN, TITLE (of the task to create), SCREENSHOT (a PNG
// path, written at the end and on failure). Prints what it saw as JSON; tests/system/test_swagger_ui.py judges it.
import { launch } from "./chromium.mjs";

const { BASE_URL, TOKEN, TITLE, SCREENSHOT } = process.env;
const { page, close } = await launch();

try {
  await page.goto(`${BASE_URL}/api/ui/`);
  await page.locator(".opblock").first().waitFor();
  const operations = await page.locator(".opblock").evaluateAll((blocks) =>
    blocks.map((block) => ({
      id: block.id.replaceAll("\\", ""), // Swagger UI CSS-escapes the id: tasks\.find
      method: block.querySelector(".opblock-summary-method")?.textContent?.trim(),
      path: block.querySelector(".opblock-summary-path")?.getAttribute("data-path"),
      summary: block.querySelector(".opblock-summary-description")?.textContent?.trim(),
    })),
  );

  await page.locator(".auth-wrapper button.authorize").click();
  const dialog = page.locator(".modal-ux");
  await dialog.locator("input").fill(TOKEN);
  await dialog.getByRole("button", { name: "Authorize", exact: true }).click();
  await dialog.getByRole("button", { name: "Close" }).click();

  const create = page.locator(".opblock-post", { has: page.locator('[data-path="/api/tasks"]') });
  await create.locator(".opblock-summary").click();
  await create.getByRole("button", { name: "Try it out" }).click();
  await create.locator("textarea.body-param__text").fill(JSON.stringify({ title: TITLE }));
  await create.getByRole("button", { name: "Execute" }).click();
  const live = create.locator(".live-responses-table .response");
  await live.waitFor();
  const status = Number(await live.locator(".response-col_status").textContent());
  const body = await live.locator(".response-col_description .microlight").first().textContent();
  const curl = await create.locator(".curl-command .curl").textContent();

  const read = page.locator(".opblock-get", { has: page.locator('[data-path="/api/tasks/{id}"]') });
  await read.locator(".opblock-summary").click();
  await read.locator("tr.response").first().waitFor();
  const examples = Object.fromEntries(
    await read.locator("tr.response").evaluateAll((rows) =>
      rows.map((row) => [
        row.getAttribute("data-code"),
        row.querySelector(".response-col_description .microlight")?.textContent ?? null,
      ]),
    ),
  );

  console.log(JSON.stringify({ operations, created: { status, body: JSON.parse(body), curl }, examples }));
} finally {
  if (SCREENSHOT) await page.screenshot({ path: SCREENSHOT, fullPage: true }).catch(() => {});
  await close();
}
