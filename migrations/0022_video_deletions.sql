-- Videos deleted by their owner (`VideoDeleted`, the OpenAI-compatible DELETE /videos/{id};
-- docs/adr/0039-openai-compatible-videos-api.md): the row stays, with its final status, for
-- settlement and audit; the API's reads leave it out.
ALTER TABLE videos ADD COLUMN deleted_at timestamptz;

