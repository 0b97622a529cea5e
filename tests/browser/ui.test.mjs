// The whole flow in a real browser: alice files, bob and carol approve, alice sees it live,
// dave finds it in the audit, mallory sees nothing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startDev, launch, signIn, shot } from './harness.mjs';

const IMAGE = 'us-docker.pkg.dev/acme/hotfix/api@sha256:8f4e9a1c2b3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7';
const MANIFEST = `apiVersion: apps/v1
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
      containers:
      - name: checkout
        image: ${IMAGE}
`;

let dev;
let browser;
before(async () => {
  dev = await startDev();
  browser = await launch();
});
after(async () => {
  await browser?.close();
  dev?.child.kill('SIGTERM');
});

test('breakglass from request to audit, in the browser', async () => {
  const { base } = dev;

  // alice files a request and lands on its page, pending.
  const alice = await signIn(browser, base, 'alice');
  await shot(alice.page, '01-alice-dashboard');
  await alice.page.getByRole('link', { name: 'New breakglass request' }).first().click();
  await alice.page.getByLabel('Namespace').selectOption('prod');
  await alice.page.getByLabel('Manifest (YAML or JSON; one or more objects)').fill(MANIFEST);
  await alice.page.getByLabel('Ticket').fill('INC-5150');
  await alice.page.getByLabel('Duration (minutes)').fill('90');
  await alice.page.getByLabel(/^Why/).fill('Checkout returns 500s; hotfix image from the release branch.');
  await shot(alice.page, '02-alice-new-request');
  await alice.page.getByRole('button', { name: 'File request' }).click();
  await alice.page.waitForURL(/\/requests\/[0-9a-f-]{36}$/);
  const requestUrl = alice.page.url();
  assert.match(await alice.page.locator('.banner').innerText(), /pending/i);
  await shot(alice.page, '03-alice-pending');

  // bob, in his own browser context, finds it waiting for him and approves.
  const bob = await signIn(browser, base, 'bob');
  const waiting = bob.page.locator('section', { hasText: 'Waiting for my approval' });
  await waiting.getByRole('link', { name: /INC-5150/ }).click();
  assert.equal(bob.page.url(), requestUrl);
  assert.match(await bob.page.locator('pre.yaml').first().innerText(), /▸ .*image-policy\.k8s\.io\/break-glass/);
  await shot(bob.page, '04-bob-reviews');
  await bob.page.getByLabel('Comment').fill('Matches the incident; image built from release-1.42.');
  await bob.page.getByRole('button', { name: 'Approve exactly this' }).click();
  await bob.page.waitForURL(requestUrl);
  assert.match(await bob.page.locator('.decisions').innerText(), /bob approved/);

  // carol approves; the broker applies it.
  const carol = await signIn(browser, base, 'carol');
  await carol.page.goto(requestUrl);
  await carol.page.getByRole('button', { name: 'Approve exactly this' }).click();
  await carol.page.waitForURL(requestUrl);

  // alice sees it active, with time left.
  await alice.page.goto(requestUrl);
  await alice.page.locator('.banner .badge', { hasText: 'active' }).waitFor({ timeout: 10_000 }).catch(async () => {
    await alice.page.reload();
    await alice.page.locator('.banner .badge', { hasText: 'active' }).waitFor({ timeout: 10_000 });
  });
  assert.match(await alice.page.locator('.banner').innerText(), /1h (29|30)m left|1h 2\dm left/);
  await shot(alice.page, '05-alice-active');

  // The same page works at 360 px wide.
  const narrow = await signIn(browser, base, 'alice', { width: 360, height: 800 });
  await narrow.page.goto(requestUrl);
  const overflow = await narrow.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `no sideways scrolling at 360px (overflow ${overflow}px)`);
  await shot(narrow.page, '06-alice-active-360px');

  // dave finds its events on the audit page.
  const dave = await signIn(browser, base, 'dave');
  await dave.page.getByRole('link', { name: 'Audit' }).click();
  await dave.page.getByLabel('Ticket').fill('INC-5150');
  await dave.page.getByRole('button', { name: 'Filter' }).click();
  const table = await dave.page.locator('table.audit').innerText();
  for (const action of ['request.created', 'request.approved', 'request.fully_approved', 'request.applied']) {
    assert.ok(table.includes(action), `audit shows ${action}`);
  }
  assert.match(table, /alice/);
  await shot(dave.page, '07-dave-audit');

  // mallory sees no new-request form and cannot open alice's request.
  const mallory = await signIn(browser, base, 'mallory');
  assert.equal(await mallory.page.getByRole('link', { name: 'New breakglass request' }).count(), 0);
  const response = await mallory.page.goto(requestUrl);
  assert.equal(response.status(), 404);
  await shot(mallory.page, '08-mallory-not-found');

  // The dev issuer's sign-in page, for the record.
  const fresh = await browser.newContext();
  const page = await fresh.newPage();
  await page.goto(`${base}/login`);
  await page.getByRole('link', { name: 'Sign in with single sign-on' }).click();
  for (const persona of ['alice', 'bob', 'carol', 'erin', 'dave', 'mallory']) {
    assert.equal(await page.getByRole('button', { name: persona, exact: true }).count(), 1);
  }
  await shot(page, '00-dev-issuer-sign-in');
});
