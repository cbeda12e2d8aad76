"""Look-alikes of real identity providers' JWK Sets and tokens, with keys made per test session.

Each provider is a function returning a `Provider`: the members its JWKS really carries
(beside the signing key: encryption keys, other key types, `x5c`, `issuer`, ...), the
headers and claims of its tokens as its documentation shows them, its Cache-Control, and
the PG_SESSION_JWT_ISSUERS entry (the README's recipe) that makes this extension accept
them. Only the shapes are copied; every key and value is generated here. The sources are
the providers' public documentation (cited in each docstring) as catalogued in
/work/shared/identity-providers.md.

`Provider.token()` mints a token as the provider would, with claims changed on request.
"""

import base64
import hashlib
import json
import os
import time
import uuid

from jwcrypto import jwk

from devtools.jwt import generate_key
from tests.support.jws import sign


def _b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _rsa(kid, alg="RS256", size=2048):
    key = jwk.JWK.generate(kty="RSA", size=size, kid=kid, alg=alg)
    return key


def _public(key, **members):
    """The public JWK of `key` with a provider's own member set: `members` are added,
    a member set to None is removed."""
    value = key.export_public(as_dict=True)
    value.update(members)
    return {k: v for k, v in value.items() if v is not None}


def _cert_members():
    """x5c/x5t/x5t#S256 as providers publish them: a (here random) DER blob and its digests;
    the extension ignores them and verifies with n/e."""
    der = os.urandom(700)
    return {"x5c": [base64.b64encode(der).decode()],
            "x5t": _b64(hashlib.sha1(der).digest()),  # noqa: S324 (a thumbprint, as published)
            "x5t#S256": _b64(hashlib.sha256(der).digest())}


def _ulid():
    return uuid.uuid4().hex[:26].upper()


class Provider:
    """One identity provider's look-alike."""

    def __init__(self, name, issuer, signing_key, members, entry, claims, header=None,
                 cache_control="max-age=300", user=None, header_text=None):
        self.name = name
        self.issuer = issuer
        self.signing_key = signing_key       # private jwcrypto JWK that signs its tokens
        self.members = members               # the JWKS's "keys", in the provider's order
        self.entry = entry                   # PG_SESSION_JWT_ISSUERS entry without the keys
        self.claims = claims                 # the token's claims (a function of now)
        self.header = header or {}           # header members beyond alg
        self.header_text = header_text       # the header's exact JSON text, when it matters
        self.cache_control = cache_control
        self.user = user                     # what auth.user_id() must return

    def jwks(self):
        return json.dumps({"keys": self.members})

    def issuer_entry(self, **where):
        """The entry with its key source: jwks_url=... or jwk=... in `where`."""
        return {**self.entry, **where}

    def token(self, key=None, header=None, now=None, **changes):
        """A token as the provider signs it at `now` (default: the time); `changes` replace
        claims (None removes one)."""
        key = key or self.signing_key
        now = int(time.time() if now is None else now)
        claims = {**self.claims(now), **changes}
        claims = {k: v for k, v in claims.items() if v is not None}
        alg = key.get("alg") or self.signing_key.get("alg")
        if header is None and self.header_text is not None and key is self.signing_key:
            header = self.header_text
        if header is None:
            header = {"alg": alg, **self.header}
            if key.get("kid"):
                header.setdefault("kid", key.get("kid"))
        payload = json.dumps(claims)
        if self.name.startswith("Cognito"):
            payload = payload.replace("/", "\\/")  # Cognito escapes slashes
        return sign(key, payload, header=header, alg=alg)

    def __repr__(self):
        return f"Provider({self.name!r})"


