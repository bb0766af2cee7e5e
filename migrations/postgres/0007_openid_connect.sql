-- OpenID Connect for clients that ask for it. An OpenID request's `nonce` stays with the pending
-- request and its code (for the ID token); its `max_age`, `prompt=login` and `id_token_hint` become
-- which login may answer it (none older than `login_not_before`, only `login_subject`). The time
-- of the login and whether the upstream vouched for the email stay with the session and the grant
-- (`auth_time` and `email_verified` of ID tokens and UserInfo). Rows stored before have none of it.

ALTER TABLE pending_authorizations ADD COLUMN nonce TEXT
    CHECK (nonce IS NULL OR (purpose = 'authorize' AND length(nonce) BETWEEN 1 AND 512));
ALTER TABLE pending_authorizations ADD COLUMN login_not_before BIGINT
    CHECK (login_not_before IS NULL OR purpose = 'authorize');
ALTER TABLE pending_authorizations ADD COLUMN login_subject TEXT
    CHECK (login_subject IS NULL OR (purpose = 'authorize' AND login_subject <> ''));

ALTER TABLE authorization_codes ADD COLUMN nonce TEXT
    CHECK (nonce IS NULL OR length(nonce) BETWEEN 1 AND 512);

ALTER TABLE sessions ADD COLUMN email_verified BOOLEAN
    CHECK (email_verified IS NULL OR email IS NOT NULL);

ALTER TABLE grant_families ADD COLUMN email_verified BOOLEAN
    CHECK (email_verified IS NULL OR email IS NOT NULL);
-- No check against `created_at`: the login and the grant may be stamped by two instances whose
-- clocks differ by a second.
ALTER TABLE grant_families ADD COLUMN auth_time BIGINT;
