-- Parts of one upload shared between replicas: a replica claims a part not yet stored with a lease
-- (renewed by its heartbeat), fetches it, stores it in the same S3 multipart upload and records it in
-- blob_upload_parts, deleting its claim in the same transaction. A claim whose lease ran out is taken
-- by the next replica that asks. The rows are made by the upload's holder for the parts still missing
-- when it starts (or resumes) a ranged download; a sequential download (a server without ranges) has none.
CREATE TABLE blob_part_claims (
    digest       text NOT NULL REFERENCES blob_uploads (digest) ON DELETE CASCADE,
    part_number  integer NOT NULL,
    worker       text,
    lease_until  timestamptz,
    PRIMARY KEY (digest, part_number)
);
CREATE INDEX blob_part_claims_worker ON blob_part_claims (worker) WHERE worker IS NOT NULL;

-- Which replica stored each part (operations, and the sharing tests).
ALTER TABLE blob_upload_parts ADD COLUMN worker text;
