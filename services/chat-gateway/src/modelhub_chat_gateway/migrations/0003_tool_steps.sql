-- The tools run while producing an answer (each call with its result), and action results: a message with
-- role 'action' is the output of one of the model's actions run on its parent answer.
ALTER TABLE messages ADD COLUMN tool_steps jsonb NOT NULL DEFAULT '[]';
ALTER TABLE messages ADD COLUMN action_id text NOT NULL DEFAULT '';
ALTER TABLE messages DROP CONSTRAINT IF EXISTS messages_role_check;
ALTER TABLE messages ADD CONSTRAINT messages_role_check CHECK (role IN ('user', 'assistant', 'action'));
