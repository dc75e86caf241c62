// A real OAuth 2.0 / OpenID Connect server (panva's oidc-provider) for tests and `make run`.
//
//   node devhost/oidc_server.mjs CONFIG.json
//
// CONFIG.json:
//   host, port, mount_path ("/" or "/op"), issuer (the public base URL including the mount
//   path), tls?: {cert_file, key_file}, clients: [{client_id, client_secret, redirect_uris,
//   grant_types?, token_endpoint_auth_method?}], scopes, ttl?: {access_token, refresh_token,
//   authorization_code, id_token, interaction, session, grant}, rotate_refresh_token?,
//   pkce_required?, entra_claims? (answer as Entra does: oid and tid, and the profile claims
//   in the ID token itself, where a spec-conforming server puts them only in userinfo; and
//   a granted `{resource}/.default` answered with that resource's permissions),
//   entra_permissions? ({resource: [permission]}: what `.default` stands for, per resource;
//   `user_impersonation` for a resource not listed)
//
// Prints `READY <base url>` on stdout once listening; everything else goes to stderr.
//
// /__control/* (outside the mount path) lets a test harness read counters, inject failures and
// change the access token TTL. It has no authentication: it exists for tests and the local demo
// only and must never be exposed beyond 127.0.0.1.
//   GET  /__control/stats           counters (see emptyStats) from provider events
//   POST /__control/reset           zero the counters
//   POST /__control/fail            {endpoint: token|revocation|introspection, status, count?,
//                                    retry_after?, error?, error_description?, error_codes?,
//                                    delay_ms?}: the next `count` POSTs there get `status` and an
//                                    OAuth error body without reaching the provider; status null
//                                    + delay_ms only delays them. With error_codes ([70008]) the
//                                    body is Entra's: AADSTS in the description, error_codes,
//                                    timestamp, trace_id, correlation_id, error_uri
//   POST /__control/clear_failures  drop queued failures
//   POST /__control/ttl             {access_token?, refresh_token?} seconds, for new tokens

import { createHash, generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';

// oidc-provider prints notices with console.info; stdout is reserved for the READY line.
console.info = console.error;
console.log = console.error;

const { default: Provider } = await import('oidc-provider');

const DAY = 24 * 60 * 60;
const FAILABLE = new Set(['token', 'revocation', 'introspection']);

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const mountPath = normaliseMount(config.mount_path ?? '/');
const ttlConfig = config.ttl ?? {};

// Mutable at runtime through /__control/ttl; read for every token issued.
const ttl = {
  accessToken: ttlConfig.access_token ?? 3600,
  refreshToken: ttlConfig.refresh_token ?? 14 * DAY,
};

let stats = emptyStats();
// endpoint -> [{status, error, error_description, retry_after, delay_ms}], consumed in order.
const failures = new Map();

function normaliseMount(path) {
  const trimmed = path.replace(/\/+$/, '');
  return trimmed === '' ? '' : (trimmed.startsWith('/') ? trimmed : `/${trimmed}`);
}

function emptyStats() {
  return {
    grants: { authorization_code: 0, refresh_token: 0 },
    grant_errors: {},
    grants_revoked: 0,
    revocations: 0,
    revocation_errors: {},
    introspections: 0,
    introspection_errors: {},
    injected_failures: {},
  };
}

function bump(counter, key) {
  counter[key] = (counter[key] ?? 0) + 1;
}

function signingKey() {
  // A fresh key per process: tokens do not survive a restart anyway (in-memory adapter).
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), use: 'sig', alg: 'RS256' };
}

function clientMetadata(client) {
  return {
    client_id: client.client_id,
    client_secret: client.client_secret,
    redirect_uris: client.redirect_uris,
    grant_types: client.grant_types ?? ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: client.token_endpoint_auth_method ?? 'client_secret_basic',
  };
}

const entraClaims = config.entra_claims ?? false;
const TENANT = '72f988bf-86f1-41af-91ab-2d7cd011db47';

