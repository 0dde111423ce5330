-- Which PDF pages a job reads by OCR, chosen when the job is created
-- (POST /jobs "ocr"): `auto` pages without a usable text layer, `off` none
-- (images neither), `force` every page. A constant default: adding the
-- column rewrites no rows.
ALTER TABLE jobs
    ADD COLUMN ocr text NOT NULL DEFAULT 'auto'
        CONSTRAINT jobs_ocr_check CHECK (ocr IN ('auto', 'off', 'force'));
