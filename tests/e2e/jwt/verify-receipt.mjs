// Verifies a kmsd shred receipt the way an auditor would, with jose and nothing of
// kmsd's: the keys come from kmsd's HTTPS receipt-key set (the dev CA through
// NODE_EXTRA_CA_CERTS), the signature must be ES256, the header's typ must be
// "kmsd-shred-receipt+jwt" (so an access token is refused) and iss must match.
// Usage: node verify-receipt.mjs RECEIPT_KEYS_URL ISSUER JWS
// Prints {"kid":...,"typ":...,"payload":{...}} and exits 0 when valid; prints the
// error and exits 1 otherwise.
import { createRemoteJWKSet, jwtVerify } from 'jose';

const [keysUrl, issuer, jws] = process.argv.slice(2);
try {
  const keys = createRemoteJWKSet(new URL(keysUrl));
  const { payload, protectedHeader } = await jwtVerify(jws, keys, {
    issuer,
    typ: 'kmsd-shred-receipt+jwt',
    algorithms: ['ES256'],
  });
  console.log(JSON.stringify({ kid: protectedHeader.kid, typ: protectedHeader.typ, payload }));
  process.exit(0);
} catch (e) {
  console.log(`rejected: ${e.code || e.name}: ${e.message}`);
  process.exit(1);
}
