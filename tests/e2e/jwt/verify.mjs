// Verifies a kmsd token the way any service would: jose fetches the JWKS over HTTPS
// (the dev CA comes through NODE_EXTRA_CA_CERTS) and checks the ES256 signature, exp
// and iss. Usage: node verify.mjs JWKS_URL ISSUER TOKEN
// Prints the payload as JSON and exits 0 when valid; prints the error and exits 1 otherwise.
import { createRemoteJWKSet, jwtVerify } from 'jose';

const [jwksUrl, issuer, token] = process.argv.slice(2);
try {
  const jwks = createRemoteJWKSet(new URL(jwksUrl));
  const { payload, protectedHeader } = await jwtVerify(token, jwks, {
    issuer,
    algorithms: ['ES256'],
  });
  console.log(JSON.stringify({ kid: protectedHeader.kid, payload }));
  process.exit(0);
} catch (e) {
  console.log(`rejected: ${e.code || e.name}: ${e.message}`);
  process.exit(1);
}