def auth0():
    """Auth0 access token, default profile. JWKS: https://{tenant}/.well-known/jwks.json with
    alg/kty/use/x5c/n/e/kid/x5t, current and next key (auth0.com/docs/secure/tokens/
    json-web-tokens/json-web-key-sets, .../signing-keys/rotate-signing-keys). `iss` ends
    with "/"; `aud` is an array with the /userinfo URL when openid was asked; no jti/nbf
    (auth0.com/docs/secure/tokens/access-tokens/access-token-profiles)."""
    tenant = f"https://t{uuid.uuid4().hex[:8]}.auth0.example/"
    current, following = _rsa(_b64(os.urandom(16))[:21]), _rsa(_b64(os.urandom(16))[:21])
    members = [_public(k, use="sig", **_cert_members()) for k in (current, following)]
    sub = "auth0|" + uuid.uuid4().hex[:24]
    return Provider(
        "Auth0", tenant, current, members,
        {"issuer": tenant, "audience": "https://api.example/db"},
        lambda now: {"iss": tenant, "sub": sub,
                     "aud": ["https://api.example/db", tenant + "userinfo"],
                     "azp": "client123", "iat": now, "exp": now + 600,
                     "scope": "openid profile read:db"},
        header={"typ": "JWT"}, user=sub)


def keycloak():
    """Keycloak 26 realm. JWKS {base}/realms/{realm}/protocol/openid-connect/certs holds
    the RS256 signing key AND, by default, an RSA-OAEP key with "use": "enc" (both with
    x5c/x5t/x5t#S256; keycloak/keycloak PR #5965; pyjwt#722, caddy-security#170). Header
    JSON has spaces around colons. Access token: aud "account" (or an audience mapper's
    value), azp the client, jti "onrtac:<uuid>" (Keycloak 26 upgrading notes)."""
    realm = f"https://kc.example/realms/r{uuid.uuid4().hex[:6]}"
    signing = _rsa(_b64(os.urandom(32)))
    encryption = _rsa(_b64(os.urandom(32)), alg="RSA-OAEP")
    members = [_public(signing, use="sig", **_cert_members()),
               _public(encryption, use="enc", **_cert_members())]
    sub = str(uuid.uuid4())
    header = f'{{"alg" : "RS256","typ" : "JWT","kid" : "{signing.get("kid")}"}}'
    return Provider(
        "Keycloak", realm, signing, members,
        {"issuer": realm, "audience": ["db-api"]},
        lambda now: {"exp": now + 300, "iat": now, "auth_time": now,
                     "jti": f"onrtac:{uuid.uuid4()}", "iss": realm, "aud": ["db-api", "account"],
                     "sub": sub, "typ": "Bearer", "azp": "web", "sid": str(uuid.uuid4()),
                     "realm_access": {"roles": ["default-roles"]}, "scope": "openid email"},
        header_text=header, cache_control="no-cache", user=sub)


def _entra(version):
    tenant = str(uuid.uuid4())
    keys_ = [_rsa(_b64(os.urandom(20))) for _ in range(3)]
    issuer = (f"https://sts.windows.net/{tenant}/" if version == 1
              else f"https://login.microsoftonline.com/{tenant}/v2.0")
    members = [_public(k, alg=None, use="sig", x5t=k.get("kid"),
                       x5c=_cert_members()["x5c"], cloud_instance_name="microsoftonline.com",
                       issuer="https://login.microsoftonline.com/{tenantid}/v2.0")
               for k in keys_]
    oid, app = str(uuid.uuid4()), str(uuid.uuid4())
    header = {"typ": "JWT"}
    if version == 1:
        header["x5t"] = keys_[0].get("kid")
    return Provider(
        f"Entra ID v{version}", issuer, keys_[0], members,
        {"issuer": issuer, "audience": f"api://{app}" if version == 1 else app,
         "user_id_claim": "oid"},
        lambda now: {"aud": f"api://{app}" if version == 1 else app, "iss": issuer,
                     "iat": now, "nbf": now, "exp": now + 3600, "oid": oid, "tid": tenant,
                     "sub": _b64(os.urandom(32)), "scp": "access_as_user",
                     "uti": _b64(os.urandom(16)), "ver": f"{version}.0",
                     **({"appid": app} if version == 1 else {"azp": app})},
        header=header, user=oid)


def entra_v1():
    """Entra ID v1.0 access token. JWKS .../{tenant}/discovery/keys: kty/use/kid/x5t/n/e/x5c
    and "issuer", NO "alg" (learn.microsoft.com/entra/identity-platform/access-tokens).
    Header carries x5t and kid; iss https://sts.windows.net/{tid}/ with a trailing slash;
    no jti (uti); sub is pairwise per application, the stable id is oid."""
    return _entra(1)


