// Sign-in interop: the broker against oidc-provider, a certified OpenID Provider, on loopback.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import http from 'node:http';
import Provider from 'oidc-provider';
import { freePort, startBroker, launch, shot, fileHotfix } from './harness.mjs';

const CLIENT_ID = 'breakglass-interop';
const CLIENT_SECRET = 'interop-secret-not-for-production';

let provider;
let server;
let broker;
let browser;
let base;

before(async () => {
  const [idpPort, brokerPort] = [await freePort(), await freePort()];
  const issuer = `http://127.0.0.1:${idpPort}`;
  base = `http://127.0.0.1:${brokerPort}`;
  provider = new Provider(issuer, {
    clients: [{
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      redirect_uris: [`${base}/auth/callback`],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    claims: { openid: ['sub'], profile: ['preferred_username', 'groups'] },
    // Put scope claims (groups) in the ID token itself, which is what the broker reads.
    conformIdTokenClaims: false,
    pkce: { required: () => true },
    // The login is the subject; the name before a dot is the preferred_username, so
    // `bob.one` and `bob.two` are two people who both call themselves bob.
    async findAccount(ctx, id) {
      const name = id.split('.')[0];
      const groups = { alice: ['oncall'], bob: ['approvers'], dave: ['auditors'] }[name] || [];
      return {
        accountId: id,
        async claims() {
          return { sub: id, preferred_username: name, groups };
        },
      };
    },
  });
  server = http.createServer(provider.callback());
  await new Promise((resolve) => server.listen(idpPort, '127.0.0.1', resolve));

  const dir = mkdtempSync(join(tmpdir(), 'bg-interop-'));
  const kubeconfig = join(dir, 'kubeconfig');
  writeFileSync(kubeconfig, `apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "http://127.0.0.1:9"}}]
users: [{name: none, user: {token: unused}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
`);
  const config = join(dir, 'config.toml');
  writeFileSync(config, `public_url = "${base}"
listen = "127.0.0.1:${brokerPort}"
database_url = "sqlite://${join(dir, 'broker.db')}?mode=rwc"

[oidc]
issuer = "${issuer}"
client_id = "${CLIENT_ID}"
client_secret_env = "INTEROP_CLIENT_SECRET"

[roles]
requesters = ["oncall"]
auditors = ["auditors"]

[[targets]]
name = "interop"
kind = "kubernetes"
credentials = "kubeconfig"
kubeconfig = "${kubeconfig}"
namespaces = ["default"]
max_duration = "1h"
approvals = [{ group = "approvers", count = 2 }]
images = { registries = ["us-docker.pkg.dev/acme/"], require_digest = true }
ticket_pattern = "^INC-[0-9]+$"
`);
  ({ child: broker } = await startBroker(['serve', '--config', config], (out) => out.includes('breakglass-broker serving'),
    { INTEROP_CLIENT_SECRET: CLIENT_SECRET }));
  browser = await launch();
});

after(async () => {
  await browser?.close();
  broker?.kill('SIGTERM');
  server?.close();
});

/** Signs `login` in through oidc-provider's own development login and consent pages. */
async function signIn(login, screenshot) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${base}/`);
  await page.getByRole('link', { name: 'Sign in with single sign-on' }).click();
  await page.locator('input[name="login"]').fill(login);
  await page.locator('input[name="password"]').fill('any');
  if (screenshot) await shot(page, screenshot);
  await page.locator('button[type="submit"]').click();
  await page.locator('button[type="submit"]', { hasText: /continue/i }).click();
  await page.waitForURL(`${base}/`);
  return page;
}

const IMAGE = 'us-docker.pkg.dev/acme/hotfix/api@sha256:8f4e9a1c2b3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7';

test('signs in through oidc-provider with code, PKCE, state and nonce', async () => {
  const page = await signIn('alice', 'interop-01-provider-login');
  const header = await page.locator('header').innerText();
  assert.match(header, /alice/);
  // The groups claim came through: alice may file requests.
  assert.equal(await page.getByRole('link', { name: 'New breakglass request' }).count(), 1);
  await shot(page, 'interop-02-signed-in');
});

test('two people the provider names bob are two people on every page', async () => {
  const alice = await signIn('alice');
  const requestUrl = await fileHotfix(alice, 'INC-8001', IMAGE, 'default');
  for (const login of ['bob.one', 'bob.two']) {
    const bob = await signIn(login);
    assert.match(await bob.locator('header').innerText(), /bob/);
    await bob.goto(requestUrl);
    await bob.getByRole('button', { name: 'Approve exactly this' }).click();
    await bob.waitForURL(requestUrl);
  }
  await alice.goto(requestUrl);
  const decisions = await alice.locator('.decisions').innerText();
  assert.match(decisions, /bob \(bob\.one\) approved/);
  assert.match(decisions, /bob \(bob\.two\) approved/);
  await shot(alice, 'interop-03-two-bobs');

  const dave = await signIn('dave');
  await dave.goto(`${base}/audit?ticket=INC-8001`);
  const table = await dave.locator('table.audit').innerText();
  assert.match(table, /bob \(bob\.one\)/);
  assert.match(table, /bob \(bob\.two\)/);
});
