-- Accounts and the refresh-token families that keep them signed in.

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    -- Normalised (trimmed, lower-cased) by the application before it gets here;
    -- the CHECK keeps a hand-written INSERT from creating a look-alike account.
    email         text NOT NULL CHECK (email = lower(btrim(email))),
    password_hash text NOT NULL,
    role          text NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_email_key UNIQUE (email)
);

-- One row per refresh token ever issued. Tokens descend from a login through
-- rotation; all descendants of one login share a family_id, so presenting an
-- already-rotated token (a sign of theft) can revoke the whole family.
CREATE TABLE refresh_tokens (
    jti         uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family_id   uuid NOT NULL,
    issued_at   timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    -- Set when this token was exchanged for a new pair.
    rotated_at  timestamptz,
    -- Set on logout or on detected reuse; a revoked token never works again.
    revoked_at  timestamptz
);

CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);
-- For pruning expired rows without a sequential scan.
CREATE INDEX refresh_tokens_expires_at_idx ON refresh_tokens (expires_at);
