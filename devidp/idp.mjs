// Development OpenID Provider for cnpg-mcp: tests and `scripts/run`. Never for production.
//
// Built on oidc-provider 9.x. Issues JWT access tokens (RFC 9068) for resource indicators (RFC 8707), supports
// client_credentials, open dynamic client registration and authorization_code + PKCE with a headless dev
// interaction that logs in a fixed user and grants what was asked, so OAuth clients can run without a browser.
//
// Usage: node devidp/idp.mjs --port 9400 [--host 127.0.0.1] [--issuer URL] [--resource URL|PREFIX*]...
//          [--clients-file PATH] [--keys-file PATH] [--rotate] [--alg RS256|ES256] [--ttl SECONDS]
// Environment fallbacks: DEVIDP_PORT, DEVIDP_HOST, DEVIDP_ISSUER, DEVIDP_RESOURCES (space-separated),
// DEVIDP_CLIENTS_FILE, DEVIDP_KEYS_FILE, DEVIDP_ALG.
// The clients file holds one pre-registered client_credentials client per line, `ID:SECRET` (blank lines and
// lines starting with # are skipped). Secrets come only from that file: a secret in argv would be visible to every
// user of the machine in `ps`.
// Prints one JSON line {"issuer", "jwks_uri", "port", "kids"} on stdout once it listens; a port already in use
// is one line on stderr and exit status 2.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

// oidc-provider lives in the project's tools/node/node_modules (or wherever NODE_PATH points in a container).
async function loadProvider() {
  const candidates = [
    path.join(here, '..', 'tools', 'node', 'package.json'),
    path.join(process.cwd(), 'package.json'),
    ...(process.env.NODE_PATH || '').split(path.delimiter).filter(Boolean).map((p) => path.join(p, 'x.js')),
  ];
  for (const base of candidates) {
    try {
      const resolved = createRequire(base).resolve('oidc-provider');
      return await import(resolved);
    } catch {
      // try the next location
    }
  }
  return import('oidc-provider');
}

function parseArgs(argv) {
  const env = process.env;
  const opts = {
    port: Number(env.DEVIDP_PORT || 9400),
    host: env.DEVIDP_HOST || '127.0.0.1',
    issuer: env.DEVIDP_ISSUER || '',
    resources: (env.DEVIDP_RESOURCES || '').split(/\s+/).filter(Boolean),
    clientsFile: env.DEVIDP_CLIENTS_FILE || '',
    keysFile: env.DEVIDP_KEYS_FILE || '',
    rotate: false,
    alg: env.DEVIDP_ALG || 'RS256',
    ttl: 600,
  };
  for (let i = 2; i < argv.length; i += 1) {
    const arg = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${arg} needs a value`);
      i += 1;
      return argv[i];
    };
    switch (arg) {
      case '--port': opts.port = Number(next()); break;
      case '--host': opts.host = next(); break;
      case '--issuer': opts.issuer = next(); break;
      case '--resource': case '--audience': opts.resources.push(next()); break;
      case '--clients-file': opts.clientsFile = next(); break;
      case '--client': throw new Error('--client is not accepted (a secret in argv is visible in ps): use --clients-file');
      case '--keys-file': opts.keysFile = next(); break;
      case '--rotate': opts.rotate = true; break;
      case '--alg': opts.alg = next(); break;
      case '--ttl': opts.ttl = Number(next()); break;
      default: throw new Error(`unknown argument ${arg}`);
    }
  }
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) throw new Error('--port must be a port');
  if (!['RS256', 'ES256'].includes(opts.alg)) throw new Error('--alg must be RS256 or ES256');
  if (!Number.isInteger(opts.ttl) || opts.ttl <= 0) throw new Error('--ttl must be a positive integer');
  if (!opts.issuer) opts.issuer = `http://${opts.host}:${opts.port}`;
  if (opts.resources.length === 0) opts.resources.push('http://127.0.0.1:*');
  opts.clients = opts.clientsFile ? readClients(opts.clientsFile) : [];
  return opts;
}

function readClients(file) {
  let text;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`cannot read the clients file ${file}: ${err.code || err.message}`);
  }
  return text.split('\n').map((line) => line.trim()).filter((line) => line && !line.startsWith('#'));
}

function generateKey(alg) {
  const pair = alg === 'ES256'
    ? crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' })
    : crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = pair.privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: `${alg.toLowerCase()}-${crypto.randomBytes(6).toString('hex')}`, alg, use: 'sig' };
}

// Keys persist in a file so a restarted IdP still verifies as the same issuer; --rotate adds a new RS256 and
// ES256 key in front (the first key of an algorithm signs; older keys stay published until removed from the file).
function loadKeys(opts) {
  let keys = [];
  if (opts.keysFile && fs.existsSync(opts.keysFile)) {
    keys = JSON.parse(fs.readFileSync(opts.keysFile, 'utf8')).keys;
  }
  if (keys.length === 0 || opts.rotate) {
    keys = [generateKey('RS256'), generateKey('ES256'), ...keys];
    if (opts.keysFile) {
      fs.writeFileSync(opts.keysFile, JSON.stringify({ keys }, null, 2), { mode: 0o600 });
    }
  }
  return keys;
}

