// Shared by the browser tests: start the broker binary, launch Debian's Chromium, sign in,
// keep screenshots.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { chromium } from 'playwright-core';

export const BIN = process.env.BREAKGLASS_BIN;
export const SHOTS = process.env.SCREENSHOT_DIR || join(process.cwd(), 'screenshots');
mkdirSync(SHOTS, { recursive: true });

if (!BIN) throw new Error('BREAKGLASS_BIN must name the breakglass-broker binary');

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });
}

/** Starts `breakglass-broker ARGS...` and resolves once `ready(line)` matches a line of stdout. */
export function startBroker(args, ready, env = {}) {
  const child = spawn(BIN, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const result = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`broker did not start:\n${output}`)), 30_000);
    const onData = (chunk) => {
      output += chunk.toString();
      const match = ready(output);
      if (match) {
        clearTimeout(timer);
        resolve({ child, match });
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('exit', (code) => reject(new Error(`broker exited with ${code}:\n${output}`)));
  });
  return result;
}

export async function startDev(extraArgs = []) {
  const dir = mkdtempSync(join(tmpdir(), 'bg-browser-'));
  const { child, match } = await startBroker(
    ['dev', '--listen', '127.0.0.1:0', '--data-dir', dir, ...extraArgs],
    (out) => out.match(/broker:\s+(http:\/\/127\.0\.0\.1:\d+)/),
  );
  return { child, base: match[1], dir };
}

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
  });
}

export async function shot(page, name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

/** Files the checkout hotfix as the signed-in `page` (alice) and returns the request's URL. */
export async function fileHotfix(page, ticket, image, namespace = 'prod') {
  await page.getByRole('link', { name: 'New breakglass request' }).first().click();
  await page.getByLabel('Namespace').selectOption(namespace);
  await page.getByLabel('Manifest (YAML or JSON; one or more objects)').fill(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: checkout
spec:
  selector:
    matchLabels: {app: checkout}
  template:
    metadata:
      labels: {app: checkout}
    spec:
      automountServiceAccountToken: false
      containers:
      - name: checkout
        image: ${image}
`);
  await page.getByLabel('Ticket').fill(ticket);
  await page.getByLabel('Duration (minutes)').fill('30');
  await page.getByLabel(/^Why/).fill('Checkout returns 500s; hotfix image from the release branch.');
  await page.getByRole('button', { name: 'File request' }).click();
  await page.waitForURL(/\/requests\/[0-9a-f-]{36}$/, { timeout: 15_000 }).catch(async () => {
    throw new Error(`filing did not reach the request page: ${await page.locator('main').innerText()}`);
  });
  return page.url();
}

/** Signs a persona in through the dev issuer's persona page, in its own browser context. */
export async function signIn(browser, base, persona, viewport = { width: 1280, height: 900 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  await page.goto(`${base}/`);
  await page.getByRole('link', { name: 'Sign in with single sign-on' }).click();
  await page.getByRole('button', { name: persona, exact: true }).click();
  await page.waitForURL(`${base}/`);
  return { context, page };
}
