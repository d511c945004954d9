-- create_with_idempotency_key.2_insert_remembered: persistence/tasks.py, as compiled for psycopg
-- constants SQLAlchemy binds: param_1=1, task_count_1=1
WITH counted AS
(INSERT INTO users (id, email, name, task_count) VALUES (%(user_id)s::VARCHAR, %(email)s::VARCHAR, %(name)s::VARCHAR, %(param_1)s::INTEGER) ON CONFLICT (id) DO UPDATE SET task_count = (users.task_count + %(task_count_1)s::INTEGER) WHERE users.task_count < %(max_tasks)s::INTEGER RETURNING users.id),
created AS
(INSERT INTO tasks (user_id, description, priority, tag_keys, tags, title) SELECT counted.id AS id, CAST(%(description)s AS TEXT) AS anon_1, CAST(%(priority)s AS task_priority) AS anon_2, CAST(%(tag_keys)s AS TEXT[]) AS anon_3, CAST(%(tags)s AS TEXT[]) AS anon_4, CAST(%(title)s AS TEXT) AS anon_5
FROM counted RETURNING tasks.user_id, tasks.id, tasks.title, tasks.description, tasks.completed, tasks.priority, tasks.tags, tasks.due_date, tasks.version, tasks.created_at, tasks.updated_at, tasks.recurrence, tasks.time_zone, tasks.remind_at),
remember AS
(UPDATE idempotency_keys SET response=(SELECT to_jsonb(created) AS to_jsonb_1
FROM created) WHERE idempotency_keys.user_id = %(user_id)s::VARCHAR AND idempotency_keys.key = %(key)s::VARCHAR)
 SELECT created.user_id, created.id, created.title, created.description, created.completed, created.priority, created.tags, created.due_date, created.version, created.created_at, created.updated_at, created.recurrence, created.time_zone, created.remind_at
FROM created
