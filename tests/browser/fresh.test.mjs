// A decision rests on a recent sign-in: after decision_max_age, approving from a page left open
// goes through the provider again, and what counts is what the provider says then.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startDev, launch, signIn, shot, fileHotfix } from './harness.mjs';

const IMAGE = 'us-docker.pkg.dev/acme/hotfix/api@sha256:8f4e9a1c2b3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7';
// The shortest decision_max_age the broker takes; the test waits it out in real time.
const DECISION_MAX_AGE_MS = 60_000;

let dev;
let browser;
before(async () => {
  dev = await startDev(['--decision-max-age', '1m']);
  browser = await launch();
});
after(async () => {
  await browser?.close();
  dev?.child.kill('SIGTERM');
});

/** The decisions listed on the request page, as alice sees them. */
async function decisions(page, url) {
  await page.goto(url);
  return page.locator('section.card', { hasText: 'Approval:' }).innerText();
}

test('an approval from an old sign-in counts only after a fresh one, with the groups it brings', async () => {
  const { base } = dev;
  const alice = await signIn(browser, base, 'alice');
  const requestUrl = await fileHotfix(alice.page, 'INC-7001', IMAGE);

  // bob and carol open the request, ready to approve.
  const bob = await signIn(browser, base, 'bob');
  const carol = await signIn(browser, base, 'carol');
  await bob.page.goto(requestUrl);
  await carol.page.goto(requestUrl);
  assert.equal(await carol.page.getByRole('button', { name: 'Approve exactly this' }).count(), 1);

  // At the provider, carol is taken out of the approvers.
  const removed = await fetch(`${base}/dev/idp/personas/carol/groups`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: '[]',
  });
  assert.equal(removed.status, 204);

  await new Promise((resolve) => setTimeout(resolve, DECISION_MAX_AGE_MS + 2_000));

  // carol approves from the page she left open: the broker sends her to the provider first.
  await carol.page.getByLabel('Comment').fill('Looks right to me');
  await carol.page.getByRole('button', { name: 'Approve exactly this' }).click();
  await carol.page.waitForURL(/\/dev\/idp\/authorize\?.*max_age=60/);
  await shot(carol.page, 'fresh-01-carol-signs-in-again');
  assert.match(await decisions(alice.page, requestUrl), /No decisions yet/);

  // Her fresh sign-in carries no approver group: she no longer even sees the request.
  await carol.page.getByRole('button', { name: 'carol', exact: true }).click();
  await carol.page.waitForURL(/\/requests\/.*resume=approve/);
  assert.match(await carol.page.locator('main').innerText(), /not found/i);
  await shot(carol.page, 'fresh-02-carol-no-longer-an-approver');
  assert.match(await decisions(alice.page, requestUrl), /No decisions yet/);

  // bob, still an approver, signs in again and lands on the same form, comment intact.
  await bob.page.getByLabel('Comment').fill('Matches the incident');
  await bob.page.getByRole('button', { name: 'Approve exactly this' }).click();
  await bob.page.waitForURL(/\/dev\/idp\/authorize/);
  await bob.page.getByRole('button', { name: 'bob', exact: true }).click();
  await bob.page.waitForURL(/\/requests\/.*resume=approve/);
  assert.equal(await bob.page.getByLabel('Comment').inputValue(), 'Matches the incident');
  assert.match(await bob.page.locator('#resumed').innerText(), /signed in again/);
  await shot(bob.page, 'fresh-03-bob-back-on-the-form');
  assert.match(await decisions(alice.page, requestUrl), /No decisions yet/);
  await bob.page.getByRole('button', { name: 'Approve exactly this' }).click();
  await bob.page.waitForURL(requestUrl);
  const after = await decisions(alice.page, requestUrl);
  assert.match(after, /bob approved/);
  assert.doesNotMatch(after, /carol/);
});
