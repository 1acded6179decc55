// The benchmark's peer: node-oidc-provider 9.x with one client_credentials client (client_secret_basic),
// its in-memory adapter (the default), opaque tokens when no resource is requested, and JWT access
// tokens through the resource-indicators feature: resource https://rs256.bench/ gives RS256 JWTs,
// https://es256.bench/ gives ES256 JWTs, https://api.example.com/ as PEER_API_ALG says.
// Usage: PEER_PORT=8123 PEER_API_ALG=ES256 node server.mjs
import { generateKeyPairSync } from 'node:crypto';

import Provider from 'oidc-provider';

const port = Number(process.env.PEER_PORT || 3000);
const issuer = `http://127.0.0.1:${port}`;

function signingKey(type, options, alg, kid) {
  const { privateKey } = generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), alg, use: 'sig', kid };
}

const resources = {
  'https://rs256.bench/': 'RS256',
  'https://es256.bench/': 'ES256',
  // fhirbox's resource rows send exactly this; PEER_API_ALG (RS256 or ES256) picks the key.
  'https://api.example.com/': process.env.PEER_API_ALG || 'RS256',
};

const configuration = {
  clients: [
    {
      client_id: 'bench',
      client_secret: 'bench-secret',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  jwks: {
    keys: [
      signingKey('rsa', { modulusLength: 2048 }, 'RS256', 'rs256'),
      signingKey('ec', { namedCurve: 'P-256' }, 'ES256', 'es256'),
    ],
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (ctx, client, oneOf) => oneOf,
      useGrantedResource: async () => false,
      getResourceServerInfo: async (ctx, resourceIndicator) => {
        const alg = resources[resourceIndicator];
        if (!alg) throw new Provider.errors.InvalidTarget();
        return {
          scope: 'api',
          audience: resourceIndicator,
          accessTokenTTL: 3600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg } },
        };
      },
    },
  },
  ttl: { ClientCredentials: 3600 },
};

const provider = new Provider(issuer, configuration);
provider.listen(port, '127.0.0.1', () => {
  console.log(`peer listening on ${issuer}`);
});