def entra_v2():
    """Entra ID v2.0 token. JWKS .../{tenant}/discovery/v2.0/keys, as v1 plus
    cloud_instance_name; iss https://login.microsoftonline.com/{tid}/v2.0; aud the client
    id; sub pairwise, oid stable (learn.microsoft.com/entra/identity-platform/access-tokens)."""
    return _entra(2)


def _cognito(kind):
    pool = f"https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_{uuid.uuid4().hex[:9]}"
    # Two keys, one for ID tokens, one for access tokens; kids are standard base64.
    id_key = _rsa(base64.b64encode(os.urandom(32)).decode())
    access_key = _rsa(base64.b64encode(os.urandom(32)).decode())
    members = [dict(sorted(_public(k, use="sig").items())) for k in (id_key, access_key)]
    client, sub, username = uuid.uuid4().hex[:26], str(uuid.uuid4()), f"user{uuid.uuid4().hex[:6]}"
    if kind == "id":
        entry = {"issuer": pool, "audience": client}

        def claims(now):
            return {"at_hash": "x", "sub": sub, "cognito:groups": ["g"], "iss": pool,
                    "cognito:username": username, "aud": client, "token_use": "id",
                    "auth_time": now, "exp": now + 3600, "iat": now, "email": "u@example.com"}
        key = id_key
    else:
        entry = {"issuer": pool, "audience": client, "audience_claim": "client_id",
                 "user_id_claim": "username"}

        def claims(now):
            return {"sub": sub, "cognito:groups": ["g"], "token_use": "access",
                    "scope": "openid profile", "auth_time": now, "iss": pool, "exp": now + 3600,
                    "iat": now, "version": 2, "jti": str(uuid.uuid4()), "client_id": client,
                    "username": username}
        key = access_key
    provider = Provider(f"Cognito {kind} token", pool, key, members, entry, claims,
                        header={}, user=sub if kind == "id" else username)
    return provider


def cognito_id():
    """Cognito user pool ID token. JWKS https://cognito-idp.{region}.amazonaws.com/{pool}/
    .well-known/jwks.json: alg/e/kid/kty/n/use only, two keys, kids standard base64 with
    + / =. Header {"kid", "alg"}, no typ; payload escapes slashes; aud the app client id
    (docs.aws.amazon.com/cognito/latest/developerguide/amazon-cognito-user-pools-using-the-id-token.html)."""
    return _cognito("id")


def cognito_access():
    """Cognito access token: no aud, the app client in client_id, the user name in username
    (docs.aws.amazon.com/cognito/latest/developerguide/amazon-cognito-user-pools-using-the-access-token.html)."""
    return _cognito("access")


def google():
    """Google id_token. JWKS https://www.googleapis.com/oauth2/v3/certs: kty/use/alg/kid
    (40 hex)/n/e, three keys; honour max-age (google-auth-library-python id_token.py).
    iss https://accounts.google.com, aud the client id, sub a numeric string, nbf and jti."""
    keys_ = [_rsa(os.urandom(20).hex()) for _ in range(3)]
    client = f"{uuid.uuid4().hex[:12]}.apps.googleusercontent.com"
    sub = str(int.from_bytes(os.urandom(9), "big"))
    return Provider(
        "Google", "https://accounts.google.com", keys_[1], [_public(k, use="sig") for k in keys_],
        {"issuer": "https://accounts.google.com", "audience": client},
        lambda now: {"iss": "https://accounts.google.com", "azp": client, "aud": client,
                     "sub": sub, "email": "u@example.org", "email_verified": True,
                     "nbf": now - 10, "iat": now, "exp": now + 3600, "jti": os.urandom(20).hex()},
        header={"typ": "JWT"}, cache_control="public, max-age=20000, must-revalidate", user=sub)


def firebase():
    """Firebase Auth ID token, keys from the JWKS form https://www.googleapis.com/
    service_accounts/v1/jwk/securetoken@system.gserviceaccount.com. iss
    https://securetoken.google.com/<project>, aud the bare project id, sub the uid
    (firebase/firebase-admin-node src/auth/token-verifier.ts)."""
    project = f"proj-{uuid.uuid4().hex[:8]}"
    keys_ = [_rsa(os.urandom(20).hex()) for _ in range(2)]
    issuer, uid = f"https://securetoken.google.com/{project}", _b64(os.urandom(21))
    return Provider(
        "Firebase", issuer, keys_[0], [_public(k, use="sig") for k in keys_],
        {"issuer": issuer, "audience": project},
        lambda now: {"iss": issuer, "aud": project, "auth_time": now, "user_id": uid,
                     "sub": uid, "iat": now, "exp": now + 3600, "email": "u@example.com",
                     "firebase": {"identities": {}, "sign_in_provider": "password"}},
        header={"typ": "JWT"}, cache_control="public, max-age=19000", user=uid)


