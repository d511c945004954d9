-- create_with_idempotency_key.4_replayed_task: persistence/tasks.py, as compiled for psycopg
SELECT anon_1.user_id, anon_1.id, anon_1.title, anon_1.description, anon_1.completed, anon_1.priority, anon_1.tags, anon_1.due_date, anon_1.version, anon_1.created_at, anon_1.updated_at, anon_1.recurrence, anon_1.time_zone, anon_1.remind_at
FROM jsonb_populate_record(NULL::tasks, %(response)s) AS anon_1