function objectId(sub) {
  // A stable GUID-shaped id per account, as Entra's oid is.
  const hex = createHash('sha256').update(`oid:${sub}`).digest('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

function account(sub) {
  return {
    accountId: sub,
    async claims() {
      const claims = {
        sub,
        name: sub,
        preferred_username: sub,
        email: sub.includes('@') ? sub : `${sub}@example.test`,
        email_verified: true,
      };
      return entraClaims ? { ...claims, oid: objectId(sub), tid: TENANT } : claims;
    },
  };
}

const pkceRequired = config.pkce_required ?? true;
const entraPermissions = config.entra_permissions ?? {};

// Entra never echoes `.default`: it answers with the delegated permissions consented for that
// resource (providers.md §8; learn.microsoft.com "Scopes and permissions", "The .default scope").
function concreteScopes(scope) {
  return scope.split(' ').flatMap((s) => {
    if (!s.endsWith('/.default')) return [s];
    const resource = s.slice(0, -'/.default'.length);
    return (entraPermissions[resource] ?? ['user_impersonation']).map((p) => `${resource}/${p}`);
  }).join(' ');
}

const provider = new Provider(config.issuer, {
  clients: (config.clients ?? []).map(clientMetadata),
  scopes: config.scopes ?? ['openid', 'offline_access'],
  claims: {
    openid: entraClaims ? ['sub', 'oid', 'tid'] : ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
  },
  // Authorization code flow only: discovery then advertises no implicit grant.
  responseTypes: ['code'],
  findAccount: (_ctx, sub) => account(sub),
  // Entra puts the profile claims in the ID token; oidc-provider, as the spec says, in userinfo.
  conformIdTokenClaims: !entraClaims,
  jwks: { keys: [signingKey()] },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  features: {
    devInteractions: { enabled: true },
    revocation: { enabled: true },
    introspection: { enabled: true },
  },
  // v9 implements S256 only; `required` decides whether a missing code_challenge is refused.
  pkce: { required: () => pkceRequired },
  // true: every use rotates, confidential clients included. false: never rotate (the same
  // refresh token is returned), which is how some providers behave.
  rotateRefreshToken: config.rotate_refresh_token ?? true,
  ttl: {
    AccessToken: () => ttl.accessToken,
    RefreshToken: () => ttl.refreshToken,
    AuthorizationCode: () => ttlConfig.authorization_code ?? 60,
    IdToken: () => ttlConfig.id_token ?? 3600,
    Interaction: () => ttlConfig.interaction ?? 3600,
    Session: () => ttlConfig.session ?? 14 * DAY,
    // A grant must outlive its refresh tokens, or refreshing fails once the grant expires.
    Grant: () => ttlConfig.grant ?? Math.max(14 * DAY, ttl.refreshToken),
  },
});

provider.on('grant.success', (ctx) => bump(stats.grants, ctx.oidc.params.grant_type));
provider.on('grant.error', (_ctx, err) => bump(stats.grant_errors, err.error ?? 'unknown'));
provider.on('grant.revoked', () => { stats.grants_revoked += 1; });
provider.on('revocation.error', (_ctx, err) => bump(stats.revocation_errors, err.error ?? 'unknown'));
provider.on('introspection.error', (_ctx, err) => bump(stats.introspection_errors, err.error ?? 'unknown'));
provider.on('server_error', (_ctx, err) => console.error('oidc-provider server_error', err));

// 9.x emits no success events for revocation and introspection: count finished requests.
provider.use(async (ctx, next) => {
  await next();
  if (ctx.status !== 200) return;
  if (ctx.oidc?.route === 'revocation') stats.revocations += 1;
  if (ctx.oidc?.route === 'introspection') stats.introspections += 1;
});

provider.use(async (ctx, next) => {
  await next();
  if (!entraClaims || ctx.oidc?.route !== 'token' || ctx.status !== 200) return;
  if (typeof ctx.body?.scope === 'string') ctx.body = { ...ctx.body, scope: concreteScopes(ctx.body.scope) };
});

const providerCallback = provider.callback();
const failPaths = new Map(
  [...FAILABLE].map((endpoint) => [provider.pathFor(endpoint, { mountPath }), endpoint]),
);

function sendJson(res, status, body, headers = {}) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString('utf8');
  return text ? JSON.parse(text) : {};
}

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

function queueFailure(body) {
  if (!FAILABLE.has(body.endpoint)) {
    throw new Error(`endpoint must be one of ${[...FAILABLE].join(', ')}`);
  }
  const status = body.status ?? null;
  if (status === null && !body.delay_ms) throw new Error('give status, delay_ms or both');
  const count = body.count ?? 1;
  const error = body.error ?? (status === 429 || status === 503 ? 'temporarily_unavailable' : 'server_error');
  const queue = failures.get(body.endpoint) ?? [];
  for (let i = 0; i < count; i += 1) {
    queue.push({
      status,
      error,
      error_description: body.error_description ?? `injected by /__control/fail (${status})`,
      retry_after: body.retry_after ?? null,
      delay_ms: body.delay_ms ?? 0,
      error_codes: body.error_codes ?? null,
    });
  }
  failures.set(body.endpoint, queue);
  return queue.length;
}

async function control(req, res, path) {
  const route = `${req.method} ${path}`;
  try {
    if (route === 'GET /__control/stats') return sendJson(res, 200, stats);
    if (route === 'POST /__control/reset') {
      stats = emptyStats();
      return sendJson(res, 200, stats);
    }
    if (route === 'POST /__control/fail') {
      const pending = queueFailure(await readJson(req));
      return sendJson(res, 200, { pending });
    }
    if (route === 'POST /__control/clear_failures') {
      failures.clear();
      return sendJson(res, 200, { pending: 0 });
    }
    if (route === 'POST /__control/ttl') {
      const body = await readJson(req);
      if (body.access_token !== undefined) ttl.accessToken = Number(body.access_token);
      if (body.refresh_token !== undefined) ttl.refreshToken = Number(body.refresh_token);
      return sendJson(res, 200, { access_token: ttl.accessToken, refresh_token: ttl.refreshToken });
    }
    return sendJson(res, 404, { error: 'not_found', error_description: route });
  } catch (err) {
    return sendJson(res, 400, { error: 'invalid_request', error_description: String(err.message ?? err) });
  }
}

// Answers the request itself when a failure is queued for its endpoint; true if it did.
async function injectedFailure(req, res, path) {
  const endpoint = req.method === 'POST' ? failPaths.get(path) : undefined;
  const failure = endpoint && failures.get(endpoint)?.shift();
  if (!failure) return false;
  if (failure.delay_ms) await sleep(failure.delay_ms);
  if (failure.status === null) return false; // a delay only: let the provider answer
  bump(stats.injected_failures, endpoint);
  req.resume(); // discard the body so the connection stays usable
  const headers = failure.retry_after === null ? {} : { 'retry-after': String(failure.retry_after) };
  sendJson(res, failure.status, failureBody(failure), headers);
  return true;
}

// Entra's token error body (learn.microsoft.com "Microsoft Entra authentication and authorization
// error codes", "Handling error codes in your application"; providers.md §3): the first code as
// AADSTS in the description, followed by trace lines, and every code in error_codes.
function failureBody(failure) {
  if (!failure.error_codes) return { error: failure.error, error_description: failure.error_description };
  const timestamp = new Date().toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
  const [traceId, correlationId] = [randomUUID(), randomUUID()];
  const first = failure.error_codes[0];
  return {
    error: failure.error,
    error_description: `AADSTS${first}: ${failure.error_description}\r\nTrace ID: ${traceId}\r\n`
      + `Correlation ID: ${correlationId}\r\nTimestamp: ${timestamp}`,
    error_codes: failure.error_codes,
    timestamp,
    trace_id: traceId,
    correlation_id: correlationId,
    error_uri: `${config.issuer}/error?code=${first}`,
  };
}

async function handle(req, res) {
  const path = new URL(req.url, 'http://x').pathname;
  if (path === '/__control' || path.startsWith('/__control/')) return control(req, res, path);
  if (await injectedFailure(req, res, path)) return undefined;
  if (mountPath) {
    if (path !== mountPath && !path.startsWith(`${mountPath}/`)) {
      return sendJson(res, 404, { error: 'not_found', error_description: `outside ${mountPath}` });
    }
    // oidc-provider derives its mount path from originalUrl minus url (as under express).
    req.originalUrl = req.url;
    req.url = req.url.slice(mountPath.length) || '/';
  }
  return providerCallback(req, res);
}

function onRequest(req, res) {
  handle(req, res).catch((err) => {
    console.error('request failed', err);
    if (!res.headersSent) sendJson(res, 500, { error: 'server_error', error_description: 'harness error' });
    else res.destroy();
  });
}

const server = config.tls
  ? https.createServer({
    cert: readFileSync(config.tls.cert_file),
    key: readFileSync(config.tls.key_file),
  }, onRequest)
  : http.createServer(onRequest);

function shutdown(signal) {
  console.error(`oidc server: ${signal}, closing`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}

process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));

server.listen(config.port, config.host ?? '127.0.0.1', () => {
  const { port } = server.address();
  const scheme = config.tls ? 'https' : 'http';
  process.stdout.write(`READY ${scheme}://${config.host ?? '127.0.0.1'}:${port}\n`);
});
