// Sign-in interop: the broker against oidc-provider, a certified OpenID Provider, on loopback.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import http from 'node:http';
import Provider from 'oidc-provider';
import { freePort, startBroker, launch, shot } from './harness.mjs';

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
    async findAccount(ctx, id) {
      return {
        accountId: id,
        async claims() {
          return { sub: id, preferred_username: id, groups: id === 'alice' ? ['oncall'] : [] };
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
approvals = [{ group = "approvers", count = 1 }]
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

test('signs in through oidc-provider with code, PKCE, state and nonce', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${base}/`);
  await page.getByRole('link', { name: 'Sign in with single sign-on' }).click();
  // oidc-provider's own development login and consent pages.
  await page.locator('input[name="login"]').fill('alice');
  await page.locator('input[name="password"]').fill('any');
  await shot(page, 'interop-01-provider-login');
  await page.locator('button[type="submit"]').click();
  await page.locator('button[type="submit"]', { hasText: /continue/i }).click();
  await page.waitForURL(`${base}/`);
  const header = await page.locator('header').innerText();
  assert.match(header, /alice/);
  // The groups claim came through: alice may file requests.
  assert.equal(await page.getByRole('link', { name: 'New breakglass request' }).count(), 1);
  await shot(page, 'interop-02-signed-in');
});
