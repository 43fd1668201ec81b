// The web interface end to end: playwright-core drives Debian's Chromium against a real
// `patgate serve --demo` on a fresh SQLite file. Every step asserts what a user would see;
// every page is photographed into docs/img/ (the screenshots docs/ui.md shows).
//
// Run: `npm ci && npm test` in ui-tests/ after `cargo build -p patgate` (or with
// PATGATE_BIN=…). CHROMIUM=/usr/bin/chromium by default.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, readFileSync, existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const binary = process.env.PATGATE_BIN || join(process.env.CARGO_TARGET_DIR || join(root, 'target'), 'debug', 'patgate');
const browserPath = process.env.CHROMIUM || '/usr/bin/chromium';
const images = join(root, 'docs', 'img');
const PASSWORD = 'demo-password-for-the-browser-test';
const PROJECT = 'acme/platform/api';
const ENC = encodeURIComponent(PROJECT);

assert.ok(existsSync(binary), `no patgate binary at ${binary}: cargo build -p patgate first`);
assert.ok(existsSync(browserPath), `no Chromium at ${browserPath}: apt-get install chromium`);
mkdirSync(images, { recursive: true });

// ---- the server ------------------------------------------------------------------------

const work = mkdtempSync(join(tmpdir(), 'patgate-ui-'));
const adminFile = join(work, 'admin.token');
const server = spawn(binary, [
  'serve', '--demo', '--listen', '127.0.0.1:0',
  '--database-url', `sqlite://${join(work, 'patgate.db')}`,
  '--secret-key-file', join(work, 'patgate.key'),
  '--bootstrap-token-file', adminFile,
], { env: { ...process.env, PATGATE_DEMO_PASSWORD: PASSWORD, PATGATE_LOG: 'info' }, stdio: ['ignore', 'pipe', 'pipe'] });
let output = '';
server.stdout.on('data', (chunk) => { output += chunk; });
server.stderr.on('data', (chunk) => { output += chunk; });

async function until(what, check, seconds = 30) {
  const end = Date.now() + seconds * 1000;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}\n${output}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

const base = await until('the server to listen', () => {
  const match = output.match(/patgate is serving.*address=([0-9.]+:\d+)/);
  return match && `http://${match[1]}`;
});
const admin = await until('the bootstrap token', () => existsSync(adminFile) && readFileSync(adminFile, 'utf8').trim());

