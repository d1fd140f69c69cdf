// Test-only OpenID provider for Gatehouse, built on `oidc-provider`.
//
// It plays the external identity provider: it issues RFC 9068 JWT access
// tokens (typ "at+jwt", RS256, aud = AUDIENCE) and ordinary ID tokens, all
// signed with a key the Python test fixture generates and passes in, so tests
// can also forge tokens with that same key.
//
// Environment:
//   PORT          port to listen on (127.0.0.1 only)
//   ISSUER        issuer URL, e.g. http://127.0.0.1:PORT
//   AUDIENCE      resource indicator / access-token audience (absolute URL)
//   JWKS_PRIVATE  JSON private JWKS ({"keys": [...]}) used for signing
//   CLIENTS_JSON  optional JSON array of extra client metadata objects
//   RESOURCE_SCOPES optional space-separated scopes of the resource server
//                   (default "mcp")
//
// Ways to get tokens without a browser:
//   POST /token grant_type=urn:gatehouse:test:mint (client gatehouse-test,
//   client_secret_basic, secret "gatehouse-test-secret") with user, org, roles (space separated),
//   resource=AUDIENCE, and optionally scope containing "openid" to also
//   receive an ID token. Tokens are minted and signed by oidc-provider itself.
//
// The authorization code + PKCE flow stays available through devInteractions
// (any login / password is accepted; the login becomes `sub`).
//
// Prints "READY <issuer>" on stdout once listening.

import Provider, { errors } from 'oidc-provider';

const MINT_GRANT = 'urn:gatehouse:test:mint';
const TEST_CLIENT_ID = 'gatehouse-test';
const TEST_CLIENT_SECRET = 'gatehouse-test-secret';

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`missing required env var ${name}`);
    process.exit(2);
  }
  return value;
}

const PORT = Number(required('PORT'));
const ISSUER = required('ISSUER');
const AUDIENCE = required('AUDIENCE');
const JWKS = JSON.parse(required('JWKS_PRIVATE'));
const EXTRA_CLIENTS = process.env.CLIENTS_JSON ? JSON.parse(process.env.CLIENTS_JSON) : [];
const RESOURCE_SCOPES = process.env.RESOURCE_SCOPES || 'mcp';

// Organisation and roles per user, remembered from mint requests so the
// authorization code flow for the same user carries the same claims.
const accounts = new Map();

function accountProfile(accountId) {
  return accounts.get(accountId) ?? { org_id: undefined, roles: undefined };
}

function resourceServerInfo() {
  return {
    scope: RESOURCE_SCOPES,
    audience: AUDIENCE,
    accessTokenTTL: 3600,
    accessTokenFormat: 'jwt',
    jwt: { sign: { alg: 'RS256' } },
  };
}

const configuration = {
  jwks: JWKS,
  clients: [
    {
      client_id: TEST_CLIENT_ID,
      client_secret: TEST_CLIENT_SECRET,
      grant_types: [MINT_GRANT, 'authorization_code', 'refresh_token', 'client_credentials'],
      response_types: ['code'],
      redirect_uris: ['http://127.0.0.1/callback'],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'RS256',
    },
    ...EXTRA_CLIENTS,
  ],
  cookies: { keys: ['gatehouse-test-idp-cookie-key'] },
  claims: {
    openid: ['sub'],
    gatehouse: ['org_id', 'roles'],
  },
  scopes: ['openid', 'offline_access', 'gatehouse'],
  async findAccount(_ctx, id) {
    return {
      accountId: id,
      async claims() {
        return { sub: id, ...accountProfile(id) };
      },
    };
  },
  // Minted tokens keep the org_id / roles given to the mint grant (their
  // `extra` is replaced by this function's result, so hand it back);
  // code-flow access tokens get the profile last minted for that user.
  async extraTokenClaims(_ctx, token) {
    if (token.extra && token.extra.org_id !== undefined) return token.extra;
    if (token.kind !== 'AccessToken' || !token.accountId) return undefined;
    const profile = accountProfile(token.accountId);
    return profile.org_id === undefined ? undefined : { ...profile };
  },
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // Gatehouse's own test client gets JWT access tokens for the gateway; clients that play
      // a third-party app (the connect flow) get plain tokens that userinfo accepts.
      defaultResource: (_ctx, client) => (client?.clientId === TEST_CLIENT_ID ? AUDIENCE : undefined),
      useGrantedResource: (_ctx, model) => model?.clientId === TEST_CLIENT_ID,
      async getResourceServerInfo(_ctx, resourceIndicator) {
        if (resourceIndicator !== AUDIENCE) {
          throw new errors.InvalidTarget(`unknown resource ${resourceIndicator}`);
        }
        return resourceServerInfo();
      },
    },
  },
  ttl: {
    AccessToken: 3600,
    AuthorizationCode: 60,
    IdToken: 3600,
    Interaction: 600,
    Session: 3600,
    Grant: 3600,
    ClientCredentials: 3600,
    RefreshToken: 86400,
  },
};

const provider = new Provider(ISSUER, configuration);

// Custom grant: mint tokens for an arbitrary (org, user, roles) without a
// browser. Everything is issued through oidc-provider's own token models.
provider.registerGrantType(
  MINT_GRANT,
  async (ctx) => {
    const { params, client } = ctx.oidc;
    const user = params.user;
    const org = params.org;
    if (!user || !org) {
      throw new errors.InvalidRequest('user and org are required');
    }
    const roles = (params.roles ?? 'member').split(' ').filter(Boolean);
    const resource = params.resource ?? AUDIENCE;
    if (resource !== AUDIENCE) {
      throw new errors.InvalidTarget(`unknown resource ${resource}`);
    }
    accounts.set(user, { org_id: org, roles });

    const resourceServer = new provider.ResourceServer(resource, resourceServerInfo());
    const requested = new Set((params.scope ?? '').split(' ').filter(Boolean));
    const rsScope = [...requested].filter((s) => resourceServer.scopes.has(s));
    const accessToken = new provider.AccessToken({
      accountId: user,
      client,
      gty: MINT_GRANT,
      scope: (rsScope.length ? rsScope : [...resourceServer.scopes]).join(' ') || undefined,
      extra: { org_id: org, roles },
    });
    accessToken.resourceServer = resourceServer;
    ctx.oidc.entity('AccessToken', accessToken);
    const value = await accessToken.save();

    const body = {
      access_token: value,
      token_type: accessToken.tokenType,
      expires_in: accessToken.expiration,
      scope: accessToken.scope,
    };

    if (requested.has('openid')) {
      const idToken = new provider.IdToken({ sub: user }, { ctx });
      idToken.scope = 'openid';
      idToken.set('org_id', org);
      idToken.set('roles', roles);
      if (params.nonce) idToken.set('nonce', params.nonce);
      body.id_token = await idToken.issue({ use: 'idtoken' });
    }

    ctx.body = body;
  },
  ['user', 'org', 'roles', 'scope', 'resource', 'nonce'],
);

provider.on('server_error', (_ctx, err) => {
  console.error('server_error', err);
});

const server = provider.listen(PORT, '127.0.0.1', () => {
  console.log(`READY ${ISSUER}`);
});

function shutdown() {
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
