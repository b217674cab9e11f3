// Drives kmsd's Vault transit door with node-vault (npm), a Vault client nobody here
// wrote, and checks every answer. Run by tests/e2e/vault_e2e_test.cc with the same
// environment as hvac_client.py (see there); writes KMSD_OUT with a ciphertext of
// "from-node" under KMSD_XDOOR_KEY and context base64("xdoor").
'use strict';

const fs = require('fs');
const assert = require('assert');
const nodeVault = require('node-vault');

const env = process.env;
const tls = {
  ca: fs.readFileSync(env.KMSD_CA),
  cert: fs.readFileSync(env.KMSD_CERT),
  key: fs.readFileSync(env.KMSD_KEY),
};
const otherTls = {
  ca: tls.ca,
  cert: fs.readFileSync(env.KMSD_OTHER_CERT),
  key: fs.readFileSync(env.KMSD_OTHER_KEY),
};
const b64 = (s) => Buffer.from(s).toString('base64');
const unb64 = (s) => Buffer.from(s, 'base64').toString();

function client(requestOptions, token) {
  return nodeVault({ apiVersion: 'v1', endpoint: env.VAULT_ADDR, requestOptions, token });
}

// The promise must reject with Vault's status and an error matching `message`.
async function refused(promise, status, message, what) {
  try {
    await promise;
  } catch (e) {
    const code = e.response && e.response.statusCode;
    assert.strictEqual(code, status, `${what}: status ${code} (${e.message})`);
    if (message) assert.match(e.message, message, `${what}: message ${e.message}`);
    return e;
  }
  assert.fail(`${what}: was not refused`);
}