def clerk():
    """Clerk session token v2. JWKS https://<frontend-api>/.well-known/jwks.json:
    use/kty/kid "ins_..."/alg/n/e. Header adds oiat (a number) and cat. No aud: azp is
    the origin; nbf = iat - skew; sub user_... (clerk/clerk-docs docs/guides/sessions/
    session-tokens.mdx; clerk-docs PR #3515)."""
    key = _rsa("ins_" + _b64(os.urandom(21))[:27])
    issuer, origin = f"https://clerk.s{uuid.uuid4().hex[:6]}.example", "https://app.example"
    user = "user_" + _b64(os.urandom(20))[:27]
    return Provider(
        "Clerk", issuer, key, [_public(key, use="sig")],
        {"issuer": issuer, "audience": origin, "audience_claim": "azp"},
        lambda now: {"azp": origin, "exp": now + 60, "fva": [7, -1], "iat": now,
                     "iss": issuer, "jti": _b64(os.urandom(10)), "nbf": now - 5,
                     "sid": "sess_x", "sub": user, "v": 2,
                     "o": {"id": "org_x", "slg": "acme", "rol": "admin"}},
        header={"cat": "cl_B7d4PD111AAA", "oiat": int(time.time()), "typ": "JWT"}, user=user)


def supabase():
    """Supabase Auth with asymmetric signing keys (ES256 default). JWKS https://<ref>.
    supabase.co/auth/v1/.well-known/jwks.json: alg/crv/ext/key_ops ["verify"]/kid (uuid)/
    kty/use/x/y, current plus standby key; the edge caches it 10 min (supabase signing-keys
    docs; supabase/auth internal/conf/jwk.go). aud "authenticated", no jti/nbf."""
    ref = uuid.uuid4().hex[:20]
    keys_ = [generate_key("ES256", kid=str(uuid.uuid4())) for _ in range(2)]
    issuer, sub = f"https://{ref}.supabase.example/auth/v1", str(uuid.uuid4())
    return Provider(
        "Supabase Auth", issuer, keys_[0],
        [_public(k, ext=True, key_ops=["verify"], use="sig") for k in keys_],
        {"issuer": issuer, "audience": "authenticated"},
        lambda now: {"aal": "aal1", "amr": [{"method": "password", "timestamp": now}],
                     "app_metadata": {"provider": "email"}, "aud": "authenticated",
                     "email": "u@example.com", "exp": now + 3600, "iat": now, "iss": issuer,
                     "phone": "", "role": "authenticated", "session_id": str(uuid.uuid4()),
                     "sub": sub, "user_metadata": {}, "is_anonymous": False},
        header={"typ": "JWT"}, cache_control="public, max-age=600", user=sub)


def okta():
    """Okta custom authorization server access token. JWKS https://{org}.okta.com/oauth2/
    {server}/v1/keys: kty/alg/kid/use/e/n, two or three keys; Cache-Control shortens
    near a rotation (developer.okta.com/docs/concepts/key-rotation). Header without typ;
    sub is the login (e-mail), uid the stable id, scp an array, jti "AT....". """
    org = f"https://dev-{uuid.uuid4().hex[:6]}.okta.example/oauth2/default"
    keys_ = [_rsa(_b64(os.urandom(32))) for _ in range(2)]
    uid = "00u" + uuid.uuid4().hex[:17]
    return Provider(
        "Okta", org, keys_[0], [_public(k, use="sig") for k in keys_],
        {"issuer": org, "audience": "api://default", "user_id_claim": "uid"},
        lambda now: {"ver": 1, "jti": "AT." + _b64(os.urandom(24)), "iss": org,
                     "aud": "api://default", "iat": now, "exp": now + 3600,
                     "cid": "0oa" + uuid.uuid4().hex[:17], "uid": uid, "scp": ["openid"],
                     "auth_time": now, "sub": "user@example.com", "groups": ["Everyone"]},
        header={}, cache_control="max-age=3600, must-revalidate", user=uid)


