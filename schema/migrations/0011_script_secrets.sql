-- Secret script variables: sent to hosts with the other script variables (a secret wins over
-- a plain variable of the same name) but never returned by the API, and kept out of the
-- history and the logs.
ALTER TABLE environs ADD COLUMN script_secrets jsonb NOT NULL DEFAULT '{}';