async function main() {
  const vault = client(tls);
  const health = await vault.health();
  assert.strictEqual(health.sealed, false);
  const status = await vault.status();
  assert.strictEqual(status.sealed, false);

  const login = await vault.certLogin({});
  assert.ok(login.auth.client_token, 'cert login returns a token');
  assert.strictEqual(vault.token, login.auth.client_token, 'node-vault keeps the token');
  const self = await vault.tokenLookupSelf();
  assert.ok(self.data.ttl > 0);

  const key = `${env.KMSD_PREFIX}-orders`;
  await vault.transitCreateKey({ name: key });
  const read = await vault.transitReadKey({ name: key });
  assert.strictEqual(read.data.latest_version, 1);
  const list = await vault.transitListKeys();
  assert.ok(list.data.keys.includes(key), 'list keys');

  // encrypt / decrypt, with and without context
  const enc = await vault.encryptData({ name: key, plaintext: b64('alice@example.com') });
  assert.match(enc.data.ciphertext, /^vault:v1:/);
  const dec = await vault.decryptData({ name: key, ciphertext: enc.data.ciphertext });
  assert.strictEqual(unb64(dec.data.plaintext), 'alice@example.com');
  const ctx = b64('users.email');
  const encCtx = await vault.encryptData({ name: key, plaintext: b64('bob'), context: ctx });
  assert.strictEqual(unb64((await vault.decryptData({ name: key, ciphertext: encCtx.data.ciphertext, context: ctx })).data.plaintext), 'bob');
  await refused(vault.decryptData({ name: key, ciphertext: encCtx.data.ciphertext }), 400, /decryption failed/, 'missing context');

  // batch
  const batch = await vault.encryptData({
    name: key,
    batch_input: [0, 1, 2].map((i) => ({ plaintext: b64(`row ${i}`), context: ctx, reference: `r${i}` })),
  });
  assert.deepStrictEqual(batch.data.batch_results.map((r) => r.reference), ['r0', 'r1', 'r2']);
  const batchDec = await vault.decryptData({
    name: key,
    batch_input: batch.data.batch_results.map((r) => ({ ciphertext: r.ciphertext, context: ctx })),
  });
  assert.deepStrictEqual(batchDec.data.batch_results.map((r) => unb64(r.plaintext)), ['row 0', 'row 1', 'row 2']);

  // rotate, rewrap, config
  await vault.write(`transit/keys/${key}/rotate`, {});
  const rewrapped = await vault.rewrapData({ name: key, ciphertext: enc.data.ciphertext });
  assert.match(rewrapped.data.ciphertext, /^vault:v2:/);
  assert.strictEqual(unb64((await vault.decryptData({ name: key, ciphertext: rewrapped.data.ciphertext })).data.plaintext), 'alice@example.com');
  await vault.write(`transit/keys/${key}/config`, { min_decryption_version: 2 });
  assert.strictEqual((await vault.transitReadKey({ name: key })).data.min_decryption_version, 2);
  await refused(vault.decryptData({ name: key, ciphertext: enc.data.ciphertext }), 400, /retired/, 'retired version');

  // datakey: the wrapped form decrypts with transit/decrypt to the same key
  const dk = await vault.write(`transit/datakey/plaintext/${key}`, {});
  assert.strictEqual(Buffer.from(dk.data.plaintext, 'base64').length, 32);
  assert.match(dk.data.ciphertext, /^vault:v2:/);
  const unwrapped = await vault.write(`transit/decrypt/${key}`, { ciphertext: dk.data.ciphertext });
  assert.strictEqual(unwrapped.data.plaintext, dk.data.plaintext, 'the wrapped data key decrypts to it');
  const wrappedOnly = await vault.write(`transit/datakey/wrapped/${key}`, {});
  assert.strictEqual(wrappedOnly.data.plaintext, undefined, 'datakey/wrapped returns no plaintext');
  await refused(vault.write(`transit/datakey/plaintext/${key}`, { bits: 512 }), 400, /256 bits/, 'datakey bits 512');

  // hmac / verify, random, hash
  const mac = await vault.write(`transit/hmac/${key}/sha2-384`, { input: b64('payload') });
  assert.match(mac.data.hmac, /^vault:v2:/);
  const ok = await vault.write(`transit/verify/${key}/sha2-384`, { input: b64('payload'), hmac: mac.data.hmac });
  assert.strictEqual(ok.data.valid, true);
  const bad = await vault.write(`transit/verify/${key}/sha2-384`, { input: b64('payloaD'), hmac: mac.data.hmac });
  assert.strictEqual(bad.data.valid, false);
  const rnd = await vault.write('transit/random/24', {});
  assert.strictEqual(Buffer.from(rnd.data.random_bytes, 'base64').length, 24);
  const sum = await vault.write('transit/hash/sha2-256', { input: b64('abc') });
  assert.strictEqual(sum.data.sum, require('crypto').createHash('sha256').update('abc').digest('hex'));

  // across doors
  const xkey = env.KMSD_XDOOR_KEY;
  const xctx = b64('xdoor');
  const fromGrpc = await vault.decryptData({ name: xkey, ciphertext: env.KMSD_GRPC_CIPHERTEXT, context: xctx });
  assert.strictEqual(unb64(fromGrpc.data.plaintext), 'from-grpc');
  const out = await vault.encryptData({ name: xkey, plaintext: b64('from-node'), context: xctx });
  fs.writeFileSync(env.KMSD_OUT, JSON.stringify({ ciphertext: out.data.ciphertext }));

  // refusals
  await refused(vault.transitCreateKey({ name: `${env.KMSD_PREFIX}-conv`, convergent_encryption: true, derived: true }),
    400, /convergent/, 'convergent encryption');
  await refused(vault.transitReadKey({ name: `${env.KMSD_PREFIX}-conv` }), 404, null, 'nothing created');
  await refused(vault.encryptData({ name: `${env.KMSD_PREFIX}-none`, plaintext: b64('x') }), 400, /encryption key not found/, 'unknown key');
  await refused(vault.decryptData({ name: key, ciphertext: 'vault:v2:%%%' }), 400, /base64/, 'bad base64');
  await refused(client(tls).encryptData({ name: key, plaintext: b64('x') }), 403, /permission denied/, 'no token');
  await refused(client(otherTls, login.auth.client_token).encryptData({ name: key, plaintext: b64('x') }),
    403, /permission denied/, 'token with another certificate');
  console.log('node-vault: all checks passed');
}

main().catch((e) => {
  console.error('FAILED:', e && e.stack ? e.stack : e);
  process.exit(1);
});
