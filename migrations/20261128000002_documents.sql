-- Uploaded documents. The bytes live in object storage under storage_key,
-- which we derive from the owner and document ids (never from client input).

CREATE TABLE documents (
    id           uuid PRIMARY KEY,
    owner_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The client's filename, sanitised; metadata only.
    filename     text NOT NULL CHECK (length(filename) BETWEEN 1 AND 255),
    -- Detected from the content, not taken from the client.
    content_type text NOT NULL,
    size_bytes   bigint NOT NULL CHECK (size_bytes > 0),
    sha256       text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    storage_key  text NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Listing is per owner, newest first, with id as the tie-breaker so pages
-- are stable when two uploads share a timestamp.
CREATE INDEX documents_owner_created_idx ON documents (owner_id, created_at DESC, id DESC);
