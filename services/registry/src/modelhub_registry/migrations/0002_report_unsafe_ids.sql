-- Model and base-model ids with a '.' or '..' path segment, or a control character, are refused from now on:
-- they are unsafe in URLs, export file names and S3 keys. Rows stored before are kept (renaming would break
-- the model files built on them) and reported here, in the migration's output, so an admin can rename them.
DO $$
DECLARE
    offender record;
BEGIN
    FOR offender IN
        SELECT 'model file' AS kind, id FROM models
        UNION ALL
        SELECT 'base model', id FROM base_models
    LOOP
        IF offender.id ~ '(^|/)\.\.?(/|$)' OR offender.id ~ '[[:cntrl:]]' THEN
            RAISE WARNING 'the % id % breaks the id rule (a . or .. path segment, or a control character): rename it',
                offender.kind, quote_literal(offender.id);
        END IF;
    END LOOP;
END
$$;
