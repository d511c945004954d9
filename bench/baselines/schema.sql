-- The baselines' schema: the same columns, constraints and indexes as todo-api's migrations
-- (0001–0003, and the task fields of 0008), without row-level security, so that the database does the same work per write
-- and the comparison measures the application stacks.
CREATE TYPE task_priority AS ENUM ('low', 'medium', 'high', 'urgent');

CREATE FUNCTION lower_tags(tags text[]) RETURNS text[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN ARRAY(SELECT lower(tag) FROM unnest(tags) WITH ORDINALITY AS t(tag, n) ORDER BY n);

CREATE FUNCTION task_tags_valid(tags text[]) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN (SELECT coalesce(bool_and(char_length(tag) BETWEEN 1 AND 32 AND btrim(tag) <> ''), true)
        FROM unnest(tags) AS tag);

CREATE TABLE users (
    id text PRIMARY KEY,
    email text,
    name text,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tasks (
    user_id text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    id bigint GENERATED ALWAYS AS IDENTITY,
    title text NOT NULL CHECK (char_length(title) <= 255 AND btrim(title) <> ''),
    description text CHECK (char_length(description) <= 5000),
    completed boolean NOT NULL DEFAULT false,
    priority task_priority NOT NULL DEFAULT 'medium',
    tags text[] NOT NULL DEFAULT '{}' CHECK (cardinality(tags) <= 10 AND task_tags_valid(tags)),
    due_date timestamptz,
    recurrence text,
    time_zone text NOT NULL DEFAULT 'UTC',
    remind_at timestamptz,
    version integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, id)
);

CREATE INDEX ix_tasks_user_created ON tasks (user_id, created_at, id);
CREATE INDEX ix_tasks_user_updated ON tasks (user_id, updated_at, id);
CREATE INDEX ix_tasks_user_title ON tasks (user_id, title COLLATE "C", id);
CREATE INDEX ix_tasks_user_priority ON tasks (user_id, priority, id);
CREATE INDEX ix_tasks_user_due ON tasks (user_id, due_date, id);
CREATE INDEX ix_tasks_tags ON tasks USING gin (lower_tags(tags));
