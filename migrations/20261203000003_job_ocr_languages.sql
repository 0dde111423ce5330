-- The languages a job's OCR reads (tesseract codes joined by '+'), chosen
-- when the job is created (POST /jobs "ocr_languages"); NULL reads with the
-- server's OCR_LANGUAGES. Checked against what the server has installed
-- before it is stored.
ALTER TABLE jobs ADD COLUMN ocr_languages text;