def zitadel():
    """ZITADEL with web keys: JWKS https://<instance>/oauth/v2/keys mixes RSA, EC and
    Ed25519 keys, kids are numeric strings, cacheable 5 min (zitadel.com/docs/guides/
    integrate/login/oidc/webkeys). JWT access token: aud an array of client and project
    ids, sub/jti numeric strings beyond 2^53 (zitadel docs apis/openidoauth/claims.md)."""
    instance = f"https://i{uuid.uuid4().hex[:6]}.zitadel.example"
    ids = [str(3 * 10**17 + int.from_bytes(os.urandom(6), "big")) for _ in range(3)]
    rsa = _rsa(ids[0])
    ed = generate_key("EdDSA", kid=ids[1])
    ec = generate_key("ES256", kid=ids[2])
    client, project = str(3 * 10**17 + 11), str(3 * 10**17 + 12)
    sub = str(3 * 10**17 + int.from_bytes(os.urandom(6), "big"))
    return Provider(
        "Zitadel", instance, ed, [_public(k, use="sig") for k in (rsa, ed, ec)],
        {"issuer": instance, "audience": project},
        lambda now: {"iss": instance, "sub": sub, "aud": [client, project], "azp": client,
                     "client_id": client, "exp": now + 3600, "iat": now, "nbf": now,
                     "jti": str(3 * 10**17 + 99),
                     "urn:zitadel:iam:user:resourceowner:id": "1"},
        header={"typ": "JWT"}, user=sub)


def workos():
    """WorkOS AuthKit session token. JWKS https://api.workos.com/sso/jwks/<client_id>:
    alg/kty/use/n/e/kid "sso_oidc_key_pair_<ULID>"/x5c/x5t#S256. No aud in session tokens;
    iss https://api.workos.com/user_management/<client_id>; sub user_<ULID>
    (workos.com/docs/reference/authkit/session-tokens). Nothing in the token names this
    application, so the recipe is allow_any_audience: the issuer URL is per client."""
    client = "client_" + _ulid()
    key = _rsa("sso_oidc_key_pair_" + _ulid())
    cert = _cert_members()
    issuer, user = f"https://api.workos.example/user_management/{client}", "user_" + _ulid()
    return Provider(
        "WorkOS", issuer, key, [_public(key, use="sig", x5c=cert["x5c"],
                                        **{"x5t#S256": cert["x5t#S256"]})],
        {"issuer": issuer, "allow_any_audience": True},
        lambda now: {"iss": issuer, "sub": user, "org_id": "org_" + _ulid(), "role": "member",
                     "sid": "session_" + _ulid(), "jti": _ulid(), "exp": now + 300, "iat": now},
        header={"typ": "JWT"}, user=user)


def neon_auth():
    """Neon Auth (Better Auth JWT plugin): JWKS <NEON_AUTH_URL>/.well-known/jwks.json with
    {alg EdDSA, crv Ed25519, x, kty OKP, kid} and no "use"; iss and aud are the origin of
    the auth URL (neondatabase/website content/docs/auth/guides/plugins/jwt.md)."""
    origin = f"https://ep-{uuid.uuid4().hex[:8]}.neon.example"
    keys_ = [generate_key("EdDSA", kid=_b64(os.urandom(24))) for _ in range(2)]
    sub = str(uuid.uuid4())
    return Provider(
        "Neon Auth", origin, keys_[0], [_public(k) for k in keys_],
        {"issuer": origin, "audience": origin},
        lambda now: {"iat": now, "name": "User", "email": "u@example.com",
                     "emailVerified": False, "image": None, "role": "authenticated",
                     "id": sub, "sub": sub, "exp": now + 900, "iss": origin, "aud": origin,
                     "o": {"id": str(uuid.uuid4()), "slug": "acme", "role": "owner"}},
        header={}, user=sub)


PROVIDERS = (auth0, keycloak, entra_v1, entra_v2, cognito_id, cognito_access, google,
             firebase, clerk, supabase, okta, zitadel, workos, neon_auth)