async function call(method, path, { token, body } = {}) {
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers['PRIVATE-TOKEN'] = token;
  const response = await fetch(base + path, { method, headers, body: body && JSON.stringify(body) });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

async function decide(token, method, path) {
  const { status, body } = await call('POST', '/api/v1/decide', { body: { token, method, path } });
  assert.equal(status, 200);
  return body;
}

// An over-privileged legacy token for the admin to find.
const broad = await call('POST', '/api/v1/users/bob/personal_access_tokens', {
  token: admin, body: { name: 'old deploy script', scopes: ['api'], expires_at: new Date(Date.now() + 200 * 864e5).toISOString().slice(0, 10) },
});
assert.equal(broad.status, 201, JSON.stringify(broad.body));

// ---- the browser -----------------------------------------------------------------------

const browser = await chromium.launch({ executablePath: browserPath, args: ['--no-sandbox'] });
let failed = false;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.on('dialog', (dialog) => dialog.accept());
  const shot = (name) => page.screenshot({ path: join(images, `${name}.png`), fullPage: true });

  async function signIn(username) {
    await page.goto(`${base}/`);
    await page.getByLabel('Username').fill(username);
    await page.getByLabel('Password').fill(PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Personal access tokens' }).waitFor();
  }

  // A wrong password is refused with a message; nothing else shows.
  await page.goto(`${base}/`);
  await page.getByLabel('Username').fill('alice');
  await page.getByLabel('Password').fill('not the password at all');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('status').filter({ hasText: /./ }).waitFor();
  await shot('sign-in');

  // alice signs in and generates a fine-grained token for one project: Container Registry
  // Create + Read.
  await signIn('alice');
  await page.getByRole('button', { name: /Generate token/ }).click();
  await page.getByRole('menuitem', { name: 'Fine-grained token' }).click();
  await page.getByRole('heading', { name: 'Generate a fine-grained token' }).waitFor();
  await page.getByLabel('Token name').fill('ci-images');
  await page.getByRole('searchbox', { name: 'Projects and groups' }).fill('platform/api');
  await page.getByRole('button', { name: new RegExp(`Project ${PROJECT}`) }).click();
  await page.getByLabel('Container Registry: create', { exact: true }).first().check();
  await page.getByLabel('Container Registry: read', { exact: true }).first().check();
  // Deleting the project needs Owner; alice is Maintainer there: a warning, and the cell
  // is marked. Unchecking it clears both.
  const deleteProject = page.getByLabel('Project: delete', { exact: true }).first();
  await deleteProject.check();
  await page.getByText(`needs owner; you are maintainer in ${PROJECT}`).waitFor();
  await shot('generate-fine-grained');
  await deleteProject.uncheck();
  assert.equal(await page.locator('.warning').count(), 0, 'the warning goes with the permission');
  // Reaching all her memberships, the same permission is beyond her highest role anywhere
  // (maintainer): a warning too. Back to the selected project, it goes.
  await page.getByRole('radio', { name: /All my memberships/ }).check();
  await deleteProject.check();
  await page.getByText('needs owner; in your memberships you are at most maintainer of any project').waitFor();
  await deleteProject.uncheck();
  assert.equal(await page.locator('.warning').count(), 0, 'the warning goes with the permission');
  await page.getByRole('radio', { name: /Selected projects and groups/ }).check();
  await page.getByRole('button', { name: 'Generate fine-grained token' }).click();

  // Shown once, with a copy button.
  const secretBox = page.getByRole('alert');
  await secretBox.waitFor();
  const secret = (await page.locator('#new-token').textContent()).trim();
  assert.match(secret, /^pgfgt-/);
  assert.ok(await page.getByRole('button', { name: 'Copy' }).isVisible());
  await shot('token-shown-once');
  await page.reload();
  await page.getByRole('heading', { name: 'Personal access tokens' }).waitFor();
  assert.equal(await page.locator('#new-token').count(), 0, 'the secret is not shown again');
  const row = page.locator('tr', { hasText: 'ci-images' });
  await row.getByText('Never used').waitFor();

  // The token in use: a push is allowed, a delete is denied.
  const push = await decide(secret, 'POST', `/api/v4/projects/${ENC}/registry/protection/repository/rules`);
  assert.equal(push.reason, 'allowed', JSON.stringify(push));
  const remove = await decide(secret, 'DELETE', `/api/v4/projects/${ENC}/registry/repositories/1`);
  assert.equal(remove.allowed, false);
  assert.equal(remove.missing, 'container_registry:delete');

  // After the usage flush (every 5 s): last used, and Read flagged as unused.
  await until('the use to be flushed', async () => {
    await page.reload();
    await page.getByRole('heading', { name: 'Personal access tokens' }).waitFor();
    return (await row.getByText('Unused permissions').count()) > 0;
  }, 30);
  assert.ok(!(await row.getByText('Never used').count()), 'no longer never used');
  assert.match(await row.textContent(), /container_registry:read/);
  assert.doesNotMatch(await row.locator('td').nth(6).textContent(), /never/);
  await shot('tokens-table');

  // The suggestion: only the push, at that project.
  await row.getByRole('button', { name: 'Suggestion' }).click();
  await page.getByRole('heading', { name: /Least privilege/ }).waitFor();
  assert.match(await page.locator('main').textContent(), /container_registry:create/);
  await shot('suggestion');
  await page.getByRole('link', { name: 'Back' }).click();

  // Revoke it: the state changes.
  await page.getByRole('heading', { name: 'Personal access tokens' }).waitFor();
  await row.getByRole('button', { name: 'Revoke' }).click();
  await row.getByText('revoked').waitFor();
  assert.equal((await decide(secret, 'POST', `/api/v4/projects/${ENC}/registry/protection/repository/rules`)).reason, 'revoked');

  // The legacy form, for the record.
  await page.getByRole('button', { name: /Generate token/ }).click();
  await page.getByRole('menuitem', { name: 'Legacy token' }).click();
  await page.getByRole('heading', { name: 'Generate a legacy token' }).waitFor();
  await shot('generate-legacy');

  // At phone width the table still reads.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.getByRole('link', { name: 'Cancel' }).click();
  await page.getByRole('heading', { name: 'Personal access tokens' }).waitFor();
  await shot('tokens-table-phone');
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByRole('button', { name: 'Sign in' }).waitFor();

  // The admin finds the over-privileged legacy token in the inventory and revokes it.
  await signIn('admin');
  await page.getByRole('link', { name: 'Credentials inventory' }).click();
  await page.getByRole('heading', { name: 'Credentials inventory' }).waitFor();
  await page.getByLabel('Flag').selectOption('broad_legacy_scope');
  const old = page.locator('tr', { hasText: 'old deploy script' });
  await old.waitFor();
  await shot('credentials-inventory');
  await old.getByRole('button', { name: 'Revoke' }).click();
  await old.getByText('revoked').waitFor();
  const listed = await call('GET', `/api/v1/personal_access_tokens/${broad.body.id}`, { token: admin });
  assert.equal(listed.body.state, 'revoked');

  await page.getByRole('link', { name: 'Audit log' }).click();
  await page.getByRole('heading', { name: 'Audit log' }).waitFor();
  await page.getByText('token_revoked').first().waitFor();
  await shot('audit-log');
  console.log('ui tests: passed; screenshots in docs/img/');
} catch (error) {
  failed = true;
  console.error(error);
  console.error(`server output:\n${output}`);
} finally {
  await browser.close();
  server.kill();
  rmSync(work, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