function resourceAllowed(resources, resource) {
  return resources.some((r) => (r.endsWith('*') ? resource.startsWith(r.slice(0, -1)) : resource === r));
}

const DEV_ACCOUNT = 'dev-user';
const SCOPES = ['openid', 'offline_access', 'cnpg:read', 'cnpg:write'];
const RESOURCE_SCOPES = 'openid cnpg:read cnpg:write';

async function main() {
  const opts = parseArgs(process.argv);
  const { default: Provider, errors } = await loadProvider();
  const keys = loadKeys(opts);
  const clients = opts.clients.map((spec) => {
    const idx = spec.indexOf(':');
    if (idx <= 0 || idx === spec.length - 1) throw new Error('each line of the clients file must be ID:SECRET');
    return {
      client_id: spec.slice(0, idx),
      client_secret: spec.slice(idx + 1),
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
    };
  });

  const provider = new Provider(opts.issuer, {
    jwks: { keys },
    clients,
    scopes: SCOPES,
    claims: { openid: ['sub'] },
    cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
    clientBasedCORS: () => true,
    findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      registration: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // Clients that send no resource indicator get a token for the first exact --resource, if any.
        defaultResource: async (_ctx, _client, oneOf) => oneOf ?? opts.resources.find((r) => !r.endsWith('*')),
        useGrantedResource: async () => true,
        getResourceServerInfo: async (ctx, resource) => {
          if (!resourceAllowed(opts.resources, resource)) {
            throw new errors.InvalidTarget();
          }
          // A dev-only token-request field lets tests ask for an ES256-signed token.
          const requested = ctx.oidc?.body?.dev_alg;
          const alg = ['RS256', 'ES256'].includes(requested) ? requested : opts.alg;
          return {
            scope: RESOURCE_SCOPES,
            audience: resource,
            accessTokenFormat: 'jwt',
            accessTokenTTL: opts.ttl,
            jwt: { sign: { alg } },
          };
        },
      },
    },
    ttl: {
      AccessToken: opts.ttl,
      ClientCredentials: opts.ttl,
      IdToken: 3600,
      Interaction: 600,
      Session: 3600,
      Grant: 3600,
      RefreshToken: 86400,
    },
    enabledJWA: {
      idTokenSigningAlgValues: ['RS256', 'ES256'],
    },
  });

  provider.on('server_error', (_ctx, err) => {
    process.stderr.write(`${JSON.stringify({ event: 'server_error', error: err.message })}\n`);
  });
  for (const event of ['grant.error', 'registration_create.error']) {
    provider.on(event, (_ctx, err) => {
      process.stderr.write(`${JSON.stringify({ event, error: err.error || err.message })}\n`);
    });
  }

  // Headless dev interaction: whatever the prompt, log in DEV_ACCOUNT and grant every requested scope.
  async function interaction(req, res) {
    try {
      const details = await provider.interactionDetails(req, res);
      const { params, prompt } = details;
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId: DEV_ACCOUNT, clientId: params.client_id });
      if (params.scope) grant.addOIDCScope(params.scope);
      const resources = [params.resource || []].flat();
      for (const resource of resources) grant.addResourceScope(resource, params.scope || RESOURCE_SCOPES);
      const missing = prompt?.details?.missingResourceScopes || {};
      for (const [resource, scopes] of Object.entries(missing)) grant.addResourceScope(resource, scopes.join(' '));
      const grantId = await grant.save();
      await provider.interactionFinished(req, res, {
        login: { accountId: DEV_ACCOUNT },
        consent: { grantId },
      }, { mergeWithLastSubmission: false });
    } catch (err) {
      res.statusCode = 400;
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({ error: 'interaction_failed', error_description: err.message }));
    }
  }

  const callback = provider.callback();
  const server = http.createServer((req, res) => {
    if (req.url.startsWith('/interaction/')) {
      interaction(req, res);
      return;
    }
    callback(req, res);
  });
  server.keepAliveTimeout = 5000;

  const stop = () => {
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
    server.closeAllConnections();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);

  server.on('error', (err) => {
    if (err.code === 'EADDRINUSE') {
      process.stderr.write(`devidp: port ${opts.port} on ${opts.host} is already in use; choose another `
        + '(scripts/run: IDP_PORT=9401 scripts/run)\n');
      process.exit(2);
    }
    process.stderr.write(`devidp: cannot listen on ${opts.host}:${opts.port}: ${err.code || err.message}\n`);
    process.exit(1);
  });
  server.listen(opts.port, opts.host, () => {
    const { port } = server.address();
    process.stdout.write(`${JSON.stringify({
      issuer: opts.issuer,
      jwks_uri: `${opts.issuer}/jwks`,
      port,
      kids: keys.map((k) => k.kid),
    })}\n`);
  });
}

main().catch((err) => {
  process.stderr.write(`devidp: ${err.message}\n`);
  process.exit(1);
});
