-- Password sign-in: one argon2id hash per user, and the failures counted towards a lock-out.
CREATE TABLE user_passwords (
    user_id          text PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    password_hash    text NOT NULL,
    failed_attempts  integer NOT NULL DEFAULT 0,
    locked_until     timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
